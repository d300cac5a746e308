"""Turn a model into a search space: trace, group channels, build hparams, swap in dynamic layers."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import torch
from torch import nn

from nascli.cost.terms import compile_cost_terms
from nascli.errors import UserInputError
from nascli.space.export import export_max
from nascli.space.hparam import Dim, Grouped, Hparam, Scaled, Segments, channel_choices, dim_parts
from nascli.space.kinds import DynamicModule, convertible_kind, kind_of, module_slots, qualified_name
from nascli.space.kinds.heads import HEADS
from nascli.space.kinds.heads import RULE_KEY as HEADS_RULE
from nascli.space.kinds.hidden import HIDDEN
from nascli.space.kinds.hidden import RULE_KEY as HIDDEN_RULE
from nascli.space.kinds.linear import LINEAR
from nascli.space.kinds.module_list import DynamicModuleList
from nascli.space.kinds.parameters import PARAMETERS
from nascli.space.parallel_stacks import parallel_groups, shared_depth
from nascli.space.patches import patch_train
from nascli.space.rules import settings_for, settings_matching
from nascli.space.shared_config import LayerConfigView
from nascli.space.shrink_check import keep_what_runs
from nascli.space.sliced_inputs import heads_by_root, input_slices
from nascli.space.space import (
    SPACE_ATTR,
    SearchSpace,
    get_space,
    is_converted,
    model_attributes,
    sample_in_training,
)
from nascli.space.trace import TraceResult, trace_model


def convert_model(
    model: nn.Module,
    mode_name: str,
    rules: dict[str, Any],
    dummy_input: tuple[torch.Tensor, ...],
    recorded_choices: dict[str, list[int]] | None = None,
) -> nn.Module:
    """Convert ``model`` in place into a search space following ``rules`` and return it.

    ``recorded_choices`` (a checkpoint's space, by hparam name) replays a conversion of the same
    model: the hparams it kept at full size because the model's forward failed smaller are kept
    so again without running the model once per hparam, which for a billion-parameter model costs
    more than loading it. Whoever replays must compare the resulting space with the record.
    """
    if is_converted(model):
        raise UserInputError(f"{type(model).__name__} is already converted; convert the original model")
    attributes = model_attributes(model)

    def converts(name: str, module: nn.Module) -> bool:
        kind = convertible_kind(module)
        return kind is not None and kind.searchable(module) and settings_for(rules, name, module) is not None

    def reads_flattened(name: str, module: nn.Module) -> bool:
        return bool((settings_for(rules, name, module) or {}).get("couple_flatten"))

    trace = trace_model(model, dummy_input, converts, reads_flattened)
    read_in_place = _read_by_another(trace)
    modules = [(n, m) for n, m in model.named_modules() if n and converts(n, m) and n not in read_in_place]
    reasons: dict[str, str] = {}
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    channel_hps, param_dims, split_dims, head_hps, per_group, head_counts = _channel_hparams(
        modules, trace, rules, reasons, order
    )
    layer_hps = {
        n: convertible_kind(m).layer_hparam(n, m, settings_for(rules, n, m), trace) for n, m in modules
    }  # a kernel size, a head count, a depth, an activation function
    parallel = _share_parallel_depths(model, modules, trace, rules, layer_hps)

    entries: list[tuple[str, Hparam]] = []
    for name, module in modules:
        kind = convertible_kind(module)
        dims = channel_hps.get(name, {})
        if not dims and layer_hps[name] is None:
            continue  # nothing to search: it stays native
        module.__class__ = kind.dynamic[type(module)]  # made by convertible_kind for a lazy native
        kind.attach(module, dims, layer_hps[name])
        entries.extend((f"{name}.{attr}", hp) for attr, hp in module.nas_hparams())
    entries.extend(_attach_parameters(model, param_dims, channel_hps, reasons, read_in_place))
    _follow_split_sizes(model, split_dims, _head_sizes(channel_hps, param_dims))
    _follow_query_groups(model, per_group)
    _follow_head_counts(model, head_counts)
    _slice_inputs(model, trace, head_hps, dummy_input)
    _follow_layer_lists(model)
    _index_parallel_lists(model, parallel)
    entries.extend((hp.name, hp) for hp in head_hps)
    if trace.exported and recorded_choices is not None:
        _keep_as_recorded(entries, recorded_choices, reasons)
    elif trace.exported:
        keep_what_runs(model, (hp for _, hp in entries), dummy_input, lambda hp, why: _freeze(hp, why, reasons))
    else:  # an fx graph names the blocks called, not whether the code looped over their list or indexed it
        depths = [m._hp_depth for m in model.modules() if isinstance(m, DynamicModuleList)]
        keep_what_runs(model, depths, dummy_input, lambda hp, why: _freeze(hp, why, reasons))

    entries = _release_fixed_parameters(model, entries, channel_hps)

    batch = dummy_input[0].shape[0] if dummy_input and isinstance(dummy_input[0], torch.Tensor) else 1
    terms, unmodeled = compile_cost_terms(model, trace, channel_hps, layer_hps, batch)
    input_shapes = [tuple(t.shape) for t in dummy_input]
    space = SearchSpace(entries, [(mode_name, rules)], input_shapes, trace.shapes, terms, unmodeled)
    space.fixed_reasons = reasons
    space.entry_scales = _entry_scales(model)
    space.input_dtypes = [str(t.dtype).removeprefix("torch.") for t in dummy_input]
    if trace.real_values:  # the graph followed these values (tokens routed by them): a replay needs the same ones
        space.input_values = [t.detach().cpu().clone() for t in dummy_input]
    space.untraceable = dict(trace.untraceable)
    space.model_attributes = attributes
    setattr(model, SPACE_ATTR, space)
    model.register_forward_pre_hook(sample_in_training, with_kwargs=True)
    patch_train(model)  # eval() calibrates BN after random-subnet training, as in ModelOpt
    return model


def _read_by_another(trace: TraceResult) -> dict[str, str]:
    """Modules the forward never calls whose parameters the code of a module above them reads, each with
    that nearest module called (LongCat-Flash's router applies ``self.classifier.weight`` itself)."""
    called = trace.inference_modules | {""}
    found = {}
    for path in [*trace.param_slots, *trace.param_segments]:
        owner = path.rpartition(".")[0]
        if owner in called or owner in found:
            continue
        reader = owner
        while reader not in called:
            reader = reader.rpartition(".")[0]
        found[owner] = reader
    return found


def _attach_parameters(
    model: nn.Module,
    param_dims: dict[tuple[str, int], Dim],
    channel_hps: dict[str, dict[str, Dim]],
    reasons: dict[str, str],
    read_in_place: dict[str, str],
) -> list[tuple[str, Hparam]]:
    """Make the owners of searchable parameters read by the model's own code slice them (kinds/parameters.py).

    An owner never called itself is sliced in the forward of the module reading it (``read_in_place``).

    A parameter tied into other modules (Zamba's shared attention block, rebuilt per layer around
    the same tensors) is sliced by each of them in its own forward, and counted in each, as its
    export holds a copy in each; only its first owner lists its hparams.
    """
    modules = dict(model.named_modules(remove_duplicate=False))
    by_owner: dict[str, dict[str, dict[int, Dim]]] = defaultdict(lambda: defaultdict(dict))
    holders = _holders_by_tensor(model)
    tied: dict[str, dict[str, dict[int, Dim]]] = defaultdict(dict)
    for (path, axis), dim in param_dims.items():
        if any(p.is_configurable for p in dim_parts(dim)):
            owner, _, name = path.rpartition(".")
            by_owner[owner][name][axis] = dim
            tensor = getattr(modules[owner], name)
            for other, other_name in holders[id(tensor)]:
                held_by = modules[other]  # a layer of its own kind (a tied output head) slices it itself
                if held_by is not modules[owner] and not _of_own_kind(held_by):
                    tied[other].setdefault(other_name, {})[axis] = dim
    entries = []
    for owner, sliced in [*by_owner.items(), *tied.items()]:
        module = modules[owner]
        reader = read_in_place.get(owner, owner)
        busy = next((path for path in (owner, reader) if _of_own_kind(modules[path])), None)
        if busy is not None:  # its own kind slices its tensors; it cannot also slice these
            for dims in sliced.values():
                for hp in (p for dim in dims.values() for p in dim_parts(dim)):
                    _freeze(hp, f"{busy or type(model).__name__} is also a searchable layer", reasons)
            continue
        PARAMETERS.attach_parameters(
            module, {name: dict(dims) for name, dims in sliced.items()}, _lengths_held(module, sliced)
        )
        channel_hps[owner] = PARAMETERS.roles(module)  # its costs; tied tensors are moved once when ranked
        if reader != owner:
            PARAMETERS.attach_parameters(modules[reader], {})
            modules[reader].attach_carried((owner.removeprefix(f"{reader}.") if reader else owner,))
        if owner in by_owner:
            prefix = f"{owner}." if owner else ""
            entries.extend((f"{prefix}{attr}", hp) for attr, hp in module.nas_hparams())
    return entries


def _release_fixed_parameters(
    model: nn.Module, entries: list[tuple[str, Hparam]], channel_hps: dict[str, dict[str, Dim]]
) -> list[tuple[str, Hparam]]:
    """``entries`` without the sliced parameters the forward check (or a record) fixed whole; their owners slice
    them no more, and go native where nothing else is left (``SlicedParameters.release_fixed``).

    Readers go after the owners they carry, so a reader whose every carried owner went native follows.
    """
    owners = {}
    for name, module in model.named_modules(remove_duplicate=False):
        if kind_of(module) is PARAMETERS:
            owners.setdefault(id(module), (name, module))
    released = set()
    for name, module in sorted(owners.values(), key=lambda item: bool(item[1]._carried)):
        prefix = f"{name}." if name else ""
        before = {f"{prefix}{attr}" for attr, _ in module.nas_hparams()}
        if module.release_fixed():
            channel_hps.pop(name, None)
            released |= before
        else:
            channel_hps[name] = PARAMETERS.roles(module)
            released |= before - {f"{prefix}{attr}" for attr, _ in module.nas_hparams()}
    return [(name, hp) for name, hp in entries if name not in released]


def _of_own_kind(module: nn.Module) -> bool:
    """Whether ``module`` is a dynamic layer of a kind other than sliced parameters."""
    return isinstance(module, DynamicModule) and kind_of(module) is not PARAMETERS


def _holders_by_tensor(model: nn.Module) -> dict[int, list[tuple[str, str]]]:
    """By tensor id, each (module path, attribute) holding it: a tied parameter is held by several modules."""
    found: dict[int, list[tuple[str, str]]] = defaultdict(list)
    for named in (model.named_parameters(remove_duplicate=False), model.named_buffers(remove_duplicate=False)):
        for path, tensor in named:
            owner, _, name = path.rpartition(".")
            found[id(tensor)].append((owner, name))
    return found


_SIZE_WORDS = ("dim", "size", "shape", "features", "width", "hidden", "channels")


def _lengths_held(module: nn.Module, sliced: dict[str, dict[int, Dim]]) -> dict[str, Dim]:
    """The size attributes of a module owning a sliced vector (a norm's weight) that equal its length, by the
    dim they follow: its code may check its input by them (CPM-Ant's norm compares the width with
    ``dim_norm``); only names that say they are a size, so that a count that happens to be equal stays. The
    forward check of an exported model then tells whether that was enough."""
    found = {}
    for name, dims in sliced.items():
        tensor = getattr(module, name)
        if tensor.dim() == 1 and 0 in dims:
            held = [
                attr
                for attr, value in vars(module).items()
                if _is_size(attr, value) and _holds(value, len(tensor)) and any(w in attr.lower() for w in _SIZE_WORDS)
            ]
            found.update(dict.fromkeys(held, dims[0]))
    return found


def _entry_scales(model: nn.Module) -> dict[str, int]:
    """Attributes listed by an hparam they are a multiple of (a projection by its heads), with the factor."""
    found = {}
    for name, module in model.named_modules():
        for attr, field in getattr(module, "_hparam_fields", ()) if isinstance(module, DynamicModule) else ():
            dim = getattr(module, field, None)
            if isinstance(dim, Scaled) and isinstance(dim.base, Hparam):
                found[f"{name}.{attr}"] = dim.scale
    return found


def _merged_widths(module: nn.Module, count: int, heads: Dim, head_sizes: dict[int, set[int]]) -> dict[str, Dim]:
    """The module's width attributes (names with ``dim``) equal to its head count times one head size of those
    heads, and to no other: each follows the heads, scaled by that size. xLSTM checks its heads' outputs against
    ``self.v_dim // self.config.num_heads``."""
    sizes = head_sizes.get(id(heads), set())
    found = {}
    for name, value in vars(module).items():
        if "dim" in name.lower() and type(value) is int and _is_size(name, value):
            fits = [size for size in sizes if count * size == value]
            if len(fits) == 1:
                found[name] = Scaled(heads, fits[0])
    return found


def _head_sizes(channel_hps: dict[str, dict[str, Dim]], param_dims: dict[tuple[str, int], Dim]) -> dict[int, set[int]]:
    """By id of a heads hparam, the sizes of one head in the projections scaled from it."""
    found: dict[int, set[int]] = defaultdict(set)
    for dim in [*(d for dims in channel_hps.values() for d in dims.values()), *param_dims.values()]:
        if isinstance(dim, Scaled) and isinstance(dim.base, Hparam):
            found[id(dim.base)].add(dim.scale)
    return found


def _follow_split_sizes(
    model: nn.Module, split_dims: dict[tuple[str, int], Dim], head_sizes: dict[int, set[int]]
) -> None:
    """A module splitting its channels into parts of a size it holds (``self.split_size``) gets that
    attribute set to the part's active size, so its own code splits a smaller projection right.

    Every int attribute of the module equal to the size (or one-int tuple) follows; the forward check of an exported
    model then tells whether that was enough (kinds/parameters.py).
    """
    modules = dict(model.named_modules())
    for (path, size), dim in split_dims.items():
        module = modules.get(path)
        if module is None or not any(p.is_configurable for p in dim_parts(dim)):
            continue
        if isinstance(module, DynamicModule) and kind_of(module) is not PARAMETERS:
            continue  # a layer of its own kind: its attributes are its own to keep
        names = [name for name, value in vars(module).items() if _is_size(name, value) and _holds(value, size)]
        names = names or _held_by_children(module, size)
        if _counts_heads(dim):  # a small model's rotary width may equal its head count too
            names = [name for name in names if "head" in name.lower()] or names
            if not any("." not in name and "head" in name.lower() for name in names):  # no count of its own:
                held = _config_head_counts(module, size)  # xLSTM views by ``self.config.num_heads``
                names += held
                if held:
                    PARAMETERS.attach_parameters(module, {}, _merged_widths(module, size, dim, head_sizes))
        if names:
            PARAMETERS.attach_parameters(module, {}, {name: dim for name in names})


def _follow_layer_lists(model: nn.Module) -> None:
    """A module holding a stack of blocks with a depth, and a config with per-layer lists as long as the
    stack (names with ``layer``: ``layer_types``), gets those lists cut to the kept blocks' entries in its
    forward and on export: Ergo zips ``config.layer_types`` with its layers, strictly. The forward
    check of an exported model then tells whether that was enough."""
    for module in list(model.modules()):
        config = getattr(module, "config", None)
        if not hasattr(config, "__dict__") or (isinstance(module, DynamicModule) and kind_of(module) is not PARAMETERS):
            continue  # a config held as a dict has no per-layer lists of this kind
        for path, stack in module.named_children():
            if not isinstance(stack, DynamicModuleList):
                continue
            lists = {
                f"config.{name}": path
                for name, value in vars(config).items()
                if "layer" in name and isinstance(value, (list, tuple)) and len(value) == len(stack)
            }
            if lists:
                PARAMETERS.attach_parameters(module, {})
                module.attach_per_block(lists)


def _slice_inputs(model: nn.Module, trace: TraceResult, head_hps: list[Hparam], dummy_input: tuple) -> None:
    """An attention handed a tensor of a row per head (ALiBi's bias) slices it with its heads
    (``space/sliced_inputs.py``)."""
    if not trace.constants_along:
        return
    for attention, inputs in input_slices(model, trace, heads_by_root(trace, head_hps), dummy_input).items():
        module = model.get_submodule(attention)
        if isinstance(module, DynamicModule) and kind_of(module) is not PARAMETERS:
            continue  # a layer of its own kind runs its own attention
        PARAMETERS.attach_parameters(module, {})
        module.attach_inputs(inputs)


def _share_parallel_depths(
    model: nn.Module,
    modules: list[tuple[str, nn.Module]],
    trace: TraceResult,
    rules: dict[str, Any],
    layer_hps: dict[str, Any],
) -> list[tuple[list[str], Hparam]]:
    """Block lists a loop indexes together (``space/parallel_stacks.py``) get one depth in ``layer_hps``,
    none where their layers cannot be dropped; returns the groups that got one.

    Groups are found among all of a holder's lists, converted or not: a group with a list the rules leave
    out (``"*.ffns": None``) would index that one by block number and the others by kept position, pairing
    the parts of different layers, so it gets no depth.
    """
    converted = {name for name, _ in modules}
    lists = [(name, module) for name, module in model.named_modules() if name and type(module) is nn.ModuleList]
    order = {node: position for position, node in enumerate(trace.graph.nodes)}
    shared = []
    for names in parallel_groups(lists, trace, order):
        first = dict(lists)[names[0]]
        if not converted.issuperset(names):
            layer_hps.update((name, None) for name in names if name in converted)
            continue
        min_depth = (settings_for(rules, names[0], first) or {}).get("min_depth", 1)
        hp = shared_depth(names, len(first), trace, order, min_depth)
        layer_hps.update(dict.fromkeys(names, hp))
        if hp is not None:
            shared.append((names, hp))
    return shared


def _index_parallel_lists(model: nn.Module, groups: list[tuple[list[str], Hparam]]) -> None:
    """Parallel lists are indexed by position among their kept blocks, and their holder's layer count
    (``n_layers``) follows their depth, so its loop runs the kept layers."""
    for names, hp in groups:
        for name in names:
            model.get_submodule(name)._by_position = True
        holder = model.get_submodule(names[0].rpartition(".")[0])
        if isinstance(holder, DynamicModule) and kind_of(holder) is not PARAMETERS:
            continue
        length = len(model.get_submodule(names[0]))
        counts = [
            n for n, value in vars(holder).items() if "layer" in n.lower() and _is_size(n, value) and value == length
        ]
        if counts:
            PARAMETERS.attach_parameters(holder, {}, dict.fromkeys(counts, hp))


def _held_by_children(module: nn.Module, size: int) -> list[str]:
    """``child.attr`` for each size attribute of a direct child equal to ``size``: Ergo's router views its input
    by ``self.linear.in_features`` before calling that layer. A child that is a layer of its own kind keeps
    its attributes."""
    return [
        f"{child_name}.{name}"
        for child_name, child in module.named_children()
        if not (isinstance(child, DynamicModule) and kind_of(child) is not PARAMETERS)
        for name, value in vars(child).items()
        if _is_size(name, value) and _holds(value, size)
    ]


def _counts_heads(dim: Dim) -> bool:
    """Whether ``dim`` is a number of heads (not a width): a grouped count, or an hparam of heads."""
    return isinstance(dim, Grouped) or (isinstance(dim, Hparam) and "heads" in dim.name)


def _follow_query_groups(model: nn.Module, per_group: list[tuple[str, int, Hparam]]) -> None:
    """An attention repeating its keys and values per group by a count it holds (Hugging Face's
    ``num_key_value_groups``) gets that count set to the query heads each group keeps.

    Among the int attributes equal to the count as built, those named for groups are taken when
    there are any (a key/value head count may equal it too), else all; the forward check of the
    exported model then tells whether that was enough.
    """
    modules = dict(model.named_modules())
    for attention, count, hp in per_group:
        module = modules.get(attention)
        if module is None or (isinstance(module, DynamicModule) and kind_of(module) is not PARAMETERS):
            continue
        names = [name for name, value in vars(module).items() if _is_size(name, value) and value == count]
        names = [name for name in names if "group" in name.lower()] or names
        if names:
            PARAMETERS.attach_parameters(module, {}, {name: hp for name in names})


def _follow_head_counts(model: nn.Module, counts: list[tuple[str, int, Dim]]) -> None:
    """An attention computing sizes from the head counts it holds gets them set to the heads kept.

    Phi-3 slices q, k and v out of one projection at ``config.num_attention_heads * head_dim``
    and ``num_key_value_heads * head_dim``. The attention's int attributes named for heads that
    equal a count as built follow it, and so do those of its ``config``, which all layers share:
    the attention gets a view of it holding those counts apart (``space/shared_config.py``), so
    each layer's count follows its own hparams. The forward check of the exported model then
    tells whether that was enough.
    """
    modules = dict(model.named_modules())
    for attention, count, dim in counts:
        module = modules.get(attention)
        if module is None or (isinstance(module, DynamicModule) and kind_of(module) is not PARAMETERS):
            continue
        names = [n for n, value in vars(module).items() if _is_head_count(n, value, count)]
        following = dict.fromkeys([*names, *_config_head_counts(module, count)], dim)
        if following:
            PARAMETERS.attach_parameters(module, {}, following)


def _config_head_counts(module: nn.Module, count: int) -> list[str]:
    """``config.<name>`` for each head count of the module's ``config`` equal to ``count``. All layers share
    the config: the module gets a view of it holding those counts apart (``space/shared_config.py``), so
    each layer's count follows its own hparams."""
    config = vars(module).get("config")
    shared = vars(config)["_shared"] if isinstance(config, LayerConfigView) else config
    if not hasattr(shared, "__dict__"):
        return []  # none, or a config held as a dict
    held = [name for name, value in vars(shared).items() if _is_head_count(name, value, count)]
    if held and config is shared:
        module.config = LayerConfigView(shared, {name: getattr(shared, name) for name in held})
    elif held:
        vars(config).update({name: getattr(shared, name) for name in held if name not in vars(config)})
    return [f"config.{name}" for name in held]


def _is_head_count(name: str, value: Any, count: int) -> bool:
    return "heads" in name.lower() and type(value) is int and value == count


def _is_size(name: str, value: Any) -> bool:
    """An int, or a tuple of ints all 1 but one (a layer norm's ``normalized_shape``, timm's ``Scale.shape``
    of ``(dim, 1, 1)``), that is not an index or an id (Hugging Face's ``layer_idx``): the attributes
    that may follow a dim."""
    if name.lower().endswith(("idx", "index", "_id", "ids")):
        return False
    if type(value) is tuple and value and all(type(v) is int for v in value):
        return len(value) == 1 or sum(v != 1 for v in value) == 1
    return type(value) is int


def _holds(value: int | tuple[int, ...], size: int) -> bool:
    """Whether a size attribute (``_is_size``) is ``size``: the int, or the tuple's one entry other than 1."""
    if isinstance(value, tuple):
        return [v for v in value if v != 1] == [size] or value == (size,)
    return value == size


def _freeze(hp: Hparam, why: str, reasons: dict[str, str]) -> None:
    """Keep ``hp`` at its full size from now on."""
    if hp.is_configurable:
        hp.choices, hp.active = (hp.max,), hp.max
        reasons[hp.name] = why


def _keep_as_recorded(
    entries: list[tuple[str, Hparam]], recorded: dict[str, list[int]], reasons: dict[str, str]
) -> None:
    """Keep at full size the configurable hparams a recorded conversion kept there (``space/shrink_check.py``):
    those it lists with their largest choice alone, and those it does not list (a record holds the
    searchable hparams only)."""
    for _, hp in entries:
        if hp.is_configurable and list(recorded.get(hp.name, [hp.max])) == [hp.max]:
            _freeze(hp, f"the model's forward fails with {hp.min} (as recorded when it was converted)", reasons)


def _channel_hparams(
    modules: list[tuple[str, nn.Module]],
    trace: TraceResult,
    rules: dict[str, Any],
    reasons: dict[str, str],
    order: dict[str, int],
) -> tuple[
    dict[str, dict[str, Dim]],
    dict[str, tuple[int, Dim]],
    dict[tuple[str, int], Dim],
    list[Hparam],
    list[tuple[str, int, Hparam]],
    list[tuple[str, int, Dim]],
]:
    """One hparam per channel group, shared by every slot of the group; why fixed ones are fixed goes in reasons.

    A layer reading a concatenation has one slot per segment and gets a ``Segments`` of their hparams.
    A group split into heads is a ``Scaled`` of its head group, whose hparam counts heads. The query
    heads of grouped-query attention are ``Grouped``: key/value groups times the query heads kept
    in each, a second hparam (when it has a single choice they stay whole groups, a ``Scaled`` of
    the key/value heads, as conversions before it made them). Returns the dims of layer slots, the
    dims of parameters read directly (by path, with their channel dim), the dims of splits into
    parts (by module path and part size), the head hparams, (attention, query heads per group as
    built, hparam) of each searchable per-group count, and (attention, count as built, dim) of the
    key/value heads and the query heads of each grouped attention.
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

    params: dict[tuple, list[tuple[str, int]]] = defaultdict(list)  # group -> (parameter, dim) it sizes
    for path, slots in trace.param_slots.items():
        for axis, element in slots.items():
            params[groups.find(element)].append((path, axis))
    # a weight producing interleaved parts (a scaled copy of the part group) produces the parts; a parameter
    # read in segments (TraceResult.param_segments) names no group: each segment's has its producer elsewhere
    for root, found in list(params.items()):
        scaled = groups.scaled_of(root)
        if scaled is not None and scaled[0] not in members:
            params[scaled[0]].extend(p for p in found if p in trace.weight_outputs and p not in params[scaled[0]])
    # a chunked group is copies of its part group: the part gets the hparam, the whole its runs
    repeats = {root: groups.repeat_of(root) for root in {*members, *params} if groups.repeat_of(root)}
    whole_of = {groups.find(part): (root, copies) for root, (part, copies) in repeats.items()}
    for root in [r for r in repeats if r in whole_of]:  # a chunk of a chunk, joined after the fact
        for element in (root, repeats[root][0]):
            groups.freeze(element, "a chunk of channels that are themselves chunked")
    # a split into unequal sizes: each piece its own group, named after the whole's producer
    piece_of = {
        groups.find(piece): (root, index)
        for root in {groups.find(e) for e in groups.elements()}
        for index, piece in enumerate(groups.pieces_of(root) or ())
    }
    heads: dict[tuple, tuple[str, bool]] = {}
    for element, attention, grouped, _ in trace.head_groups:
        scaled = groups.scaled_of(element)  # keys repeated for grouped-query attention: whole groups
        heads[scaled[0] if scaled else groups.find(element)] = (attention, grouped or scaled is not None)
    hparams: dict[tuple, Hparam] = {}
    per_group: dict[tuple, tuple[str, int, Hparam]] = {}  # query heads root -> (attention, count, its hparam)
    for element, attention, count in trace.query_groups:
        root = groups.find(element)
        chain = groups.scaled_chain(root)
        if root not in per_group and len(chain) == 1 and chain[0][0] in heads:  # whole groups of the kv heads
            per_group[root] = (attention, count, _per_group_hparam(root, attention, count, trace, rules, reasons))

    def hparam_of(root: tuple) -> Hparam:
        if root not in hparams:
            if root in heads:
                hparams[root] = _head_hparam(root, *heads[root], trace, rules, reasons)
            elif members.get(root) or params.get(root) or root in whole_of or root in piece_of:
                found = _group_hparam(
                    root, members, params, whole_of, piece_of, trace, rules, reasons, segment_counts, order
                )
                hparams[root] = found
            else:
                why = groups.frozen_reason(root) or "no layer produces or reads these channels"
                hparams[root] = _fixed(Hparam(f"{root[-1]}.channels", (groups.size(root),)), why, reasons)
        return hparams[root]

    def dim_of(root: tuple) -> Dim:
        if root in repeats:
            part, copies = repeats[root]
            return Segments([dim_of(groups.find(part))] * copies)  # a part may be split into heads
        if (pieces := groups.pieces_of(root)) is not None:
            return Segments([dim_of(groups.find(piece)) for piece in pieces])
        for base, scale in [(root, 1), *groups.scaled_chain(root)]:  # through grouped query heads
            if base in per_group and per_group[base][2].is_configurable:
                queries = Grouped(hparam_of(groups.scaled_chain(base)[0][0]), per_group[base][2])
                return queries if scale == 1 else Scaled(queries, scale)
        scaled = groups.scaled_of(root)
        if scaled is not None:  # heads of a width; heads split into pieces (Falcon's q, k and v heads) by piece
            pieces = groups.pieces_of(scaled[0]) is not None
            return Scaled(dim_of(scaled[0]) if pieces else hparam_of(scaled[0]), scaled[1])
        return hparam_of(root)

    parts: dict[tuple[str, str], dict[int, Dim]] = defaultdict(dict)
    for root, slots in members.items():
        dim = dim_of(root)
        for member_name, _, member_attr, member_index in slots:
            parts[(member_name, member_attr)][member_index] = dim
    param_dims = {
        (path, axis): dim_of(groups.find(element))
        for path, slots in trace.param_slots.items()
        for axis, element in slots.items()
    }
    param_dims.update(
        ((path, axis), Segments([dim_of(groups.find(e)) for e in elements]))
        for path, by_axis in trace.param_segments.items()
        for axis, elements in by_axis.items()
    )
    split_dims = {(path, size): dim_of(groups.find(part)) for path, size, part in trace.split_sizes}

    found: dict[str, dict[str, Dim]] = defaultdict(dict)
    for (name, attr), by_index in parts.items():
        if len(by_index) == 1 and (name, attr) not in trace.slot_scales:
            found[name][attr] = by_index[0]  # one group: its hparam, heads (Scaled) or equal parts (Segments)
            continue
        ordered = [p for i in range(len(by_index)) for p in dim_parts(by_index[i])]
        found[name][attr] = ordered[0] if len(ordered) == 1 else Segments(ordered)
        if (name, attr) in trace.slot_scales:  # a linear layer reading flattened maps
            found[name][attr] = Scaled(found[name][attr], trace.slot_scales[(name, attr)])
    head_hps = [hparams[root] for root in heads if root in hparams] + [hp for _, _, hp in per_group.values()]
    follows = [(attention, count, hp) for attention, count, hp in per_group.values() if hp.is_configurable]
    head_counts: list[tuple[str, int, Dim]] = []  # (attention, key/value heads or query heads as built, its dim)
    for root, (attention, count, per_group_hp) in per_group.items():
        groups_root = groups.scaled_chain(root)[0][0]
        kv = hparams.get(groups_root)
        if kv is not None and (kv.is_configurable or per_group_hp.is_configurable):
            head_counts.append((attention, kv.max, kv))
            head_counts.append((attention, kv.max * count, Grouped(kv, per_group_hp)))
    return found, param_dims, split_dims, head_hps, follows, head_counts


def _head_hparam(
    root: tuple, attention: str, grouped: bool, trace: TraceResult, rules: dict[str, Any], reasons: dict[str, str]
) -> Hparam:
    """The number of heads (or of key/value groups) of one attention, named after the module running it."""
    settings = settings_matching(rules.get(HEADS_RULE), attention)
    hp = HEADS.head_hparam(attention, trace.groups.size(root), grouped, settings or {})
    return _heads_fixed_where_frozen(hp, root, attention, settings, trace, reasons, "heads")


def _per_group_hparam(
    root: tuple, attention: str, count: int, trace: TraceResult, rules: dict[str, Any], reasons: dict[str, str]
) -> Hparam:
    """The query heads each key/value group of one attention keeps (``count`` as built).

    Fixed where the heads are (a frozen projection or attention output), or where the rules
    exclude the attention.
    """
    settings = settings_matching(rules.get(HEADS_RULE), attention)
    hp = HEADS.per_group_hparam(attention, count, settings or {})
    return _heads_fixed_where_frozen(hp, root, attention, settings, trace, reasons, "query heads per group")


def _heads_fixed_where_frozen(
    hp: Hparam,
    root: tuple,
    attention: str,
    settings: dict[str, Any] | None,
    trace: TraceResult,
    reasons: dict[str, str],
    noun: str,
) -> Hparam:
    """``hp`` with its one largest choice where the heads are frozen or the rules exclude the attention."""
    why = trace.groups.frozen_reason(root)
    if settings is None:
        why = f"{attention} is excluded by the {HEADS_RULE} rules"
    if why is not None:
        hp = Hparam(hp.name, (hp.max,))
    return _fixed(hp, why or f"every ratio rounds to {hp.max} {noun}", reasons)


def _group_hparam(
    root: tuple,
    members: dict[tuple, list[tuple[str, nn.Module, str, int]]],
    params: dict[tuple, list[str]],
    whole_of: dict[tuple, tuple[tuple, int]],
    piece_of: dict[tuple, tuple[tuple, int]],
    trace: TraceResult,
    rules: dict[str, Any],
    reasons: dict[str, str],
    segment_counts: dict[tuple[str, str], int],
    order: dict[str, int],
) -> Hparam:
    """The hparam of one channel group, named after the layer producing it; why it is fixed goes in reasons.

    The part group of a chunked tensor takes its choices from the whole (divided by the chunk
    count) and is named after the whole's producer, ``conv.out_channels[0]``; a piece of a split
    into unequal sizes is named after the whole's producer and its index, ``qkv.out_features[1]``. A parameter read
    directly (an embedding table, a class token) produces channels too; the first producer in
    the model's module order names the group (``model.embed_tokens.weight.shape[1]``). Named
    after a parameter, it is the hidden width, whose choices come from the ``hidden_size`` rules
    (kinds/hidden.py); rules saved before that key existed give it those of its first layer. Named
    after a weight the model's own code applies (``TraceResult.weight_outputs``: an expert's 3-d
    weight, Falcon's ``x @ self.weight.T``), it is that layer's output width, with the ``nn.Linear``
    rules of the module holding the weight.
    """
    groups = trace.groups
    copies = 1
    source = root
    if root in whole_of:
        source, copies = whole_of[root]
    piece = piece_of.get(root)
    if piece is not None and members.get(piece[0]):  # named after the layer producing the whole, if one does
        source = piece[0]
    else:
        piece = None
    slots = members.get(source, [])
    size = groups.size(root if piece is not None else source)
    why = groups.frozen_reason(root) or groups.frozen_reason(source)
    producers = [(order.get(s[0], 0), f"{s[0]}.{convertible_kind(s[1]).slot_attr(s[1], 'out')}", s) for s in slots
                 if s[2] == "out"]  # fmt: skip
    owners: dict[str, str] = {}  # producer name of a weight applied as a linear layer would be -> its module
    for path, axis in params.get(source, []):
        owner = path.rpartition(".")[0]
        producers.append((order.get(owner, 0), f"{path}.shape[{axis}]", None))
        if (path, axis) in trace.weight_outputs:
            owners[producers[-1][1]] = owner
    if not slots and not owners:
        name = f"{params[source][0][0]}.shape" if params.get(source) else f"{root[-1]}.channels"
        return _fixed(Hparam(name, (size,)), why or "no searchable layer reads it", reasons)
    first = None
    if slots:
        name, module, attr, index = next((s for s in slots if s[2] == "out"), slots[0])
        suffix = f"[{index}]" if segment_counts[(name, attr)] > 1 or copies > 1 else ""
        if piece is not None:
            suffix = f"[{piece[1]}]"
        kind, settings = convertible_kind(module), settings_for(rules, name, module)
        hp_name = f"{name}.{kind.slot_attr(module, attr)}{suffix}"
        if producers:
            first = min(producers, key=lambda p: p[0])
            hp_name = first[1] + suffix if first[2] is not None else first[1]
        elif why is None:
            why = "no searchable layer produces these channels"
    else:
        first = min((p for p in producers if p[1] in owners), key=lambda p: p[:2])
        hp_name = first[1] + ("[0]" if copies > 1 else "")
    if first is not None and first[1] in owners:  # a weight the model's code applies: a linear layer's output
        kind = LINEAR
        settings = settings_matching(rules.get(LINEAR.rule_key(qualified_name(nn.Linear))), owners[first[1]])
        if settings is None:
            why = why or f"{owners[first[1]]}: its weights are excluded by the nn.Linear rules"
    elif first is not None and first[2] is None and HIDDEN_RULE in rules:  # the hidden width: a parameter produces it
        settings, kind = settings_matching(rules[HIDDEN_RULE], hp_name), HIDDEN
        if settings is None:
            why = why or f"{hp_name} is excluded by the {HIDDEN_RULE} rules"
    if why is not None:
        return _fixed(Hparam(hp_name, (size // copies,)), why, reasons)
    ratios, divisor = kind.channel_settings(settings)
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


def costs_at_input(model: nn.Module, dummy_input: tuple[torch.Tensor, ...]) -> None:
    """Recompile a converted model's costs (and recorded shapes) for inputs of another shape.

    Flops, the KV cache and the latency table's layer shapes depend on the input's size. The
    model at its max subnet is exported to plain layers and converted again with the same rules
    on ``dummy_input``; that space must have the same hparams and choices (a depth can depend on
    the input size), and its cost terms and shapes replace the model's. Costs then follow the
    last input given, as with ModelOpt, which takes the dummy input at profile and search time.
    """
    space = get_space(model)
    if [tuple(t.shape[1:]) for t in dummy_input] == [tuple(s[1:]) for s in space.input_shapes]:
        return
    mode_name, rules = space.modes[-1]
    again = get_space(convert_model(export_max(model), mode_name, rules, dummy_input))
    mine = {name: hp.choices for name, hp in space.hparams.items()}
    theirs = {name: hp.choices for name, hp in again.hparams.items()}
    if mine != theirs:
        differ = sorted(set(mine.items()) ^ set(theirs.items()))[0][0]
        shape = tuple(dummy_input[0].shape)
        raise UserInputError(f"at input shape {shape} the search space differs ({differ}): convert with that input")
    space.cost_terms, space.cost_unmodeled = again.cost_terms, again.cost_unmodeled
    space.input_shapes, space.input_dtypes, space.shapes = again.input_shapes, again.input_dtypes, again.shapes
    space.input_values = again.input_values
    space._cost_model = None
