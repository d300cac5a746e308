"""The convert stage: recipe in, converted model and ``convert.pt`` out."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

import nascli.nas as mtn
from nascli.data import check_tokenizer_fits
from nascli.errors import UserInputError
from nascli.nas.config import MODES
from nascli.opt.checkpoint import (
    build_checkpoint,
    load_failure,
    load_plain_data,
    mark_source_weights,
    write_checkpoint,
)
from nascli.recipe.factory import build_model
from nascli.recipe.schema import Recipe
from nascli.space.importance import sort_channels_by_importance
from nascli.space.rules import merge_rules
from nascli.space.space import example_inputs, get_space, on_meta_device, parameter_device
from nascli.stages.rundir import append_metrics, run_dir_lock, write_recipe


def recipe_model(recipe: Recipe, user_weights: bool = True, on_meta: bool = False) -> nn.Module:
    """The recipe's model as built, in ``model.dtype``, with ``model.checkpoint``'s weights when
    ``user_weights``; the fingerprint of these weights is kept on it (checkpoints that leave them
    unchanged store it instead of the weights: nascli/opt/checkpoint.py).

    ``on_meta`` (for what reads only shapes) builds a pretrained directory's model on the meta
    device without reading its weights; other factories are called as they are.
    """
    torch.manual_seed(recipe.seed)
    if on_meta and recipe.model.factory == "nascli.hf:from_pretrained":
        from nascli.hf import pretrained_on_meta

        model = build_model(pretrained_on_meta, recipe.model.kwargs)
    else:
        model = build_model(recipe.model.factory, recipe.model.kwargs)
    if recipe.model.dtype != "auto":
        model.to(getattr(torch, recipe.model.dtype))
    if user_weights and recipe.model.checkpoint:
        load_user_weights(model, Path(recipe.model.checkpoint))
    return model


def recipe_buffers(recipe: Recipe) -> dict[str, torch.Tensor]:
    """The non-persistent buffers of the recipe's model, by name, where they can be had without its
    weights (a pretrained directory's: nascli.hf.pretrained_buffers); empty otherwise."""
    if recipe.model.factory != "nascli.hf:from_pretrained":
        return {}
    from nascli.hf import pretrained_buffers

    buffers = pretrained_buffers(**recipe.model.kwargs)  # the kwargs that built the model itself
    if recipe.model.dtype == "auto":
        return buffers
    dtype = getattr(torch, recipe.model.dtype)  # as recipe_model casts the model's floating buffers
    return {name: b.to(dtype) if b.is_floating_point() else b for name, b in buffers.items()}


#: factories whose weights are read from files the recipe names (``model.kwargs.path``)
FILE_FACTORIES = ("nascli.hf:from_pretrained",)


def weights_from_files(recipe: Recipe) -> bool:
    """Whether the recipe's weights come from files (a pretrained directory, ``model.checkpoint``).

    Only those are referenced by fingerprint instead of stored by the stages that leave them
    unchanged: a randomly initialized model is rebuilt the same only by the same seed and code,
    and ``nascli.opt.restore`` into a model a user builds must find its weights in the file.
    """
    return recipe.model.checkpoint is not None or recipe.model.factory in FILE_FACTORIES


def converted_model(recipe: Recipe) -> nn.Module:
    """The recipe's model, built and converted in memory (``profile`` of a recipe writes nothing)."""
    model = recipe_model(recipe)
    meta = on_meta_device(model)  # a directory without weights: shapes only, nothing to fingerprint or rank
    if weights_from_files(recipe) and not meta:
        mark_source_weights(model)
    rules = merge_rules(MODES[recipe.mode](), recipe.rules)
    dummy = example_inputs([[1, *recipe.input_shape]], [recipe.input_dtype], device=parameter_device(model))
    mtn.convert(model, [(recipe.mode, rules)], dummy_input=dummy)
    if recipe.mode == "fastnas" and not meta:
        sort_channels_by_importance(model)
    return model


def convert_checkpoint(model: nn.Module, recipe: Recipe) -> dict[str, Any]:
    """The ``convert.pt`` contents of a model ``converted_model`` made from ``recipe``."""
    space = get_space(model)
    return build_checkpoint(
        model,
        stage="convert",
        recipe=recipe.model_dump(mode="json"),
        factory=recipe.model.model_dump(mode="json"),
        metrics={"hparams": len(space.hparams), "space_size": float(space.size())},
        reference_weights=True,
    )


def load_user_weights(model: nn.Module, path: Path) -> None:
    """Load a user's trained weights: a state_dict, or a dict holding one under "state_dict" or "model"."""
    if not path.is_file():
        raise UserInputError(f"model.checkpoint: no such file {path}")
    try:
        data = load_plain_data(path)
    except Exception as exc:
        raise UserInputError(f"model.checkpoint: {path} is not a readable weights file ({load_failure(exc)})") from exc
    if isinstance(data, dict) and isinstance(data.get("state_dict", data.get("model")), dict):
        data = data.get("state_dict", data.get("model"))
    if not isinstance(data, dict):
        raise UserInputError(f"model.checkpoint: {path} holds no state_dict")
    try:
        result = model.load_state_dict(data, strict=False)
    except RuntimeError as exc:  # shape mismatches
        detail = " ".join(str(exc).split())[:300]
        raise UserInputError(f"model.checkpoint: {path} does not fit the model ({detail})") from exc
    problems = [f"missing {', '.join(result.missing_keys[:3])}"] if result.missing_keys else []
    problems += [f"unexpected {', '.join(result.unexpected_keys[:3])}"] if result.unexpected_keys else []
    if problems:
        raise UserInputError(f"model.checkpoint: {path} does not fit the model ({'; '.join(problems)})")


def convert_stage(recipe: Recipe) -> tuple[nn.Module, Path]:
    """Build the recipe's model, convert it, and write the run directory's ``convert.pt``."""
    with run_dir_lock(recipe.run_dir):
        return _convert(recipe)


def _convert(recipe: Recipe) -> tuple[nn.Module, Path]:
    start = time.perf_counter()
    model = converted_model(recipe)
    check_tokenizer_fits(recipe, model)
    run_dir = Path(recipe.run_dir)
    checkpoint = convert_checkpoint(model, recipe)
    metrics = checkpoint["metrics"]
    path = write_checkpoint(checkpoint, run_dir / "convert.pt")
    append_metrics(run_dir, {"stage": "convert", **metrics, "seconds": round(time.perf_counter() - start, 3)})
    write_recipe(recipe)
    return model, path
