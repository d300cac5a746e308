"""Turn a model into a search space: trace, group channels, build hparams, swap in dynamic layers."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import torch
from torch import nn

from nascli.cost.terms import compile_cost_terms
from nascli.errors import UserInputError
from nascli.space.dynamic import DYNAMIC_TYPES
from nascli.space.dynamic.activation import ACTIVATION_TYPES, activation_name
from nascli.space.hparam import Dim, Hparam, Scaled, Segments, dim_parts
from nascli.space.rules import CONV_TRANSPOSE_TYPES, CONV_TYPES, LINEAR_TYPES, channel_choices, settings_for
from nascli.space.space import SPACE_ATTR, SearchSpace, is_converted, sample_in_training
from nascli.space.trace import TraceResult, module_slots, trace_model

_SLOT_ATTRS = {"out": "out_channels", "in": "in_channels"}
_LINEAR_ATTRS = {"out": "out_features", "in": "in_features"}


def _attr_name(module: nn.Module, slot: str) -> str:
    """The layer attribute a channel slot sizes (``out_channels``, ``in_features``, ``num_channels`` ...)."""
    if isinstance(module, LINEAR_TYPES):
        return _LINEAR_ATTRS[slot]
    if isinstance(module, nn.MultiheadAttention):
        return "embed_dim"
    if slot in _SLOT_ATTRS:
        return _SLOT_ATTRS[slot]
    return {nn.LayerNorm: "normalized_shape", nn.GroupNorm: "num_channels"}.get(type(module), "num_features")


def default_dummy_input(model: nn.Module) -> tuple[torch.Tensor, ...]:
    """A guess at one input sample from the first layer: images of 224 pixels per side, or features."""
    for module in model.modules():
        if isinstance(module, CONV_TYPES):
            spatial = (224,) * len(module.kernel_size)
            return (torch.randn(1, module.in_channels, *spatial),)
        if isinstance(module, LINEAR_TYPES):
            return (torch.randn(1, module.in_features),)
    raise UserInputError(f"cannot guess the input shape of {type(model).__name__}: pass dummy_input")


def convert_model(
    model: nn.Module, mode_name: str, rules: dict[str, Any], dummy_input: tuple[torch.Tensor, ...]
) -> nn.Module:
    """Convert ``model`` in place into a search space following ``rules`` and return it."""
    if is_converted(model):
        raise UserInputError(f"{type(model).__name__} is already converted; convert the original model")

    def converts(name: str, module: nn.Module) -> bool:
        resizable = isinstance(module, (nn.Sequential, *ACTIVATION_TYPES)) or bool(module_slots(module))
        return type(module) in DYNAMIC_TYPES and resizable and settings_for(rules, name, module) is not None

    def reads_flattened(name: str, module: nn.Module) -> bool:
        return bool((settings_for(rules, name, module) or {}).get("couple_flatten"))

    trace = trace_model(model, dummy_input, converts, reads_flattened)
    modules = [(n, m) for n, m in model.named_modules() if n and converts(n, m)]
    reasons: dict[str, str] = {}
    channel_hps = _channel_hparams(modules, trace, rules, reasons)
    kernel_hps = {n: _kernel_hparam(n, m, settings_for(rules, n, m)) for n, m in modules if isinstance(m, CONV_TYPES)}
    head_hps = {
        n: _heads_hparam(n, m, settings_for(rules, n, m)) for n, m in modules if isinstance(m, nn.MultiheadAttention)
    }
    depth_hps = _depth_hparams(model, trace, rules)
    activation_hps = {
        n: _activation_hparam(n, m, settings_for(rules, n, m)) for n, m in modules if isinstance(m, ACTIVATION_TYPES)
    }

    entries: list[tuple[str, Hparam]] = []
    for name, module in modules:
        if isinstance(module, nn.Sequential):
            if name not in depth_hps:
                continue
            module.__class__ = DYNAMIC_TYPES[nn.Sequential]
            module.attach_hparams(depth_hps[name])
        else:
            hps = channel_hps.get(name, {})
            module.__class__ = DYNAMIC_TYPES[type(module)]
            if isinstance(module, CONV_TYPES):
                module.attach_hparams(hps["out"], hps["in"], kernel_hps[name])
            elif isinstance(module, LINEAR_TYPES + CONV_TRANSPOSE_TYPES):
                module.attach_hparams(hps["out"], hps["in"])
            elif isinstance(module, nn.MultiheadAttention):
                module.attach_hparams(hps["in"], head_hps[name])
            elif isinstance(module, ACTIVATION_TYPES):
                module.attach_hparams(activation_hps[name])
            else:
                module.attach_hparams(hps["features"])
        entries.extend((f"{name}.{attr}", hp) for attr, hp in module.nas_hparams())

    batch = dummy_input[0].shape[0] if dummy_input and isinstance(dummy_input[0], torch.Tensor) else 1
    layer_hps = {**kernel_hps, **head_hps}
    terms, unmodeled = compile_cost_terms(model, trace, channel_hps, layer_hps, depth_hps, batch)
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
    hp_name = f"{name}.{_attr_name(module, attr)}{suffix}"
    if why is None and attr != "out":
        why = "no searchable layer produces these channels"
    if why is not None:
        return _fixed(Hparam(hp_name, (size // copies,)), why, reasons)
    settings = settings_for(rules, name, module)
    if isinstance(module, CONV_TYPES + CONV_TRANSPOSE_TYPES):
        ratios, divisor = settings.get("out_channels_ratio", (1.0,)), settings.get("channel_divisor", 1)
    else:
        ratios, divisor = settings.get("features_ratio", (1.0,)), settings.get("feature_divisor", 1)
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
    """Channels of a group must stay a whole number of groups of every grouped conv and group norm in it."""
    width = 1
    for _, module, _, _ in slots:
        if isinstance(module, CONV_TYPES + CONV_TRANSPOSE_TYPES) and module.groups > 1:
            per_group = module.out_channels // module.groups
            width = width * per_group // _gcd(width, per_group)
        elif isinstance(module, nn.GroupNorm):
            width = width * module.num_groups // _gcd(width, module.num_groups)
    return width


def _gcd(a: int, b: int) -> int:
    while b:
        a, b = b, a % b
    return a


def _kernel_hparam(name: str, conv: nn.Module, settings: dict[str, Any]) -> Hparam | None:
    """Smaller kernels are centre crops; only for square, odd kernels with output-preserving padding."""
    wanted = settings.get("kernel_size", ())
    full = conv.kernel_size[0]
    if not wanted or len(set(conv.kernel_size)) != 1 or full % 2 == 0 or conv.padding_mode != "zeros":
        return None
    if isinstance(conv.padding, str) or any(
        p != d * (full - 1) // 2 for p, d in zip(conv.padding, conv.dilation, strict=True)
    ):
        return None
    choices = {k for k in wanted if k <= full} | {full}
    return Hparam(f"{name}.kernel_size", choices) if len(choices) > 1 else None


def _heads_hparam(name: str, attention: nn.MultiheadAttention, settings: dict[str, Any]) -> Hparam | None:
    """Fewer heads of the same size: each ratio of the head count, rounded to a whole head."""
    choices = channel_choices(attention.num_heads, settings.get("num_heads_ratio", (1.0,)), 1)
    return Hparam(f"{name}.num_heads", choices) if len(choices) > 1 else None


def _activation_hparam(name: str, activation: nn.Module, settings: dict[str, Any]) -> Hparam:
    """The listed activations, the layer's own last (its max, so the max subnet is the model as built)."""
    own = activation_name(activation)
    return Hparam(f"{name}.activation", [*(c for c in settings.get("choices", ()) if c != own), own])


