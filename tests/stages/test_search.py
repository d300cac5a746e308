"""An interrupted search resumes under the constraints it was started with."""

import json

import pytest
from typer.testing import CliRunner

import nascli.stages.search as search_module
from nascli.cli.app import app
from nascli.opt.checkpoint import read_checkpoint
from tests.stages.common import as_stage, convert

SMALL = ["search.population=4", "search.parents=2", "search.iterations=3", "search.bn_calib_batches=1"]
runner = CliRunner()


@pytest.fixture
def interrupted(tmp_path, monkeypatch):
    """A run directory whose search was killed after its first iteration, under --flops 60%."""
    trained = as_stage(convert(tmp_path), tmp_path / "train.pt", "train")
    write = search_module.write_checkpoint
    calls = []

    def write_then_die(checkpoint, path):
        calls.append(path)
        if len(calls) == 2:
            raise RuntimeError("killed")
        return write(checkpoint, path)

    monkeypatch.setattr(search_module, "write_checkpoint", write_then_die)
    killed = runner.invoke(app, ["-q", "search", str(trained), "--flops", "60%", *SMALL])
    assert killed.exit_code == 1 and "killed" in killed.stderr
    assert read_checkpoint(tmp_path / "search.pt")["trainer"]["iteration"] == 1
    monkeypatch.setattr(search_module, "write_checkpoint", write)
    return trained


def test_resume_without_the_constraint_keeps_it(interrupted):
    result = runner.invoke(app, ["-q", "search", str(interrupted), "--resume"])
    assert result.exit_code == 0, result.stderr
    report = json.loads((interrupted.parent / "search.json").read_text())
    assert report["constraints"]["flops"] == pytest.approx(0.6 * report["original"]["flops"])
    assert report["best"]["flops"] <= report["constraints"]["flops"]


@pytest.mark.parametrize("args", [["--flops", "60%"], ["--flops", "0.6e2%"]])
def test_resume_with_the_same_constraint_is_fine(interrupted, args):
    assert runner.invoke(app, ["-q", "search", str(interrupted), "--resume", *args]).exit_code == 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["--flops", "40%"], "constraint flops=40%: the unfinished search ran with flops=60%"),
        (["--params", "1M"], "constraint params=1M: the unfinished search ran with no params bound"),
    ],
)
def test_resume_with_another_constraint_is_refused(interrupted, args, message):
    before = (interrupted.parent / "search.pt").read_bytes()
    result = runner.invoke(app, ["search", str(interrupted), "--resume", *args])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {message}; resume without it") and result.stderr.count("\n") == 1
    assert (interrupted.parent / "search.pt").read_bytes() == before
