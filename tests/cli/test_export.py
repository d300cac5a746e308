import os

from typer.testing import CliRunner

from nascli.cli.app import app
from tests.stages.common import as_stage, convert

runner = CliRunner()


def test_export_writes_next_to_its_input_whatever_the_cwd(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    search = as_stage(convert("runs/d"), tmp_path / "a/runs/d/search.pt", "search")
    monkeypatch.chdir(tmp_path / "b")
    result = runner.invoke(app, ["-q", "export", str(search), "--format", "torchscript"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"{tmp_path}/a/runs/d/model.ts\n"
    assert (tmp_path / "a/runs/d/model.ts").is_file() and not list((tmp_path / "b").iterdir())


def test_export_holds_the_run_directory_and_removes_a_killed_exports_temp_file(tmp_path):
    search = as_stage(convert(tmp_path), tmp_path / "search.pt", "search")
    stale = tmp_path / ".model.ts.0a1b2c3d.tmp"
    stale.write_bytes(b"partial")
    result = runner.invoke(app, ["-q", "export", str(search), "--format", "torchscript"])
    assert result.exit_code == 0, result.stderr
    assert not stale.exists() and (tmp_path / "model.ts").is_file()
    assert int((tmp_path / ".lock").read_text()) == os.getpid()