def _depth_hparams(model: nn.Module, trace: TraceResult, rules: dict[str, Any]) -> dict[str, Hparam]:
    """Depth choices for Sequential stages whose trailing blocks keep shape and channel group."""
    found = {}
    for name, seq in model.named_modules():
        if type(seq) is not nn.Sequential or not name or len(trace.calls.get(name, ())) != 1:
            continue
        settings = settings_for(rules, name, seq)
        if settings is None:
            continue
        skippable = [_is_skippable(f"{name}.{key}", block, trace) for key, block in seq._modules.items()]
        first = len(skippable)
        while first > 0 and skippable[first - 1]:
            first -= 1
        low = max(first, settings.get("min_depth", 1))
        if low < len(seq):
            found[name] = Hparam(f"{name}.depth", range(low, len(seq) + 1))
    return found


def _is_skippable(name: str, block: nn.Module | None, trace: TraceResult) -> bool:
    calls = trace.calls.get(name, [])
    if block is None or not any(True for _ in block.children()) or len(calls) != 1:
        return False
    node_in, node_out = calls[0]
    if node_in not in trace.channels or node_out not in trace.channels:
        return False
    if trace.node_shape(node_in) != trace.node_shape(node_out):
        return False
    groups = trace.groups
    roots_in = [groups.find(e) for e in trace.channels[node_in][0]]
    return roots_in == [groups.find(e) for e in trace.channels[node_out][0]]
