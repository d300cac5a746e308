"""``nascli convert RECIPE [key=value ...]``: build the model and write its search space."""

from __future__ import annotations

from pathlib import Path

import typer

from nascli.cli.common import handle_errors, info, result
from nascli.recipe.load import load_recipe
from nascli.space.space import get_space


@handle_errors
def convert(
    recipe: Path = typer.Argument(..., help="Recipe YAML file."),
    overrides: list[str] = typer.Argument(None, help="Recipe overrides as key=value (e.g. run_dir=runs/x)."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON result on stdout instead of the path."),
    explain: bool = typer.Option(False, "--explain", help="Also list each fixed dimension and why it is fixed."),
) -> None:
    """Convert the recipe's model into a search space and write RUN_DIR/convert.pt."""
    from nascli.stages.convert import convert_stage

    resolved = load_recipe(recipe, overrides or [])
    model, path = convert_stage(resolved)
    space = get_space(model)
    info(space.summary(verbose=explain))
    result(path, {"hparams": len(space.hparams), "space_size": float(space.size())}, json_out)
