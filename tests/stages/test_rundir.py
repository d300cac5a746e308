"""One writer per run directory; a killed writer leaves nothing that outlives it."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nascli.cli.app import app
from nascli.errors import UserInputError
from nascli.stages.rundir import run_dir_lock

ROOT = Path(__file__).resolve().parents[2]
RECIPE = str(ROOT / "recipes/digits.yaml")
SMALL = ["model.kwargs.width=8", "train.num_random=1", "train.bn_calib_batches=2"]
runner = CliRunner()

HOLDER = """
import sys, time
from nascli.stages.rundir import run_dir_lock
with run_dir_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(120)
"""


@pytest.fixture
def holder(tmp_path):
    """Another process holding ``tmp_path`` locked, as a running stage would."""
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    yield process
    process.kill()
    process.wait()
    process.stdout.close()


def test_a_second_writer_is_refused_naming_the_holder(tmp_path, holder):
    result = runner.invoke(app, ["-q", "convert", RECIPE, f"run_dir={tmp_path}", *SMALL])
    assert result.exit_code == 2
    assert result.stderr == f"error: {tmp_path}: in use by another nascli run (pid {holder.pid}); " + (
        "wait for it to end or use another run_dir\n"
    )
    assert result.stdout == "" and not (tmp_path / "convert.pt").exists()


def test_a_lock_left_by_a_killed_process_does_not_block(tmp_path, holder):
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    result = runner.invoke(app, ["-q", "convert", RECIPE, f"run_dir={tmp_path}", *SMALL])
    assert result.exit_code == 0, result.stderr


def test_nested_holders_in_one_process_share_the_lock(tmp_path):
    with run_dir_lock(tmp_path), run_dir_lock(tmp_path):
        pass
    with run_dir_lock(tmp_path):  # released: it can be taken again
        pass


def test_the_lock_is_exclusive_between_open_files(tmp_path):
    import fcntl

    with open(tmp_path / ".lock", "a+") as other:
        fcntl.flock(other.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(UserInputError, match="in use by another nascli run"):
            with run_dir_lock(tmp_path):
                pass


def test_temp_files_of_a_killed_writer_are_removed_under_the_lock(tmp_path):
    stale = [tmp_path / ".train.pt.k3j_x9a1.tmp", tmp_path / ".search.pt.0f3a9c1d.tmp"]
    kept = [tmp_path / "notes.tmp", tmp_path / "train.pt.bak"]
    for path in stale + kept:
        path.write_bytes(b"partial")
    half_pinned = tmp_path / ".tokenizer.5e6f7a8b.tmp"  # a tokenizer folder whose writer was killed
    half_pinned.mkdir()
    (half_pinned / "tokenizer.json").write_text("{")
    result = runner.invoke(app, ["-q", "convert", RECIPE, f"run_dir={tmp_path}", *SMALL])
    assert result.exit_code == 0, result.stderr
    assert not any(p.exists() for p in [*stale, half_pinned]) and all(p.exists() for p in kept)


def test_recipe_yaml_is_rewritten_only_when_the_stage_succeeds(tmp_path, monkeypatch):
    from nascli.train.trainer import SupernetTrainer

    convert = runner.invoke(app, ["-q", "convert", RECIPE, f"run_dir={tmp_path}", *SMALL])
    assert convert.exit_code == 0, convert.stderr
    before = (tmp_path / "recipe.yaml").read_text()

    def crash(self, save, log):
        raise RuntimeError("killed mid-training")

    monkeypatch.setattr(SupernetTrainer, "fit", crash)
    result = runner.invoke(app, ["-q", "train", "train.epochs=7"], input=convert.stdout)
    assert result.exit_code == 1 and "killed mid-training" in result.stderr
    assert (tmp_path / "recipe.yaml").read_text() == before
    assert [p.name for p in tmp_path.glob(".*.tmp")] == []


def test_a_failed_stage_removes_the_run_directory_it_made(tmp_path):
    run_dir = tmp_path / "new"
    result = runner.invoke(app, ["-q", "convert", RECIPE, f"run_dir={run_dir}", "model.kwargs.num_classes=-1"])
    assert result.exit_code != 0
    assert not run_dir.exists()


def test_a_failed_stage_keeps_a_run_directory_it_did_not_make(tmp_path):
    result = runner.invoke(app, ["-q", "convert", RECIPE, f"run_dir={tmp_path}", "model.kwargs.num_classes=-1"])
    assert result.exit_code != 0
    assert tmp_path.is_dir()
