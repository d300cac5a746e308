"""Helpers of the NAS API that work on any model: inputs, flops, and the hparams of a converted one."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from nascli.cost.constraints import resolve_constraints
from nascli.cost.fvcore_count import count_params, fvcore_flops
from nascli.errors import UserInputError
from nascli.space.export import export_model
from nascli.space.hparam import Hparam
from nascli.space.space import get_space, is_converted


def as_inputs(dummy_input: Any) -> tuple[torch.Tensor, ...]:
    """A dummy input given as one tensor or a tuple of forward arguments, as a tuple.

    ModelOpt also takes a trailing dict of keyword arguments; an empty one adds nothing, so
    ``(*args, kwargs)`` from a ModelOpt script works when the model takes no keyword inputs.
    """
    inputs = dummy_input if isinstance(dummy_input, tuple) else (dummy_input,)
    if inputs and isinstance(inputs[-1], dict):
        if inputs[-1]:
            raise UserInputError("dummy_input: keyword inputs are not supported; pass the inputs positionally")
        inputs = inputs[:-1]
    return inputs


def inference_flops(
    network: nn.Module,
    dummy_input: torch.Tensor | tuple | None = None,
    data_shape: Sequence[int] | None = None,
    unit: float = 1e6,
    return_str: bool = False,
) -> float | str:
    """Flops of one forward pass of the whole dummy batch, in ``unit`` (millions by default), as ModelOpt counts.

    ModelOpt's utility of this name counts two flops per multiply-accumulate over the whole
    batch, and code moving from ModelOpt reads its numbers that way, so this one does too.
    nascli's own costs (``profile``, ``search``, ``flops`` constraints) count multiply-accumulates
    per sample: divide by 2 and by the batch size to compare (docs/migrating-from-modelopt.md).
    A converted model is counted at its active subnet. The input is ``dummy_input`` or random
    values of ``data_shape``; ``return_str`` gives the number as text, as ModelOpt does.
    """
    if dummy_input is None:
        if data_shape is None:
            raise UserInputError("inference_flops: pass dummy_input or data_shape")
        dummy_input = torch.randn(*data_shape)
    inputs = as_inputs(dummy_input)
    model = export_model(network) if is_converted(network) else network
    flops = 2 * fvcore_flops(model, inputs) * inputs[0].shape[0] / unit
    return f"{flops:.2f}" if return_str else flops


def plain_model_stats(
    model: nn.Module, inputs: tuple[torch.Tensor, ...], constraints: dict[str, Any] | None
) -> tuple[bool, dict[str, Any]]:
    """``profile``'s answer for a model that was not converted: its own costs under ``"full"``."""
    full = {"flops": fvcore_flops(model, inputs), "params": count_params(model)}
    bounds = resolve_constraints(constraints, full)
    checks = {key: {"upper_bound": bound, "satisfiable": full[key] <= bound} for key, bound in bounds.items()}
    return all(c["satisfiable"] for c in checks.values()), {"full": full, "constraints": checks}


def is_dynamic(model: nn.Module) -> bool:
    """Whether the model or any module in it was converted (and not exported since)."""
    return any(is_converted(module) for module in model.modules())


def named_hparams(model: nn.Module, configurable: bool | None = None) -> Iterator[tuple[str, Hparam]]:
    """(name, hparam) of every listed attribute (None), of the search dimensions (True), or of the
    fixed ones (False); ``hparam.choices`` and ``hparam.active`` read as in ModelOpt."""
    space = get_space(model)
    if configurable:
        yield from space.hparams.items()
    else:
        yield from ((n, hp) for n, hp in space.entries if configurable is None or not hp.is_configurable)
