"""Compile a converted model's cost into terms over its hparams, once, at convert time.

Each term is ``coef * prod(value(h) ** power) * [depth(d) > index for each condition]``. Summing
the terms of a subnet config gives its flops (multiply-accumulates per input sample, counted the
way fvcore counts the exported model, with batch norm folded away) and its parameter count,
without touching the model again. Fixed hparams fold into the coefficient.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch.nn.functional as F
from torch import fx, nn

from nascli.cost.fvcore_count import fvcore_flops
from nascli.space.hparam import Grouped, Hparam, Scaled, Segments, dim_parts
from nascli.space.kinds import DynamicModule, kind_of
from nascli.space.trace import ARGS, TraceResult, node_shape
from nascli.space.trace_aten import aten_name, conv_grouping

# Operations whose flops fvcore counts but this cost model does not model yet: reported, never silent.
_UNMODELED_MODULES = (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer, nn.Bilinear)
_UNMODELED_FUNCTIONS = {"matmul", "bmm", "einsum", "mm", "grid_sample", "linear", "conv2d",
                        "conv1d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
                        "addmm"}  # fmt: skip


@dataclass(frozen=True)
class CostTerm:
    kind: str  # "flops" or "params"
    coef: int
    factors: tuple[tuple[str, int], ...]  # (hparam name, power)
    conditions: tuple[tuple[str, int], ...]  # (depth hparam name, block index): active if depth > index


class TermBuilder:
    """Collects the terms of one model; layer kinds add theirs through ``add`` (see nascli/space/kinds)."""

    def __init__(self, model: nn.Module, trace: TraceResult, slot_hps: dict, layer_hps: dict, batch: int):
        self.modules = dict(model.named_modules())
        self.trace = trace
        self.slot_hps = slot_hps
        self.layer_hps = layer_hps
        self.batch = batch  # of the traced input: a per-sample count divides by it, as fvcore's reference does
        self.terms: list[CostTerm] = []
        self.unmodeled: list[str] = []
        self.root_hp = _group_dims(trace, slot_hps)
        # gated submodule path -> (hparam, index): it runs while the hparam exceeds the index
        self.blocks = gated_blocks(self.modules)

    def add(self, kind: str, coef: int, hps: list[tuple[Any, int]], path: list[str]) -> None:
        """One term per product; a factor that is a sum (segments, or a list of parts) gives one term per part."""
        for i, (hp, power) in enumerate(hps):
            if isinstance(hp, Scaled):  # entries per channel fold into the coefficient
                self.add(kind, coef * hp.scale**power, [*hps[:i], (hp.base, power), *hps[i + 1 :]], path)
                return
            if isinstance(hp, Grouped):  # query heads: key/value groups times heads per group
                self.add(kind, coef, [*hps[:i], (hp.groups, power), (hp.per_group, power), *hps[i + 1 :]], path)
                return
            if isinstance(hp, (Segments, list)):
                for part in hp.parts if isinstance(hp, Segments) else hp:
                    self.add(kind, coef, [*hps[:i], (part, power), *hps[i + 1 :]], path)
                return
        factors = []
        for hp, power in hps:
            if isinstance(hp, Hparam) and hp.is_configurable:
                factors.append((hp.name, power))
            else:
                coef *= (hp.max if isinstance(hp, Hparam) else hp) ** power
        # a depth kept full (its forward check failed: Ergo's) runs every block: no condition
        gates = [self.blocks[p] for p in path if p in self.blocks and self.blocks[p][0].is_configurable]
        conditions = tuple(sorted({(hp.name, index) for hp, index in gates}))
        if coef:
            self.terms.append(CostTerm(kind, int(coef), tuple(factors), conditions))

    def shape(self, node: Any) -> tuple[int, ...] | None:
        """The recorded shape of a tensor-valued node (None for anything else)."""
        return node_shape(node)

    def channels_of(self, node: fx.Node) -> list[Hparam | int]:
        """Per channel segment of a tensor: the hparam sizing it, or its fixed size."""
        return [self._dim_of(e) for e in self.trace.channels[node][0]]

    def _dim_of(self, element: tuple) -> Any:
        """A group's hparam; a group scaled from another (heads) is that hparam scaled, the nearest one
        sized (grouped query heads before the key/value heads they repeat); else its fixed size."""
        groups = self.trace.groups
        root = groups.find(element)
        if root in self.root_hp:
            return self.root_hp[root]
        for base_root, scale in groups.scaled_chain(root):
            base = self.root_hp.get(base_root)
            if isinstance(base, (Hparam, Grouped)):
                return Scaled(base, scale)
        return groups.size(root)

    # -- per module ----------------------------------------------------------------------------
    def module_params(self, name: str, module: nn.Module) -> None:
        path = ancestors(name)
        dims = self.slot_hps.get(name)
        if dims:
            kind_of(module).params(self, module, dims, self.layer_hps.get(name), path)
        else:
            self.add("params", sum(p.numel() for p in module.parameters(recurse=False)), [], path)

    # -- per graph node ------------------------------------------------------------------------
    def node_flops(self, node: fx.Node) -> None:
        """Flops of one graph node, if it runs in inference (auxiliary training heads do not)."""
        path = [key.split("@")[0] for key in node.meta.get("nn_module_stack", {})]
        if node.op == "call_module":
            path.append(str(node.target))
        if any(p not in self.trace.inference_modules for p in path):
            return
        if node.op == "call_module":
            module = self.modules[str(node.target)]
            self.module_flops(node, str(node.target), module, path)
        elif node.op in ("call_function", "call_method"):
            self.function_flops(node, path)

    def module_flops(self, node: fx.Node, name: str, module: nn.Module, path: list[str]) -> None:
        kind = kind_of(module)
        if name in self.trace.untraceable:
            if node_shape(node) is not None:
                self.add("flops", fvcore_flops(module, node.meta[ARGS]), [], path)
        elif kind is not None:
            kind.flops(self, node, module, self.slot_hps.get(name), self.layer_hps.get(name), path)
        elif node_shape(node) is None:
            return
        elif isinstance(module, nn.AdaptiveAvgPool2d) and node_shape(node.args[0]) is not None:
            self.pool_flops(node.args[0], node_shape(node.args[0]), path)
        elif isinstance(module, nn.Upsample):
            self.upsample_flops(node, module.mode, path)
        elif isinstance(module, _UNMODELED_MODULES):
            self.unmodeled.append(f"{name} ({type(module).__name__})")

    def function_flops(self, node: fx.Node, path: list[str]) -> None:
        target = node.target
        if target is F.adaptive_avg_pool2d and node_shape(node.args[0]) is not None:
            self.pool_flops(node.args[0], node_shape(node.args[0]), path)
        elif target in (F.layer_norm, F.group_norm, F.instance_norm) and node_shape(node.args[0]) is not None:
            at = 3 if target is F.instance_norm else 2  # instance_norm(input, running_mean, running_var, weight)
            weight = node.kwargs.get("weight", node.args[at] if len(node.args) > at else None)
            self.norm_flops(node.args[0], node_shape(node.args[0]), weight is not None, path)
        elif target is F.interpolate:
            self.upsample_flops(node, node.kwargs.get("mode", node.args[3] if len(node.args) > 3 else "nearest"), path)
        elif (name := aten_name(node)) is not None:
            self.aten_flops(node, name, path)
        else:
            name = target if isinstance(target, str) else getattr(target, "__name__", "")
            if name in _UNMODELED_FUNCTIONS:
                self.unmodeled.append(f"{node.name} ({name})")

    def aten_flops(self, node: fx.Node, name: str, path: list[str]) -> None:
        """An operation of a graph from torch.export (space/export_graph.py), as fvcore counts it."""
        if name in ("matmul", "bmm") and self._applies_weight(node) and node_shape(node.args[0]) is not None:
            self.linear_flops(node, node.args[0], node_shape(node.args[0]), path)  # ``x @ self.weight.T``
        elif name in ("matmul", "bmm") and node_shape(node.args[0]) is not None and node_shape(node.args[1]):
            self.matmul_flops(node, path)
        elif name == "linear" and node in self.trace.channels and node_shape(node.args[0]) is not None:
            x, x_shape = node.args[0], node_shape(node.args[0])
            if x in self.trace.channels and self.trace.channels[x][1] != len(x_shape) - 1:
                # channels along a dim the product keeps: every entry of x times the weight's rows
                rows = node_shape(node.args[1])[0]
                per_channel = math.prod(x_shape) // x_shape[self.trace.channels[x][1]] * rows // self.batch
                self.add("flops", per_channel, [(self.channels_of(x), 1)], path)
            else:
                self.linear_flops(node, x, x_shape, path)
        elif name in ("conv1d", "conv2d") and node in self.trace.channels and node.args[1] not in self.trace.channels:
            self.conv_flops(node, path)
        elif name in ("layer_norm", "group_norm") and node_shape(node.args[0]) is not None:
            affine = len(node.args) > 2 and node.args[2] is not None
            self.norm_flops(node.args[0], node_shape(node.args[0]), affine, path)
        elif name == "adaptive_avg_pool2d" and node_shape(node.args[0]) is not None:
            self.pool_flops(node.args[0], node_shape(node.args[0]), path)
        elif name in ("upsample_bilinear2d", "upsample_nearest2d"):
            self.upsample_flops(node, name.removeprefix("upsample_").removesuffix("2d"), path)
        elif name in _UNMODELED_FUNCTIONS:
            self.unmodeled.append(f"{node.name} ({name})")

    def _applies_weight(self, node: fx.Node) -> bool:
        """``x @ self.weight.T`` (a 2-d weight) or an expert's ``bmm(x, self.weight)`` (a 3-d one) in a module's own
        code, traced as a linear layer (trace_aten.py)."""
        x, weight, rank = node.args[0], node.args[1], 3 if aten_name(node) == "bmm" else 2
        applied = node in self.trace.channels and weight not in self.trace.channels
        # channels along a dim the product keeps (per-head states times a bank of profiles) are no linear layer's
        contracted = x in self.trace.channels and self.trace.channels[x][1] == len(node_shape(x) or ()) - 1
        return applied and contracted and len(node_shape(weight) or ()) == rank

    def matmul_flops(self, node: fx.Node, path: list[str]) -> None:
        """fvcore counts every entry of the left operand times the right operand's columns. Each dim the
        channels size follows them: the left operand's batch or rows (heads), the contracted dim (a
        learned query over stacked states) and the right operand's columns (weights times values)."""
        a, b = node.args[:2]
        a_shape, b_shape = node_shape(a), node_shape(b)
        ca = self.trace.channels[a][1] if a in self.trace.channels else None
        cb = self.trace.channels[b][1] if b in self.trace.channels else None
        follow = []
        if ca is not None:
            follow.append((a, a_shape[ca]))
        elif cb == len(b_shape) - 2:
            follow.append((b, b_shape[cb]))
        if cb == len(b_shape) - 1:
            follow.append((b, b_shape[cb]))
        coef = math.prod(a_shape) * b_shape[-1] // self.batch
        for _, size in follow:
            coef //= size
        self.add("flops", coef, [(self.channels_of(tensor), 1) for tensor, _ in follow], path)

    def linear_flops(self, node: fx.Node, x: fx.Node, x_shape: tuple[int, ...], path: list[str]) -> None:
        """``F.linear`` with a module's own weight (space/trace_aten.py): fvcore counts every input entry
        times the output features; the input's channels and the output's each follow their group."""
        rows = math.prod(x_shape[:-1]) // self.batch
        inputs = self.channels_of(x) if x in self.trace.channels else [x_shape[-1]]
        self.add("flops", rows, [(inputs, 1), (self.channels_of(node), 1)], path)

    def conv_flops(self, node: fx.Node, path: list[str]) -> None:
        """A convolution with a module's own weight (space/trace_aten.py): fvcore counts the weight's entries
        times the output positions. A depthwise one's channels are its output's; a dense one's are its
        input's and its output's."""
        x, weight = node.args[0], node.args[1]
        out_shape, w_shape = node_shape(node), node_shape(weight)
        per_channel = math.prod(w_shape[2:]) * math.prod(out_shape[2:])
        grouping = conv_grouping(node, node_shape(x), w_shape)
        if grouping == "depthwise" and x in self.trace.channels:
            self.add("flops", per_channel, [(self.channels_of(node), 1)], path)
        elif grouping == "dense":
            inputs = self.channels_of(x) if x in self.trace.channels else [w_shape[1]]
            self.add("flops", per_channel, [(inputs, 1), (self.channels_of(node), 1)], path)
        else:  # grouped otherwise: the tracer keeps its channels (space/trace_aten.py), so its count is fixed
            self.add("flops", per_channel * math.prod(w_shape[:2]), [], path)

    def kv_cache(self) -> None:
        """Entries of the keys and values each attention caches per sample, at the traced sequence length.

        A cache holds the key/value heads before any repeat for grouped queries, so a group
        repeated for the queries counts once.
        """
        groups, seen = self.trace.groups, set()
        for element, attention, _, entries in self.trace.head_groups:
            if attention in seen:
                continue
            seen.add(attention)
            scaled = groups.scaled_of(element)
            heads = self.root_hp.get(scaled[0], groups.size(scaled[0])) if scaled else self._dim_of(element)
            self.add("kv_cache", 2 * entries, [(heads, 1)], ancestors(attention))

    def pool_flops(self, in_node: fx.Node, in_shape: tuple[int, ...], path: list[str]) -> None:
        """fvcore counts one operation per input element of an adaptive average pool."""
        if len(in_shape) != 4:
            return
        per_channel = math.prod(in_shape[2:])
        if in_node in self.trace.channels and self.trace.channels[in_node][1] == 1:
            self.add("flops", per_channel, [(self.channels_of(in_node), 1)], path)
        else:
            self.add("flops", math.prod(in_shape[1:]), [], path)

    def norm_flops(self, in_node: fx.Node, in_shape: tuple[int, ...], affine: bool, path: list[str]) -> None:
        """fvcore counts 5 operations per input element of an affine norm, 4 without affine."""
        per_element = 5 if affine else 4
        if in_node in self.trace.channels:
            _, dim = self.trace.channels[in_node]
            # positions per channel; a flattened tensor holds several entries per channel
            rest = math.prod(in_shape[1:]) // in_shape[dim] * self.trace.tensor_scales.get(in_node, 1)
            self.add("flops", per_element * rest, [(self.channels_of(in_node), 1)], path)
        else:
            self.add("flops", per_element * math.prod(in_shape[1:]), [], path)

    def upsample_flops(self, node: fx.Node, mode: str, path: list[str]) -> None:
        """fvcore counts 2-D nearest (1 per output element) and bilinear (4) upsampling."""
        shape = node_shape(node)
        scale = {"nearest": 1, "bilinear": 4}.get(mode)
        if shape is None or len(shape) != 4 or scale is None:
            return
        if node in self.trace.channels and self.trace.channels[node][1] == 1:
            self.add("flops", scale * math.prod(shape[2:]), [(self.channels_of(node), 1)], path)
        else:
            self.add("flops", scale * math.prod(shape[1:]), [], path)


