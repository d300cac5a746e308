"""Open a stage's input: a recipe (converting it first) or a previous stage's checkpoint."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from torch import nn

from nascli.cost.record import space_from_record
from nascli.errors import CheckpointError, UserInputError
from nascli.opt.checkpoint import apply_checkpoint, read_checkpoint, untrusted_code
from nascli.recipe.load import apply_overrides, load_recipe, parse_overrides, validate_recipe
from nascli.recipe.schema import Recipe
from nascli.space.space import SearchSpace
from nascli.train.distributed import init_from_env

RECIPE_SUFFIXES = (".yaml", ".yml")

#: the stages whose checkpoint each command takes (a recipe is converted first where convert is one)
ACCEPTS = {
    "profile": ("convert", "train", "search"),
    "train": ("convert", "train"),
    "search": ("convert", "train", "search"),
    "finetune": ("search",),
    "export": ("search", "finetune"),
}

#: the recipe keys that, with the search space's choices, say which model a checkpoint holds;
#: the others (data, train, search, finetune, seed, run_dir) are settings a resume may change
IDENTITY_KEYS = ("model", "input_shape", "input_dtype", "mode", "rules")
_RECORDED_BEFORE = {"input_dtype": "float32"}  # identity keys that checkpoints of older versions lack


def is_recipe(path: Path) -> bool:
    return path.suffix.lower() in RECIPE_SUFFIXES


def load_stage_input(
    path: Path, overrides: list[str], command: str, on_meta: bool = False
) -> tuple[nn.Module, Path, dict[str, Any], Recipe]:
    """(model, checkpoint path, checkpoint, recipe) for a recipe (converted now) or a checkpoint.

    ``on_meta`` (a profile that times nothing) restores a checkpoint of a pretrained directory's
    model on the meta device: the search space and its costs without reading a weight.

    ``key=value`` overrides apply to the recipe file, or to the recipe a checkpoint recorded.
    The code a checkpoint's recipe names is called only when this user signed the checkpoint
    or names that code again in an override (see nascli.opt.trust). A checkpoint that
    ``command`` does not take, or an earlier stage's unfinished one, is refused.
    """
    if is_recipe(path):
        _refuse_recipe(path, command)
        path, checkpoint = _converted(load_recipe(path, overrides))
        overrides = []
    else:
        checkpoint = read_checkpoint(path)
    recipe = _checked_recipe(path, checkpoint, overrides, command)
    from nascli.stages.convert import recipe_model

    weights = command != "profile"  # a profile reads the search space only
    if weights and checkpoint.get("exported"):
        return _restored_export(path, checkpoint, recipe), path, checkpoint, recipe
    model = recipe_model(recipe, weights and checkpoint.get("weights") is not None, on_meta and not weights)
    return apply_checkpoint(model, checkpoint, path, weights), path, checkpoint, recipe


def _restored_export(path: Path, checkpoint: dict[str, Any], recipe: Recipe) -> nn.Module:
    """The plain subnet an exported checkpoint (finetune.pt) holds, restored without the original weights.

    The checkpoint holds every weight of the subnet, so a pretrained directory's model is built
    on the meta device, converted and exported there, and takes the checkpoint's memory-mapped
    tensors; the buffers no file holds (rotary frequencies) are computed from its config. Reading
    the original weights to overwrite them would cost their time and, at the peak, their memory
    beside the subnet's. Where a buffer cannot be matched by name the model is built whole.
    """
    from nascli.stages.convert import recipe_buffers, recipe_model

    model = apply_checkpoint(recipe_model(recipe, user_weights=False, on_meta=True), checkpoint, path)
    missing = {name for name, buffer in model.named_buffers() if buffer.is_meta}
    if missing:
        computed = recipe_buffers(recipe)
        if not missing <= computed.keys() or any(model.get_buffer(n).shape != computed[n].shape for n in missing):
            return apply_checkpoint(recipe_model(recipe, user_weights=False), checkpoint, path)
        for name in missing:
            owner, _, attr = name.rpartition(".")
            model.get_submodule(owner).register_buffer(attr, computed[name], persistent=False)
    return model


def recorded_space(path: Path, overrides: list[str]) -> tuple[SearchSpace, Recipe] | None:
    """(search space, recipe) of a checkpoint from its cost record, without building the model.

    For what only prices subnets (a profile that times nothing): the checkpoint is checked as
    ``load_stage_input`` checks it, but no code is called and no weight read. None where the
    model must be restored instead: a checkpoint without a record (an older version's), or
    overrides of the keys that say which model it is.
    """
    checkpoint = read_checkpoint(path)
    recipe = _checked_recipe(path, checkpoint, overrides, "profile")
    if any(key[0] in IDENTITY_KEYS for key, _ in parse_overrides(overrides)) or not checkpoint.get("costs"):
        return None
    space = space_from_record(checkpoint["costs"])
    return None if space is None else (space, recipe)


def check_stage_input(path: Path, overrides: list[str], command: str) -> Recipe:
    """Refuse what ``load_stage_input`` would refuse, without building or converting a model.

    For a launcher: ``train --nproc 2`` checks its input once here, so a bad one is one line
    rather than the same error from every process followed by torchrun's report.
    """
    if is_recipe(path):
        _refuse_recipe(path, command)
        return load_recipe(path, overrides)
    return _checked_recipe(path, read_checkpoint(path), overrides, command)


def _refuse_recipe(path: Path, command: str) -> None:
    if "convert" not in ACCEPTS[command]:
        raise UserInputError(f"{path}: a recipe; nascli {command} takes {_files(ACCEPTS[command])}")


def _checked_recipe(path: Path, checkpoint: dict[str, Any], overrides: list[str], command: str) -> Recipe:
    """The recipe of a checkpoint ``command`` may use, with ``overrides`` applied.

    Refused: a checkpoint without a recipe, one naming code this user neither signed nor
    named again, and one of a stage ``command`` does not take.
    """
    if not checkpoint.get("recipe") or not checkpoint["model"]:
        raise CheckpointError(f"{path}: records no recipe (saved from Python?); restore it with nascli.opt.restore")
    named = frozenset(".".join(key) for key, _ in parse_overrides(overrides))
    if untrusted := untrusted_code(checkpoint, named):
        raise CheckpointError(
            f"{path}: was not written by this user on this machine, so nascli will not call the code it names;"
            f" if you trust it, name it on the command line: {untrusted}"
        )
    check_stage(path, checkpoint, command)
    return validate_recipe(apply_overrides(copy.deepcopy(checkpoint["recipe"]), overrides), f"{path} recipe")


def _converted(recipe: Recipe) -> tuple[Path, dict[str, Any]]:
    """Convert a recipe into its run directory's ``convert.pt``: (its path, its contents).

    Under torchrun only rank 0 writes (and takes the run directory's lock); the other ranks
    convert the same recipe in memory, as they would otherwise contend for the lock.
    """
    from nascli.stages.convert import convert_checkpoint, convert_stage, converted_model

    if init_from_env().main:
        _, path = convert_stage(recipe)
        return path, read_checkpoint(path)
    return Path(recipe.run_dir) / "convert.pt", convert_checkpoint(converted_model(recipe), recipe)


def check_stage(path: Path, checkpoint: dict[str, Any], command: str) -> None:
    """Refuse a checkpoint ``command`` does not take, and one an earlier stage did not finish.

    Profiling reads only the search space, so it takes an unfinished checkpoint as it is.
    """
    stage, accepted = checkpoint["stage"], ACCEPTS[command]
    if stage not in accepted:
        raise UserInputError(f"{path}: a {stage} checkpoint; nascli {command} takes {_files(accepted)}")
    if checkpoint.get("trainer") is not None and stage != command and command != "profile":
        raise UserInputError(f"{path}: {stage} unfinished: nascli {stage} --resume")


def _files(stages: tuple[str, ...]) -> str:
    return " or ".join(f"{stage}.pt" for stage in stages)


def load_resumable(
    path: Path, overrides: list[str], stage: str
) -> tuple[nn.Module, Path, dict[str, Any], Recipe, dict[str, Any] | None]:
    """Like ``load_stage_input``, preferring the run directory's ``<stage>.pt`` to continue from.

    Returns its unfinished state too (None when that stage's checkpoint is finished or absent).
    That ``<stage>.pt`` must hold the input's model (see ``IDENTITY_KEYS``), else it is stale,
    left by another model that ran in this directory, and is refused.
    """
    model, path, checkpoint, recipe = load_stage_input(path, overrides, stage)
    latest = Path(recipe.run_dir) / f"{stage}.pt"
    if checkpoint["stage"] != stage and latest.is_file():
        given = checkpoint
        model, path, checkpoint, recipe = load_stage_input(latest, overrides, stage)
        if differ := identity_differences(given, checkpoint):
            raise UserInputError(
                f"--resume: {latest} holds another model than the input ({', '.join(differ)} differ);"
                f" remove it or give another run_dir"
            )
    state = checkpoint.get("trainer") if checkpoint["stage"] == stage else None
    return model, path, checkpoint, recipe, state


def identity_differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """The recipe keys (and "search space") in which two checkpoints' models differ."""
    x, y = ({**_RECORDED_BEFORE, **c["recipe"]} for c in (a, b))
    differ = [key for key in IDENTITY_KEYS if x.get(key) != y.get(key)]
    choices = [{name: list(spec["choices"]) for name, spec in c["space"].items()} for c in (a, b)]
    return differ + (["search space"] if choices[0] != choices[1] else [])
