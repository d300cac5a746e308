"""What every command shares: exit codes under --debug, the path read from stdin."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from nascli.cli.app import app

ROOT = Path(__file__).resolve().parents[2]
RECIPE = str(ROOT / "recipes/digits.yaml")
runner = CliRunner()


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("common")
    result = runner.invoke(app, ["-q", "convert", RECIPE, f"run_dir={run_dir}", "model.kwargs.width=8"])
    assert result.exit_code == 0, result.stderr
    return result.stdout.strip()


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["convert", "absent.yaml"], 2, "error: absent.yaml: no such recipe file"),
        (["profile", "{converted}", "--flops", "1%"], 3, "error: flops cannot be met"),
    ],
)
def test_debug_adds_the_traceback_and_keeps_the_exit_code(converted, args, code, message):
    args = [a.format(converted=converted) for a in args]
    plain = runner.invoke(app, ["-q", *args])
    debug = runner.invoke(app, ["-q", "--debug", *args])
    assert plain.exit_code == debug.exit_code == code
    assert "Traceback" not in plain.stderr and plain.stderr.strip().startswith(message)
    assert "Traceback (most recent call last)" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1].startswith(message)


def test_a_piped_path_keeps_its_leading_space(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    convert = runner.invoke(app, ["-q", "convert", RECIPE, "run_dir=' lead'", "model.kwargs.width=8"])
    assert convert.exit_code == 0, convert.stderr
    assert convert.stdout == " lead/convert.pt\n"
    profile = runner.invoke(app, ["-q", "profile"], input=convert.stdout)
    assert profile.exit_code == 0, profile.stderr
    assert profile.stdout == " lead/convert.pt\n"
