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
from nascli.space.hparam import Hparam, Scaled, Segments, dim_parts
from nascli.space.rules import CONV_TRANSPOSE_TYPES, CONV_TYPES, INSTANCE_NORM_TYPES, LINEAR_TYPES, NORM_TYPES
from nascli.space.trace import ARGS, TraceResult, node_shape

_NORMS = (nn.LayerNorm, nn.GroupNorm, *INSTANCE_NORM_TYPES)
# Operations whose flops fvcore counts but this cost model does not model yet: reported, never silent.
_UNMODELED_MODULES = (
    nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.TransformerDecoderLayer, nn.Bilinear,
)  # fmt: skip
_UNMODELED_FUNCTIONS = {"matmul", "bmm", "einsum", "mm", "grid_sample", "linear", "conv2d",
                        "conv1d", "conv3d", "addmm"}  # fmt: skip


@dataclass(frozen=True)
class CostTerm:
    kind: str  # "flops" or "params"
    coef: int
    factors: tuple[tuple[str, int], ...]  # (hparam name, power)
    conditions: tuple[tuple[str, int], ...]  # (depth hparam name, block index): active if depth > index


class _Builder:
    def __init__(
        self, model: nn.Module, trace: TraceResult, slot_hps: dict, layer_hps: dict, depth_hps: dict, batch: int
    ):
        self.modules = dict(model.named_modules())
        self.trace = trace
        self.slot_hps = slot_hps
        self.layer_hps = layer_hps
        self.batch = batch  # of the traced input: a per-sample count divides by it, as fvcore's reference does
        self.terms: list[CostTerm] = []
        self.unmodeled: list[str] = []
        self.root_hp = _group_dims(trace, slot_hps)
        # block path -> (depth hparam, index of the block in its stage)
        self.blocks = block_indices(self.modules, depth_hps)

    def add(self, kind: str, coef: int, hps: list[tuple[Any, int]], path: list[str]) -> None:
        """One term per product; a factor that is a sum (segments, or a list of parts) gives one term per part."""
        for i, (hp, power) in enumerate(hps):
            if isinstance(hp, Scaled):  # entries per channel fold into the coefficient
                self.add(kind, coef * hp.scale**power, [*hps[:i], (hp.base, power), *hps[i + 1 :]], path)
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
        conditions = tuple(sorted({(self.blocks[p][0].name, self.blocks[p][1]) for p in path if p in self.blocks}))
        if coef:
            self.terms.append(CostTerm(kind, int(coef), tuple(factors), conditions))

    def channels_of(self, node: fx.Node) -> list[Hparam | int]:
        """Per channel segment of a tensor: the hparam sizing it, or its fixed size."""
        groups = self.trace.groups
        return [self.root_hp.get(groups.find(e), groups.size(e)) for e in self.trace.channels[node][0]]

    # -- per module ----------------------------------------------------------------------------
    def module_params(self, name: str, module: nn.Module) -> None:
        path = ancestors(name)
        hps = self.slot_hps.get(name)
        if hps and isinstance(module, CONV_TYPES):
            kernel = self.layer_hps.get(name) or module.kernel_size[0]
            nd = len(module.kernel_size)
            per_group = module.in_channels // module.groups
            kernel_factor = (
                [(kernel, nd)] if len(set(module.kernel_size)) == 1 else [(math.prod(module.kernel_size), 1)]
            )
            if module.groups == 1:
                self.add("params", 1, [(hps["out"], 1), (hps["in"], 1), *kernel_factor], path)
            else:
                self.add("params", per_group, [(hps["out"], 1), *kernel_factor], path)
            if module.bias is not None:
                self.add("params", 1, [(hps["out"], 1)], path)
        elif hps and isinstance(module, LINEAR_TYPES):
            self.add("params", 1, [(hps["out"], 1), (hps["in"], 1)], path)
            if module.bias is not None:
                self.add("params", 1, [(hps["out"], 1)], path)
        elif hps and isinstance(module, CONV_TRANSPOSE_TYPES):
            kernel = math.prod(module.kernel_size)
            per_group = module.out_channels // module.groups
            if module.groups == 1:
                self.add("params", kernel, [(hps["in"], 1), (hps["out"], 1)], path)
            else:
                self.add("params", kernel * per_group, [(hps["in"], 1)], path)
            if module.bias is not None:
                self.add("params", 1, [(hps["out"], 1)], path)
        elif hps and isinstance(module, nn.MultiheadAttention):
            embed, heads = hps["in"], self.layer_hps.get(name) or module.num_heads
            biases = module.in_proj_bias is not None
            self.add("params", 4 * module.head_dim, [(embed, 1), (heads, 1)], path)  # q, k, v and out weights
            self.add("params", 3 * module.head_dim * biases, [(heads, 1)], path)
            self.add("params", int(module.out_proj.bias is not None), [(embed, 1)], path)
        elif hps and isinstance(module, NORM_TYPES):
            affine = sum(getattr(module, p, None) is not None for p in ("weight", "bias"))
            self.add("params", affine, [(hps["features"], 1)], path)
        else:
            own = sum(p.numel() for p in module.parameters(recurse=False))
            self.add("params", own, [], path)

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
        out_shape = node_shape(node)
        in_node = node.args[0] if node.args else None
        in_shape = node_shape(in_node)
        if isinstance(module, nn.MultiheadAttention):  # its output is a tuple: no shape of its own
            if node.kwargs.get("need_weights") is False:
                self.attention_flops(node, name, module, path)
            else:
                self.unmodeled.append(f"{name} (MultiheadAttention returning its weights)")
            return
        if out_shape is None:
            return
        hps = self.slot_hps.get(name)
        if name in self.trace.untraceable:
            self.add("flops", fvcore_flops(module, node.meta[ARGS]), [], path)
        elif isinstance(module, CONV_TYPES):
            spatial = math.prod(out_shape[2:])
            kernel = (self.layer_hps.get(name) or module.kernel_size[0]) if hps else module.kernel_size[0]
            nd = len(module.kernel_size)
            kernel_factor = (
                [(kernel, nd)] if len(set(module.kernel_size)) == 1 else [(math.prod(module.kernel_size), 1)]
            )
            per_group = module.in_channels // module.groups
            out = hps["out"] if hps else module.out_channels
            if module.groups == 1:
                self.add(
                    "flops", spatial, [(out, 1), (hps["in"] if hps else module.in_channels, 1), *kernel_factor], path
                )
            else:
                self.add("flops", spatial * per_group, [(out, 1), *kernel_factor], path)
        elif isinstance(module, LINEAR_TYPES) and in_shape is not None:
            rows = math.prod(in_shape[:-1]) // self.batch  # tokens per sample, batch-first or not
            out = hps["out"] if hps else module.out_features
            self.add("flops", rows, [(out, 1), (hps["in"] if hps else module.in_features, 1)], path)
        elif isinstance(module, nn.AdaptiveAvgPool2d) and in_shape is not None:
            self.pool_flops(in_node, in_shape, path)
        elif isinstance(module, _NORMS) and in_shape is not None:
            affine = getattr(module, "weight", None) is not None
            self.norm_flops(in_node, in_shape, affine, path)
        elif isinstance(module, CONV_TRANSPOSE_TYPES) and in_shape is not None:
            coef = math.prod(in_shape[2:]) * math.prod(module.kernel_size)  # fvcore: input positions x weight
            per_group = module.out_channels // module.groups
            if not hps:
                self.add("flops", coef * module.in_channels * per_group, [], path)
            elif module.groups == 1:
                self.add("flops", coef, [(hps["in"], 1), (hps["out"], 1)], path)
            else:
                self.add("flops", coef * per_group, [(hps["in"], 1)], path)
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
        else:
            name = target if isinstance(target, str) else getattr(target, "__name__", "")
            if name in _UNMODELED_FUNCTIONS:
                self.unmodeled.append(f"{node.name} ({name})")

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

    def attention_flops(self, node: fx.Node, name: str, module: nn.MultiheadAttention, path: list[str]) -> None:
        """fvcore counts the input and output projections (it has no handle for the attention itself).

        Each projection maps the embedding to the heads' width (heads x head size) or back.
        """
        query, key = node.args[0], node.args[1] if len(node.args) > 1 else node.kwargs.get("key")
        q_shape, k_shape = node_shape(query), node_shape(key)
        if q_shape is None or k_shape is None:
            return
        q_rows, k_rows = math.prod(q_shape[:-1]) // self.batch, math.prod(k_shape[:-1]) // self.batch
        hps = self.slot_hps.get(name)
        if not hps:  # as built: keys and values may have their own widths (kdim, vdim)
            e = module.embed_dim
            projections = q_rows * q_shape[-1] * e + 2 * k_rows * k_shape[-1] * e + q_rows * e * e
            self.add("flops", projections, [], path)
            return
        embed, heads = hps["in"], self.layer_hps.get(name) or module.num_heads
        # q and out projections over the query rows, k and v over the key rows
        self.add("flops", (2 * q_rows + 2 * k_rows) * module.head_dim, [(embed, 1), (heads, 1)], path)

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
            parts, start, index = dim_parts(dim), 0, 0
            while start < len(parts):  # slot segments in order; a chunked one spans its runs
                root = groups.find(("slot", name, attr, index))
                repeat = groups.repeat_of(root)
                copies = repeat[1] if repeat else 1
                found[root] = parts[start] if copies == 1 else Segments(parts[start : start + copies])
                start, index = start + copies, index + 1
    return found


