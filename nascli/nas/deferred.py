"""Convert without an input: the search space is built on the model's first real one.

ModelOpt converts any model without a dummy input. nascli traces the model to build its search
space (the channel groups, the costs), so it needs an input of a shape the model accepts. When
``convert`` is given none and none of the guessed shapes (space/dummy_input.py) runs the model,
the conversion waits: the modes still to apply are recorded on the model and a forward pre-hook
converts it in place on the first forward's input (its first sample), then lets that forward
run on the converted model. ``profile`` and ``search`` given a ``dummy_input``, or ``convert``
given one, convert it on that input instead. Until then, calls that need the search space
(``named_hparams``, ``sample``, ``select``, ``save``, ...) raise one error saying to run a forward
or pass ``dummy_input``.

The record and the hook live on the model (a module-level hook, the modes as plain data), so a
deep copy or a pickled model waits for its own first input.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from nascli.errors import UserInputError
from nascli.nas.config import EXPORT_MODES
from nascli.space.space import PENDING_ATTR, is_converted, is_pending, sample_in_training


def defer(model: nn.Module, steps: list[tuple[str, Any]]) -> nn.Module:
    """Record ``steps`` (``resolve_modes``' form) to apply on the model's first input."""
    pending = getattr(model, PENDING_ATTR, None)
    if pending is not None:  # converted again before any input: those modes follow
        pending.extend(steps)
        return model
    setattr(model, PENDING_ATTR, list(steps))
    model.register_forward_pre_hook(convert_on_first_input, with_kwargs=True, prepend=True)
    return model


def pending_mode(model: nn.Module) -> str | None:
    """The search-space mode a waiting model will hold once converted (what a next mode must follow)."""
    last = None
    for name, _ in getattr(model, PENDING_ATTR, None) or []:
        last = None if name in EXPORT_MODES else name
    return last


def resolve(model: nn.Module, inputs: tuple) -> nn.Module:
    """Apply the recorded modes to ``model`` in place on ``inputs`` (one sample); a no-op if none wait.

    If the conversion fails before it changed the model, the model waits again, so a later
    input (or ``dummy_input``) may still convert it.
    """
    from nascli.nas import apply_steps

    steps = getattr(model, PENDING_ATTR, None)
    if steps is None:
        return model
    _forget(model)
    try:
        return apply_steps(model, steps, inputs)
    except BaseException:
        if not is_converted(model) and not is_pending(model):
            defer(model, steps)
        raise


def convert_on_first_input(module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
    """Forward pre-hook of a waiting model: convert it on this input, then run the forward as converted."""
    if kwargs:
        raise UserInputError(
            f"{type(module).__name__}: its conversion waits for an input, and this forward passes keyword inputs;"
            " convert it with dummy_input (positional inputs of one sample)"
        )
    resolve(module, first_sample(args))
    if is_converted(module):
        sample_in_training(module, args, kwargs)  # this forward too draws a subnet in train mode


def first_sample(args: tuple) -> tuple[torch.Tensor, ...]:
    """The first sample of a batch of forward arguments: each tensor's first row when they share a batch size."""
    if not args or not all(isinstance(a, torch.Tensor) for a in args):
        raise UserInputError(
            "the conversion waits for an input of tensors, and this forward passes other values;"
            " convert the model with dummy_input"
        )
    if all(a.dim() > 0 for a in args) and len({a.shape[0] for a in args}) == 1:
        return tuple(a[:1].detach() for a in args)
    return tuple(a.detach() for a in args)


def _forget(model: nn.Module) -> None:
    """Drop the record and the hook: the model no longer waits."""
    delattr(model, PENDING_ATTR)
    for key, hook in list(model._forward_pre_hooks.items()):
        if hook is convert_on_first_input:
            del model._forward_pre_hooks[key]
            model._forward_pre_hooks_with_kwargs.pop(key, None)
