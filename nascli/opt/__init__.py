"""Public save/restore API, call for call like ``modelopt.torch.opt``: ``import nascli.opt as mto``."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from torch import nn

from nascli.errors import CheckpointError, UserInputError
from nascli.opt.checkpoint import (
    apply_checkpoint,
    build_checkpoint,
    read_checkpoint,
    recorded_model,
    untrusted_code,
    write_checkpoint,
)
from nascli.opt.conversion import load_modelopt_state, modelopt_state, restore_from_modelopt_state
from nascli.recipe.factory import build_model

__all__ = ["apply_mode", "load_modelopt_state", "modelopt_state", "restore", "restore_from_modelopt_state", "save"]


def apply_mode(
    model: nn.Module | Callable[[], nn.Module] | str | tuple,
    mode: Any,
    registry: Any = None,
    init_state: bool | None = None,
    mode_kwargs: dict[str, Any] | list[dict[str, Any]] | None = None,
) -> nn.Module:
    """Apply a mode (``"autonas"``, ``("fastnas", config)``, ``"export_nas"`` or a list) to a model.

    ModelOpt's generic entry point; for nascli's modes it is ``nascli.nas.convert``, and
    ``"export_nas"`` alone exports a converted model. ``init_state`` says whether the model
    must start a conversion state (True: it must not be converted yet) or extend the one it
    holds (False: it must be converted); None infers it. nascli has one registry of modes, so
    ``registry`` must be None; ``mode_kwargs`` (per-mode keyword arguments that are not
    recorded) must be empty, as no nascli mode takes any.
    """
    from nascli.nas import convert, export
    from nascli.nas.config import EXPORT_MODES
    from nascli.space.space import is_converted

    if registry is not None:
        raise UserInputError("apply_mode: registry must be None (nascli's modes are all in one registry)")
    kwargs = [mode_kwargs] if isinstance(mode_kwargs, dict) else list(mode_kwargs or [])
    if any(kwargs):
        raise UserInputError("apply_mode: mode_kwargs must be empty (no nascli mode takes keyword arguments)")
    if isinstance(model, nn.Module) and init_state is not None and init_state == is_converted(model):
        held = "already holds a conversion state" if init_state else "holds no conversion state to extend"
        raise UserInputError(f"apply_mode: {type(model).__name__} {held} (init_state={init_state})")
    if isinstance(mode, str) and mode in EXPORT_MODES:
        return export(build_model(model))
    return convert(model, mode=mode)


def save(model: nn.Module, path: str | os.PathLike | IO[bytes]) -> Path | IO[bytes]:
    """Save the search space (as its recorded conversion), the active subnet and the weights.

    ``path`` may also be a file object open for writing. A model ``nascli.nas.export`` made is
    saved with the conversion it came from, so ``restore`` rebuilds it from the original model.
    """
    return write_checkpoint(build_checkpoint(model), path)


def restore(
    model_or_factory: nn.Module | Callable[[], nn.Module] | str | tuple | None, path: str | os.PathLike | IO[bytes]
) -> nn.Module:
    """Rebuild a saved model from the original (unconverted) model or its factory.

    With ``None``, the factory recorded in the checkpoint (by the CLI) is used, but only when
    this user wrote the checkpoint on this machine (its signature verifies, see
    nascli.opt.trust): a checkpoint from elsewhere never gets to call code.
    """
    checkpoint = read_checkpoint(path)
    if model_or_factory is None:
        spec = recorded_model(checkpoint)
        if not spec:
            raise CheckpointError(f"{path}: records no model factory; pass the model or its factory")
        # restore calls no score function, so only the factory needs trust here
        if untrusted := untrusted_code(checkpoint, frozenset({"search"})):
            raise CheckpointError(
                f"{path}: was not written by this user on this machine, so nascli will not call the code it"
                f" names ({untrusted}); if you trust it, pass the factory: nascli.opt.restore(factory, path)"
            )
        model = build_model(spec["factory"], spec.get("kwargs"))
    else:
        model = build_model(model_or_factory)
    return apply_checkpoint(model, checkpoint, path)
