"""Open a stage's input: a recipe (converting it first) or a previous stage's checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from nascli.errors import CheckpointError
from nascli.opt.checkpoint import apply_checkpoint, read_checkpoint
from nascli.recipe.factory import build_model
from nascli.recipe.load import load_recipe

RECIPE_SUFFIXES = (".yaml", ".yml")


def is_recipe(path: Path) -> bool:
    return path.suffix.lower() in RECIPE_SUFFIXES


def load_stage_input(path: Path, overrides: list[str]) -> tuple[nn.Module, Path, dict[str, Any]]:
    """(model, checkpoint path, checkpoint) for a recipe (converted now) or a checkpoint."""
    if is_recipe(path):
        from nascli.stages.convert import convert_stage

        _, path = convert_stage(load_recipe(path, overrides))
    elif overrides:
        raise CheckpointError(f"{path}: key=value overrides apply to recipes, not to checkpoints")
    checkpoint = read_checkpoint(path)
    spec = checkpoint["model"]
    if not spec or "factory" not in spec:
        raise CheckpointError(f"{path}: records no model factory (saved from Python?); restore it with nascli.opt")
    model = build_model(spec["factory"], spec.get("kwargs"))
    return apply_checkpoint(model, checkpoint, path), path, checkpoint
