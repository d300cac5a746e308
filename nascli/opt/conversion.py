"""A model's conversion state without its weights, as ModelOpt's ``modelopt_state`` carries it.

ModelOpt scripts save ``mto.modelopt_state(model)`` next to ``model.state_dict()`` and later
rebuild with ``mto.restore_from_modelopt_state(model, state)`` plus ``load_state_dict``. The
state here is nascli's checkpoint minus the weights, under ModelOpt's two top-level keys
(``modelopt_state_dict``: the recorded modes, ``modelopt_version``), so the same calls work.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO, Any

import torch
from torch import nn

from nascli.errors import CheckpointError, UserInputTypeError
from nascli.opt.checkpoint import build_checkpoint, load_failure, replay_conversion
from nascli.space.space import is_converted

REQUIRED_KEY = "modelopt_state_dict"
_KEPT = ("input_shapes", "input_dtypes", "space", "subnet", "sorted_by", "block_ranks", "exported")


def modelopt_state(model: nn.Module) -> dict[str, Any]:
    """The conversion state of ``model`` (its modes, search space and active subnet), no weights.

    Plain data only, so ``torch.save`` of it loads with ``weights_only=True``. A module inside a
    converted model has no state of its own; pass the module that was converted.
    """
    if not is_converted(model) and any(is_converted(m) for m in model.modules()):
        converted = next(name for name, m in model.named_modules() if is_converted(m))
        raise CheckpointError(f"modelopt_state: {converted!r} was converted, not this model; pass that module")
    checkpoint = build_checkpoint(model)
    state = {key: checkpoint[key] for key in _KEPT if key in checkpoint}
    return {REQUIRED_KEY: checkpoint["modes"], "modelopt_version": checkpoint["nascli_version"], **state}


def restore_from_modelopt_state(model: nn.Module, modelopt_state: dict[str, Any]) -> nn.Module:
    """Convert the original ``model`` as ``modelopt_state`` records and select its subnet.

    The weights are not touched: load them afterwards with ``model.load_state_dict``. A state
    of an exported model gives back the exported model (a new module), so use the return value.
    """
    checked = _checked(modelopt_state, "modelopt_state")
    checkpoint = {key: checked.get(key) for key in _KEPT}
    checkpoint["modes"] = checked[REQUIRED_KEY]
    checkpoint["input_shapes"] = checkpoint["input_shapes"] or []
    checkpoint["space"] = checkpoint["space"] or {}
    return replay_conversion(model, checkpoint, "modelopt_state")


def load_modelopt_state(path: str | os.PathLike | IO[bytes]) -> dict[str, Any]:
    """Read a state that ``torch.save(mto.modelopt_state(model), path)`` wrote (weights_only)."""
    where = str(getattr(path, "name", path))
    if not hasattr(path, "read") and not Path(path).is_file():
        raise CheckpointError(f"{where}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{where}: not a readable state file ({load_failure(exc)})") from exc
    return _checked(state, where)


def _checked(state: Any, where: str) -> dict[str, Any]:
    if not isinstance(state, dict):
        raise UserInputTypeError(f"{where}: expected a dict from mto.modelopt_state, got {type(state).__name__}")
    if REQUIRED_KEY not in state:
        if "state_dict" in state or "model_state_dict" in state:
            raise CheckpointError(f"{where}: is a full checkpoint (weights included); restore it with mto.restore")
        raise CheckpointError(f"{where}: missing required key {REQUIRED_KEY!r}; write it with mto.modelopt_state")
    if not isinstance(state[REQUIRED_KEY], list):
        raise CheckpointError(f"{where}: {REQUIRED_KEY!r} must be the list of recorded modes")
    return state
