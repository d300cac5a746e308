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
