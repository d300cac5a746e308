"""Run directories made quickly for the stage and CLI tests."""

from pathlib import Path

from typer.testing import CliRunner

from nascli.cli.app import app
from nascli.opt.checkpoint import read_checkpoint, write_checkpoint

ROOT = Path(__file__).resolve().parents[2]
RECIPE = str(ROOT / "recipes/digits.yaml")


def convert(run_dir: Path | str, *overrides: str) -> Path:
    """A small digits model converted into ``run_dir``; the path of its convert.pt."""
    args = ["-q", "convert", RECIPE, f"run_dir={run_dir}", "model.kwargs.width=8", *overrides]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.stderr
    return Path(result.stdout.strip())


def as_stage(source: Path, target: Path, stage: str, trainer: dict | None = None) -> Path:
    """``source`` relabelled as another stage's checkpoint (with a valid checksum)."""
    return write_checkpoint({**read_checkpoint(source), "stage": stage, "trainer": trainer}, target)
