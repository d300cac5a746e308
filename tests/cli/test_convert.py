import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import nascli.nas as mtn
import nascli.opt as mto
from nascli.cli.app import app
from nascli.models import resnet20

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def test_convert_digits_writes_the_run_directory(tmp_path):
    run_dir = tmp_path / "run"
    result = runner.invoke(app, ["convert", str(ROOT / "recipes/digits.yaml"), f"run_dir={run_dir}"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == str(run_dir / "convert.pt")
    assert "Number of configurable hparams: 14" in result.stderr
    assert {p.name for p in run_dir.iterdir()} == {"convert.pt", "recipe.yaml", "metrics.jsonl", ".lock"}
    record = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["stage"] == "convert" and record["hparams"] == 14

    restored = mto.restore(None, run_dir / "convert.pt")
    assert len(mtn.get_subnet_config(restored, configurable=True)) == 14
    same = mto.restore(lambda: resnet20(in_channels=1), run_dir / "convert.pt").eval()
    x = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(same(x), restored.eval()(x))


def test_convert_json_and_quiet(tmp_path):
    args = ["--quiet", "convert", str(ROOT / "recipes/digits.yaml"), f"run_dir={tmp_path}", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0
    payload = json.loads(result.stdout)
    assert payload["hparams"] == 14 and payload["checkpoint"].endswith("convert.pt")
    assert result.stderr == ""


@pytest.mark.slow
def test_convert_resnet50_recipe(tmp_path):
    result = runner.invoke(app, ["convert", str(ROOT / "recipes/resnet50.yaml"), f"run_dir={tmp_path}"])
    assert result.exit_code == 0, result.stderr
    assert "Number of configurable hparams: 40" in result.stderr
    assert "Total size of the search space: 1.90e+18" in result.stderr


@pytest.mark.parametrize(
    "text, message",
    [
        ("model: {factory: nascli.models:resnet20}\ninput_shape: [3, 8, 8]\nepochs: 3\n", "epochs: unknown key"),
        ("model: {factory: nascli.models:resnet20}\ninput_shape: three\n", "input_shape: Input should be a valid list"),
        ("model: {factory: nascli.models:nothing}\ninput_shape: [3, 8, 8]\n", "has no attribute 'nothing'"),
        ("model: {factory: nascli.models:resnet20\n", "invalid YAML at line 2"),
    ],
)
def test_bad_recipes_exit_2_with_one_line(tmp_path, text, message):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(text)
    result = runner.invoke(app, ["convert", str(recipe), f"run_dir={tmp_path / 'run'}"])
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert not (tmp_path / "run").exists()


def test_bad_override_and_missing_file_exit_2(tmp_path):
    result = runner.invoke(app, ["convert", str(ROOT / "recipes/digits.yaml"), "mode"])
    assert result.exit_code == 2 and "expected key=value" in result.stderr
    result = runner.invoke(app, ["convert", str(tmp_path / "none.yaml")])
    assert result.exit_code == 2 and "no such recipe file" in result.stderr


def test_the_installed_command_runs_without_traceback(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("model: {factory: nascli.models:resnet20}\ninput_shape: [3, 8, 8]\nepochs: 3\n")
    env = {**os.environ, "COLUMNS": "200"}
    done = subprocess.run(
        [sys.executable, "-m", "nascli", "convert", str(recipe)], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1
    done = subprocess.run(
        [sys.executable, "-m", "nascli", "convert", str(ROOT / "recipes/digits.yaml"), f"run_dir={tmp_path}/ok"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 0 and done.stdout == f"{tmp_path}/ok/convert.pt\n"


def test_convert_explain_lists_fixed_dimensions(tmp_path):
    result = runner.invoke(app, ["convert", str(ROOT / "recipes/digits.yaml"), f"run_dir={tmp_path}", "--explain"])
    assert result.exit_code == 0
    assert "Fixed dimensions and why" in result.stderr
    assert "conv1.in_channels (1)" in result.stderr and "model input" in result.stderr


def test_a_factory_that_prints_leaves_stdout_to_the_result(tmp_path, monkeypatch):
    (tmp_path / "nascli_test_chatty.py").write_text(
        "from nascli.models import resnet20\n\n"
        "def model(**kwargs):\n    print('building')\n    return resnet20(**kwargs)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    args = ["-q", "convert", str(ROOT / "recipes/digits.yaml"), f"run_dir={tmp_path / 'run'}"]
    result = runner.invoke(app, [*args, "model.factory=nascli_test_chatty:model"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"{tmp_path / 'run' / 'convert.pt'}\n"
    assert "building" in result.stderr
