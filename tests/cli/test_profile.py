import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nascli.cli.app import app

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    result = runner.invoke(app, ["-q", "convert", str(ROOT / "recipes/digits.yaml"), f"run_dir={run_dir}"])
    assert result.exit_code == 0
    return result.stdout.strip()


def test_profile_reads_the_checkpoint_from_stdin(checkpoint):
    result = runner.invoke(app, ["profile", "--flops", "60%"], input=checkpoint + "\n")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == checkpoint
    for text in ("Profiling Results", "MACs per sample", "Constraints Evaluation", "Number of configurable hparams"):
        assert text in result.stderr
    assert "all constraints can be satisfied" in result.stderr


def test_profile_json_and_unsatisfiable_exit_3(checkpoint):
    result = runner.invoke(app, ["-q", "profile", checkpoint, "--flops", "1%", "--params", "10M", "--json"])
    assert result.exit_code == 3
    payload = json.loads(result.stdout)
    assert payload["satisfied"] is False and payload["constraints"]["params"]["satisfiable"] is True
    assert payload["min"]["flops"] < payload["centroid"]["flops"] < payload["max"]["flops"]
    assert result.stderr.strip() == "error: flops cannot be met by any subnet of the search space"


@pytest.mark.parametrize("value", ["banana", "-3", "150%"])
def test_bad_constraint_values_exit_2(checkpoint, value):
    result = runner.invoke(app, ["profile", checkpoint, "--flops", value])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: constraint flops=")


def test_profile_of_a_recipe_writes_nothing(tmp_path):
    recipe = str(ROOT / "recipes/digits.yaml")
    assert runner.invoke(app, ["-q", "convert", recipe, f"run_dir={tmp_path}", "model.kwargs.width=8"]).exit_code == 0
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.iterdir()}
    result = runner.invoke(app, ["-q", "profile", recipe, f"run_dir={tmp_path}", "--params", "1G", "--device", "cpu"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == recipe
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.iterdir()} == before
    missing = tmp_path / "absent"
    assert runner.invoke(app, ["-q", "profile", recipe, f"run_dir={missing}"]).exit_code == 0
    assert not missing.exists()


def test_a_failed_constraint_prints_nothing_on_stdout(checkpoint):
    result = runner.invoke(app, ["-q", "profile", checkpoint, "--flops", "1"])
    assert result.exit_code == 3
    assert result.stdout == "" and result.stderr == "error: flops cannot be met by any subnet of the search space\n"


def test_no_input_is_a_clear_error():
    result = runner.invoke(app, ["profile"], input="")
    assert result.exit_code == 2 and "no input" in result.stderr


def test_latency_constraint_and_measured_rows(checkpoint):
    result = runner.invoke(app, ["profile", checkpoint, "--latency", "10s", "--json"])
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    assert 0 < payload["min"]["latency"] < 10 and set(payload["measured latency"]) == {"min", "centroid", "max"}
    assert "latency (measured, exported)" in result.stderr
    assert list(Path(os.environ["NASCLI_CACHE_DIR"]).glob("latency-cpu-*.json"))
    assert not list(Path(checkpoint).parent.glob("latency-*"))  # the input's directory may be read-only
    result = runner.invoke(app, ["-q", "profile", checkpoint, "--latency", "1us"])
    assert result.exit_code == 3 and "latency cannot be met" in result.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--latency", "15"], "expected a duration"),
        (["--device", "tpu"], "expected cpu or cuda"),
    ],
)
def test_bad_latency_arguments_exit_2(checkpoint, args, message):
    result = runner.invoke(app, ["profile", checkpoint, *args])
    assert result.exit_code == 2 and message in result.stderr
