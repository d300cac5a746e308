"""Open a stage's input: a recipe (converting it first) or a previous stage's checkpoint."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from torch import nn

from nascli.errors import CheckpointError
from nascli.opt.checkpoint import apply_checkpoint, read_checkpoint, untrusted_code
from nascli.recipe.factory import build_model
from nascli.recipe.load import apply_overrides, load_recipe, parse_overrides, validate_recipe
from nascli.recipe.schema import Recipe

RECIPE_SUFFIXES = (".yaml", ".yml")


def is_recipe(path: Path) -> bool:
    return path.suffix.lower() in RECIPE_SUFFIXES


def load_stage_input(path: Path, overrides: list[str]) -> tuple[nn.Module, Path, dict[str, Any], Recipe]:
    """(model, checkpoint path, checkpoint, recipe) for a recipe (converted now) or a checkpoint.

    ``key=value`` overrides apply to the recipe file, or to the recipe a checkpoint recorded.
    The code a checkpoint's recipe names is called only when this user signed the checkpoint
    or names that code again in an override (see nascli.opt.trust).
    """
    if is_recipe(path):
        from nascli.stages.convert import convert_stage

        _, path = convert_stage(load_recipe(path, overrides))
        overrides = []
    checkpoint = read_checkpoint(path)
    if not checkpoint.get("recipe") or not checkpoint["model"]:
        raise CheckpointError(f"{path}: records no recipe (saved from Python?); restore it with nascli.opt.restore")
    named = frozenset(".".join(key) for key, _ in parse_overrides(overrides))
    if untrusted := untrusted_code(checkpoint, named):
        raise CheckpointError(
            f"{path}: was not written by this user on this machine, so nascli will not call the code it names;"
            f" if you trust it, name it on the command line: {untrusted}"
        )
    recipe = validate_recipe(apply_overrides(copy.deepcopy(checkpoint["recipe"]), overrides), f"{path} recipe")
    model = build_model(recipe.model.factory, recipe.model.kwargs)
    return apply_checkpoint(model, checkpoint, path), path, checkpoint, recipe


def load_resumable(
    path: Path, overrides: list[str], stage: str
) -> tuple[nn.Module, Path, dict[str, Any], Recipe, dict[str, Any] | None]:
    """Like ``load_stage_input``, preferring the run directory's ``<stage>.pt`` to continue from.

    Returns its unfinished state too (None when that stage's checkpoint is finished or absent).
    """
    model, path, checkpoint, recipe = load_stage_input(path, overrides)
    latest = Path(recipe.run_dir) / f"{stage}.pt"
    if checkpoint["stage"] != stage and latest.is_file():
        model, path, checkpoint, recipe = load_stage_input(latest, overrides)
    state = checkpoint.get("trainer") if checkpoint["stage"] == stage else None
    return model, path, checkpoint, recipe, state
