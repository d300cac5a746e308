"""Inputs an attention slices with its heads: ALiBi's bias of each head, built outside the attention.

Bloom and MPT build the ALiBi bias of every head once per forward, from the model's head count, and
hand it to each attention, which adds it to its scores head by head. An attention keeping fewer
heads must add the rows of the heads it keeps. The tracer records each tensor made of no channels
that runs along tracked channels at their full size (``TraceResult.constants_along``); here each one
meeting an attention's heads is followed back to the argument of that attention's call it came in
by, and the attention slices that argument in each forward (``SlicedParameters._inputs``). Its export
keeps doing so with a forward pre-hook: a model with fewer heads would compute other slopes from its
own head count, so only the kept rows of the full bias reproduce the subnet. Such heads keep their
order (importance does not permute them): the bias follows the head's position, not its weights.
docs/architecture.md ("Constants") places this among the tracer's relations.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import fx, nn

from nascli.space.hparam import Dim, Hparam
from nascli.space.shrink_check import run_in_mode
from nascli.space.space import on_meta_device
from nascli.space.trace import TraceResult, buffers_kept
from nascli.space.trace_aten import aten_name

# operations an argument may pass through inside the attention before it meets the heads, with the
# dim of the heads unmoved: ``position_bias[:, q_start:, k_start:]`` (MPT), dtype casts
_PASSING = ("alias", "to", "_to_copy", "contiguous", "clone", "detach", "slice")


def heads_by_root(trace: TraceResult, head_hps: list[Hparam]) -> dict[tuple, tuple[str, Hparam]]:
    """By head group root, its attention and its head count hparam (whole heads, not key/value groups)."""
    by_name = {hp.name: hp for hp in head_hps}
    found = {}
    for element, attention, grouped, _ in trace.head_groups:
        hp = by_name.get(f"{attention}.num_heads")
        if not grouped and hp is not None and hp.is_configurable:
            found[trace.groups.find(element)] = (attention, hp)
    return found


def input_slices(
    model: nn.Module, trace: TraceResult, heads: dict[tuple, tuple[str, Hparam]], dummy_input: tuple
) -> dict[str, dict[str | int, tuple[int, Dim]]]:
    """By attention path, each argument (a keyword's name or a position) to slice, with its heads' dim and hparam.

    The argument is found by running the model once and matching the tensor the graph traced by
    shape and dtype among the attention's arguments; a constant that matches none, or several,
    is left alone (the forward check of conversion then tells whether the model runs without it).
    """
    wanted: dict[str, list[tuple[fx.Node, int, Hparam]]] = {}
    for constant, axis, element in trace.constants_along:
        attention, hp = heads.get(trace.groups.find(element), (None, None))
        if attention is None:
            continue
        source = _entering(constant, axis, attention)
        if source is not None:
            wanted.setdefault(attention, []).append((source, axis, hp))
    if not wanted:
        return {}
    calls = _first_calls(model, list(wanted), dummy_input)
    found: dict[str, dict[str | int, tuple[int, Dim]]] = {}
    for attention, sources in wanted.items():
        args, kwargs = calls.get(attention, ((), {}))
        for source, axis, hp in sources:
            key = _argument(source, args, kwargs)
            if key is not None:
                found.setdefault(attention, {})[key] = (axis, hp)
    return found


def _inside(node: fx.Node, module: str) -> bool:
    return any(path == module for path, _ in (node.meta.get("nn_module_stack") or {}).values())


def _entering(node: fx.Node, axis: int, attention: str) -> fx.Node | None:
    """The node outside ``attention`` that ``node`` (used inside it) was taken from, its dim ``axis`` unmoved."""
    if not any(_inside(user, attention) for user in node.users):
        return None
    while _inside(node, attention):
        name = aten_name(node)
        if name not in _PASSING or not node.args or not isinstance(node.args[0], fx.Node):
            return None
        if name == "slice":
            dim = node.args[1] if len(node.args) > 1 else 0
            if dim % len(node.meta["val"].shape) == axis:
                return None
        node = node.args[0]
    return node


@torch.no_grad()
def _first_calls(model: nn.Module, paths: list[str], dummy_input: tuple) -> dict[str, tuple[tuple, dict]]:
    """The arguments of the first call of each module in ``paths`` in one forward on ``dummy_input``."""
    calls: dict[str, tuple[tuple, dict]] = {}
    handles = []
    for path in paths:

        def record(module: nn.Module, args: tuple, kwargs: dict, path: str = path) -> None:
            calls.setdefault(path, (args, kwargs))

        handles.append(model.get_submodule(path).register_forward_pre_hook(record, with_kwargs=True))
    was_training = model.training
    try:
        model.eval()
        with buffers_kept(model):
            for mode in ["meta", "fake"] if on_meta_device(model) else ["plain"]:
                try:  # a model built on the meta device whose code reads a value runs on fake tensors
                    run_in_mode(model, dummy_input, mode)
                    break
                except Exception:  # a model that runs no way finds no argument: its constants stay as they were
                    calls.clear()
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return calls


def _argument(source: fx.Node, args: tuple, kwargs: dict) -> str | int | None:
    value = source.meta.get("val")
    if not isinstance(value, torch.Tensor):
        return None
    shape, dtype = tuple(value.shape), value.dtype

    def fits(t: Any) -> bool:
        return isinstance(t, torch.Tensor) and tuple(t.shape) == shape and t.dtype == dtype

    matches = [i for i, a in enumerate(args) if fits(a)] + [k for k, v in kwargs.items() if fits(v)]
    return matches[0] if len(matches) == 1 else None
