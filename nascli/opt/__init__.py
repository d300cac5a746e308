"""Public save/restore API, call for call like ``modelopt.torch.opt``: ``import nascli.opt as mto``."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from torch import nn

from nascli.errors import CheckpointError, UserInputAssertionError, UserInputError
from nascli.nas.config import ModeDescriptor
from nascli.opt.checkpoint import (
    apply_checkpoint,
    build_checkpoint,
    read_checkpoint,
    recorded_model,
    untrusted_code,
    write_checkpoint,
)
from nascli.opt.conversion import (
    ModeloptStateManager,
    load_modelopt_state,
    modelopt_state,
    restore_from_modelopt_state,
)
from nascli.recipe.factory import build_model

__all__ = [
    "ModeDescriptor",
    "ModeloptStateManager",
    "apply_mode",
    "load_modelopt_state",
    "modelopt_state",
    "restore",
    "restore_from_modelopt_state",
    "save",
]


def apply_mode(
    model: nn.Module | Callable[[], nn.Module] | str | tuple,
    mode: Any,
    registry: Any = None,
    init_state: bool | None = None,
    mode_kwargs: dict[str, Any] | list[dict[str, Any]] | None = None,
) -> nn.Module:
    """Apply modes (``"autonas"``, ``("fastnas", config)``, ``"export_nas"`` or a list) to a model.

    ModelOpt's generic entry point; for nascli's modes it is ``nascli.nas.convert``, chains of
    modes included. ``init_state`` says whether the model must start a conversion state (True:
    it must hold none yet) or extend the one it holds (False: converted, or exported since);
    None infers it. nascli has one registry of modes, so ``registry`` must be None;
    ``mode_kwargs`` (per-mode keyword arguments that are not recorded) must be empty, as no
    nascli mode takes any.
    """
    from nascli.nas import convert

    if registry is not None:
        raise UserInputError("apply_mode: registry must be None (nascli's modes are all in one registry)")
    kwargs = [mode_kwargs] if isinstance(mode_kwargs, dict) else list(mode_kwargs or [])
    if any(kwargs):
        raise UserInputError("apply_mode: mode_kwargs must be empty (no nascli mode takes keyword arguments)")
    model = build_model(model)
    if not mode:
        return model
    if init_state is not None and init_state == ModeloptStateManager.is_converted(model, is_root=True):
        held = "already holds a conversion state" if init_state else "holds no conversion state to extend"
        raise UserInputAssertionError(f"apply_mode: {type(model).__name__} {held} (init_state={init_state})")
    return convert(model, mode=mode)


def save(model: nn.Module, f: str | os.PathLike | IO[bytes], **kwargs: Any) -> Path | IO[bytes]:
    """Save the search space (as its recorded conversion), the active subnet and the weights.

    ``f`` may also be a file object open for writing; ``kwargs`` go to ``torch.save``, as in
    ModelOpt. A model ``nascli.nas.export`` made is saved with the conversions it came from, so
    ``restore`` rebuilds it from the original model.
    A model holding a converted module is an AssertionError naming the module to save, as in
    ModelOpt: the conversion replays on that module.
    """
    ModeloptStateManager.is_converted(model, is_root=True)
    return write_checkpoint(build_checkpoint(model), f, **kwargs)


def restore(
    model: nn.Module | Callable[[], nn.Module] | str | tuple | None, f: str | os.PathLike | IO[bytes], **kwargs: Any
) -> nn.Module:
    """Rebuild a saved model from the original (unconverted) model or its factory.

    With ``None``, the factory recorded in the checkpoint (by the CLI) is used, but only when
    this user wrote the checkpoint on this machine (its signature verifies, see
    nascli.opt.trust): a checkpoint from elsewhere never gets to call code. ``kwargs`` go to
    ``torch.load`` as in ModelOpt (``map_location``, default "cpu"); ``weights_only=False`` is refused.
    """
    path = f
    checkpoint = read_checkpoint(path, **kwargs)
    if model is None:
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
        model = build_model(model)
    return apply_checkpoint(model, checkpoint, path)