def _group_dims(trace: TraceResult, slot_hps: dict[str, dict[str, Any]]) -> dict[tuple, Hparam | Segments]:
    """Channel group root -> what sizes it: its hparam, or the runs of its part's hparam when chunked."""
    groups, found = trace.groups, {}
    for name, hps in slot_hps.items():
        for attr, dim in hps.items():
            if attr.startswith("param:"):  # a weight's dim (Falcon's own linear layers, an expert's width)
                param, _, axis = attr.removeprefix("param:").rpartition(":")
                path = f"{name}.{param}" if name else param
                if int(axis) in trace.param_segments.get(path, {}):  # read in segments: each by its part
                    elements = trace.param_segments[path][int(axis)]
                    for element, part in zip(elements, dim.parts, strict=True):
                        found.setdefault(groups.find(element), part)
                    continue
                if int(axis) not in trace.param_slots.get(path, {}):
                    continue  # another holder of a tied tensor: the path the graph read names its groups
                root = groups.find(trace.param_slots[path][int(axis)])
                repeat = groups.repeat_of(root)
                if isinstance(dim, Hparam):
                    found.setdefault(root, dim)
                elif repeat is not None and isinstance(dim, Segments):  # gate and up halves of one weight
                    found.setdefault(root, dim)
                    found.setdefault(groups.find(repeat[0]), dim.parts[0])
                continue
            if isinstance(dim, Segments) and any(isinstance(part, Scaled) for part in dim.parts):
                found[groups.find(("slot", name, attr, 0))] = dim  # q, k and v of one projection, in heads
                continue
            if isinstance(dim, Scaled) and (name, attr) not in trace.slot_scales:
                root = groups.find(("slot", name, attr, 0))
                found[root] = dim  # a projection into or out of heads
                chain = groups.scaled_chain(root)
                if chain and isinstance(dim.base, Hparam):
                    found.setdefault(chain[-1][0], dim.base)  # the heads themselves
                elif isinstance(dim.base, Grouped):  # the query heads, in key/value groups
                    found.update({base: dim.base for base, scale in chain if scale == dim.scale})
                continue
            root = groups.find(("slot", name, attr, 0))
            if isinstance(dim, Grouped):  # one channel per query head (a per-head gate): heads in groups
                found[root] = dim
                continue
            pieces = groups.pieces_of(root)
            if pieces is not None and isinstance(dim, Segments):  # a split into unequal sizes: each piece's dim
                found[root] = dim
                found.update({groups.find(piece): part for piece, part in zip(pieces, dim.parts, strict=True)})
                continue
            parts, start, index = dim_parts(dim), 0, 0
            while start < len(parts):  # slot segments in order; a chunked one spans its runs
                root = groups.find(("slot", name, attr, index))
                repeat = groups.repeat_of(root)
                copies = repeat[1] if repeat else 1
                found[root] = parts[start] if copies == 1 else Segments(parts[start : start + copies])
                start, index = start + copies, index + 1
    return found


