"""The convert stage: recipe in, converted model and ``convert.pt`` out."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch import nn

import nascli.nas as mtn
from nascli.nas.config import MODES
from nascli.opt.checkpoint import build_checkpoint, write_checkpoint
from nascli.recipe.factory import build_model
from nascli.recipe.load import recipe_to_yaml
from nascli.recipe.schema import Recipe
from nascli.space.rules import merge_rules
from nascli.space.space import get_space
from nascli.stages.rundir import append_metrics


def convert_stage(recipe: Recipe) -> tuple[nn.Module, Path]:
    """Build the recipe's model, convert it, and write the run directory's ``convert.pt``."""
    start = time.perf_counter()
    torch.manual_seed(recipe.seed)
    model = build_model(recipe.model.factory, recipe.model.kwargs)
    rules = merge_rules(MODES[recipe.mode](), recipe.rules)
    mtn.convert(model, [(recipe.mode, rules)], dummy_input=torch.zeros(1, *recipe.input_shape))
    space = get_space(model)
    run_dir = Path(recipe.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "recipe.yaml").write_text(recipe_to_yaml(recipe))
    metrics = {"hparams": len(space.hparams), "space_size": float(space.size())}
    checkpoint = build_checkpoint(
        model,
        stage="convert",
        recipe=recipe.model_dump(mode="json"),
        factory=recipe.model.model_dump(mode="json"),
        metrics=metrics,
    )
    path = write_checkpoint(checkpoint, run_dir / "convert.pt")
    append_metrics(run_dir, {"stage": "convert", **metrics, "seconds": round(time.perf_counter() - start, 3)})
    return model, path