def block_indices(modules: dict[str, nn.Module], depth_hps: dict[str, Hparam]) -> dict[str, tuple[Hparam, int]]:
    """Block path -> (depth hparam of its stage, its index): the block runs while depth > index."""
    return {
        f"{stage}.{key}": (hp, index)
        for stage, hp in depth_hps.items()
        for index, key in enumerate(modules[stage]._modules)
    }


def ancestors(name: str) -> list[str]:
    """Module paths from the outermost ancestor down to ``name`` itself."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def compile_cost_terms(
    model: nn.Module,
    trace: TraceResult,
    slot_hps: dict[str, dict[str, Hparam]],
    layer_hps: dict[str, Hparam | None],
    depth_hps: dict[str, Hparam],
    batch: int = 1,
) -> tuple[list[CostTerm], list[str]]:
    """The flops and params terms of a model about to be converted, and what they leave out.

    ``layer_hps``: each layer's own hparam beside its channels (a conv's kernel size, an
    attention's number of heads).
    """
    builder = _Builder(model, trace, slot_hps, layer_hps, depth_hps, batch)
    seen: set[int] = set()
    for name, module in model.named_modules():
        parent = name.rpartition(".")[0]
        if parent in slot_hps and isinstance(builder.modules[parent], nn.MultiheadAttention):
            continue  # an attention's output projection is counted with the attention
        if id(module) not in seen:
            seen.add(id(module))
            builder.module_params(name, module)
    for node in trace.graph.nodes:
        builder.node_flops(node)
    return builder.terms, builder.unmodeled