def gated_blocks(modules: dict[str, nn.Module]) -> dict[str, tuple[Hparam, int]]:
    """Submodule path -> (hparam, index) for every block a converted layer runs only while hparam > index."""
    found: dict[str, tuple[Hparam, int]] = {}
    for name, module in modules.items():
        if isinstance(module, DynamicModule):
            found.update(kind_of(module).gates(name, module))
    return found


def ancestors(name: str) -> list[str]:
    """Module paths from the outermost ancestor down to ``name`` itself."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def compile_cost_terms(
    model: nn.Module,
    trace: TraceResult,
    slot_hps: dict[str, dict[str, Hparam]],
    layer_hps: dict[str, Hparam | None],
    batch: int = 1,
) -> tuple[list[CostTerm], list[str]]:
    """The flops and params terms of a just converted model, and what they leave out.

    ``layer_hps``: each layer's own hparam beside its channels (a conv's kernel size, an
    attention's number of heads).
    """
    builder = TermBuilder(model, trace, slot_hps, layer_hps, batch)
    seen: set[int] = set()
    for name, module in model.named_modules():
        parent = name.rpartition(".")[0]
        if parent in slot_hps and kind_of(builder.modules[parent]).owns_children:
            continue  # counted with its parent (an attention's output projection)
        if id(module) not in seen:
            seen.add(id(module))
            builder.module_params(name, module)
    for node in trace.graph.nodes:
        builder.node_flops(node)
    builder.kv_cache()
    return builder.terms, builder.unmodeled
