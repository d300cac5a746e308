"""Turn a model into a search space: trace, group channels, build hparams, swap in dynamic layers."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import torch
from torch import nn

from nascli.cost.terms import compile_cost_terms
from nascli.errors import UserInputError
from nascli.space.hparam import Dim, Hparam, Scaled, Segments, channel_choices, dim_parts
from nascli.space.kinds import convertible_kind, kind_of, module_slots
from nascli.space.rules import settings_for
from nascli.space.space import SPACE_ATTR, SearchSpace, is_converted, sample_in_training
from nascli.space.trace import TraceResult, trace_model


def default_dummy_input(model: nn.Module) -> tuple[torch.Tensor, ...]:
    """A guess at one input sample from the first layer that tells it: images of 224 pixels per side, or features."""
    for module in model.modules():
        kind = kind_of(module)
        guess = kind.dummy_input(module) if kind else None
        if guess is not None:
            return guess
    raise UserInputError(f"cannot guess the input shape of {type(model).__name__}: pass dummy_input")


def convert_model(
    model: nn.Module, mode_name: str, rules: dict[str, Any], dummy_input: tuple[torch.Tensor, ...]
) -> nn.Module:
    """Convert ``model`` in place into a search space following ``rules`` and return it."""
    if is_converted(model):
        raise UserInputError(f"{type(model).__name__} is already converted; convert the original model")

    def converts(name: str, module: nn.Module) -> bool:
        kind = convertible_kind(module)
        return kind is not None and kind.searchable(module) and settings_for(rules, name, module) is not None

    def reads_flattened(name: str, module: nn.Module) -> bool:
        return bool((settings_for(rules, name, module) or {}).get("couple_flatten"))

    trace = trace_model(model, dummy_input, converts, reads_flattened)
    modules = [(n, m) for n, m in model.named_modules() if n and converts(n, m)]
    reasons: dict[str, str] = {}
    channel_hps = _channel_hparams(modules, trace, rules, reasons)
    layer_hps = {
        n: convertible_kind(m).layer_hparam(n, m, settings_for(rules, n, m), trace) for n, m in modules
    }  # a kernel size, a head count, a depth, an activation function

    entries: list[tuple[str, Hparam]] = []
    for name, module in modules:
        kind = convertible_kind(module)
        dims = channel_hps.get(name, {})
        if not dims and layer_hps[name] is None:
            continue  # nothing to search: it stays native
        module.__class__ = kind.dynamic[type(module)]  # made by convertible_kind for a lazy native
        kind.attach(module, dims, layer_hps[name])
        entries.extend((f"{name}.{attr}", hp) for attr, hp in module.nas_hparams())

    batch = dummy_input[0].shape[0] if dummy_input and isinstance(dummy_input[0], torch.Tensor) else 1
    terms, unmodeled = compile_cost_terms(model, trace, channel_hps, layer_hps, batch)
    input_shapes = [tuple(t.shape) for t in dummy_input]
    space = SearchSpace(entries, [(mode_name, rules)], input_shapes, trace.shapes, terms, unmodeled)
    space.fixed_reasons = reasons
    space.untraceable = dict(trace.untraceable)
    setattr(model, SPACE_ATTR, space)
    model.register_forward_pre_hook(sample_in_training)
    return model


def _channel_hparams(
    modules: list[tuple[str, nn.Module]], trace: TraceResult, rules: dict[str, Any], reasons: dict[str, str]
) -> dict[str, dict[str, Dim]]:
    """One hparam per channel group, shared by every slot of the group; why fixed ones are fixed goes in reasons.

    A layer reading a concatenation has one slot per segment and gets a ``Segments`` of their hparams.
    """
    groups = trace.groups
    members: dict[tuple, list[tuple[str, nn.Module, str, int]]] = defaultdict(list)
    segment_counts: dict[tuple[str, str], int] = {}
    for name, module in modules:
        for attr, size in module_slots(module).items():
            sizes = trace.slot_segments.get((name, attr), (size,)) if attr != "out" else (size,)
            segment_counts[(name, attr)] = len(sizes)
            for index, part in enumerate(sizes):
                slot = groups.add(("slot", name, attr, index), part)
                if name not in trace.calls:
                    inside = [leaf for leaf in trace.untraceable if name.startswith(f"{leaf}.")]
                    why = (
                        f"it is inside {inside[0]}, which fx cannot trace" if inside else "it is not called in forward"
                    )
                    groups.freeze(slot, f"{name}: {why}")
                members[groups.find(slot)].append((name, module, attr, index))

    # a chunked group is copies of its part group: the part gets the hparam, the whole its runs
    repeats = {root: groups.repeat_of(root) for root in members if groups.repeat_of(root)}
    whole_of = {groups.find(part): (root, copies) for root, (part, copies) in repeats.items()}
    for root in [r for r in repeats if r in whole_of]:  # a chunk of a chunk, joined after the fact
        for element in (root, repeats[root][0]):
            groups.freeze(element, "a chunk of channels that are themselves chunked")
    hparams: dict[tuple, Hparam] = {}

    def hparam_of(root: tuple) -> Hparam:
        if root not in hparams:
            hparams[root] = _group_hparam(root, members, whole_of, trace, rules, reasons, segment_counts)
        return hparams[root]

    parts: dict[tuple[str, str], dict[int, Hparam | Segments]] = defaultdict(dict)
    for root, slots in members.items():
        if root in repeats:
            part, copies = repeats[root]
            dim: Hparam | Segments = Segments([hparam_of(groups.find(part))] * copies)
        else:
            dim = hparam_of(root)
        for member_name, _, member_attr, member_index in slots:
            parts[(member_name, member_attr)][member_index] = dim

    found: dict[str, dict[str, Dim]] = defaultdict(dict)
    for (name, attr), by_index in parts.items():
        ordered = [p for i in range(len(by_index)) for p in dim_parts(by_index[i])]
        found[name][attr] = ordered[0] if len(ordered) == 1 else Segments(ordered)
        if (name, attr) in trace.slot_scales:  # a linear layer reading flattened maps
            found[name][attr] = Scaled(found[name][attr], trace.slot_scales[(name, attr)])
    return found


def _group_hparam(
    root: tuple,
    members: dict[tuple, list[tuple[str, nn.Module, str, int]]],
    whole_of: dict[tuple, tuple[tuple, int]],
    trace: TraceResult,
    rules: dict[str, Any],
    reasons: dict[str, str],
    segment_counts: dict[tuple[str, str], int],
) -> Hparam:
    """The hparam of one channel group, named after the layer producing it; why it is fixed goes in reasons.

    The part group of a chunked tensor takes its choices from the whole (divided by the chunk
    count) and is named after the whole's producer, ``conv.out_channels[0]``.
    """
    groups = trace.groups
    copies = 1
    source = root
    if root in whole_of:
        source, copies = whole_of[root]
    slots = members[source]
    size = groups.size(source)
    why = groups.frozen_reason(root) or groups.frozen_reason(source)
    name, module, attr, index = next((s for s in slots if s[2] == "out"), slots[0])
    suffix = f"[{index}]" if segment_counts[(name, attr)] > 1 or copies > 1 else ""
    kind = convertible_kind(module)
    hp_name = f"{name}.{kind.slot_attr(module, attr)}{suffix}"
    if why is None and attr != "out":
        why = "no searchable layer produces these channels"
    if why is not None:
        return _fixed(Hparam(hp_name, (size // copies,)), why, reasons)
    ratios, divisor = kind.channel_settings(settings_for(rules, name, module))
    width = math.lcm(_group_width(slots), _group_width(members.get(root, [])) if copies > 1 else 1)
    choices = tuple(c // copies for c in channel_choices(size, ratios, divisor, width * copies))
    whole = f", in whole groups of {width}" if width > 1 else ""
    chunked = f", in {copies} equal chunks" if copies > 1 else ""
    why = f"every ratio rounds to {size} with divisor {divisor}{whole}{chunked}"
    return _fixed(Hparam(hp_name, choices), why, reasons)


def _fixed(hp: Hparam, why: str, reasons: dict[str, str]) -> Hparam:
    """Record why ``hp`` has a single choice (a no-op for a searchable one)."""
    if not hp.is_configurable:
        reasons[hp.name] = why
    return hp


def _group_width(slots: list[tuple[str, nn.Module, str, int]]) -> int:
    """Channels of a group must stay a multiple of what each member needs (a grouped conv's group width)."""
    return math.lcm(1, *(convertible_kind(module).channel_multiple(module) for _, module, _, _ in slots))
