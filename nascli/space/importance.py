"""Channel importance for pruning: reorder each channel group so its prefix is the most important.

Subnets keep a prefix of each channel group, so sorting the stored channels by importance once
(FastNAS) makes every subnet keep the channels that matter most. A group's importance is the |γ|
of its batch norms, or else the L1 norm of its producers' output-channel weights. The permutation
is applied to every tensor of the group, so the full model computes exactly what it did before.
"""

from __future__ import annotations

import math
from collections import defaultdict

import torch
from torch import nn

from nascli.space.dynamic.attention import DynamicMultiheadAttention
from nascli.space.dynamic.base import DynamicModule
from nascli.space.dynamic.conv import _DynamicConv, _DynamicConvTranspose
from nascli.space.dynamic.norm import _DynamicBatchNorm
from nascli.space.hparam import Hparam, Scaled, Segments, dim_parts, dim_scale
from nascli.space.space import get_space

Member = tuple[nn.Module, str, int]  # (layer, "out" | "in" | "features", offset of the group in that dim)
_ROLES = {"_hp_out": "out", "_hp_in": "in", "_hp_features": "features"}


def _slots(module: DynamicModule) -> list[tuple[str, object]]:
    """(role, dim) of each channel dim of a dynamic layer; an attention's embedding is both in and out."""
    if isinstance(module, DynamicMultiheadAttention):
        return [("in", module._hp_embed), ("out", module._hp_embed)]
    return [(_ROLES[field], getattr(module, field)) for _, field in module._hparam_fields if field in _ROLES]


def _group_members(model: nn.Module) -> dict[int, tuple[Hparam, list[Member]]]:
    """Configurable channel hparam -> every layer dim it sizes, with the group's offset in the dim."""
    space = get_space(model)
    configurable = {id(hp) for hp in space.hparams.values()}
    groups: dict[int, tuple[Hparam, list]] = defaultdict(lambda: (None, []))
    for module in model.modules():
        if not isinstance(module, DynamicModule):
            continue
        for role, dim in _slots(module):
            base = dim.base if isinstance(dim, Scaled) else dim
            offsets = base.offsets() if isinstance(base, Segments) else [0]
            for hp, offset in zip(dim_parts(dim), offsets, strict=True):
                if id(hp) in configurable:
                    groups[id(hp)] = (hp, groups[id(hp)][1] + [(module, role, offset)])
    return dict(groups)


def _importance(hp: Hparam, members: list[Member]) -> torch.Tensor:
    n = hp.max
    norms = [
        m.weight.detach().abs()[o : o + n]
        for m, role, o in members
        if role == "features" and isinstance(m, _DynamicBatchNorm) and m.weight is not None
    ]
    if norms:
        return torch.stack(norms).sum(0)
    return torch.stack([_output_weight_l1(m)[o : o + n] for m, role, o in members if role == "out"]).sum(0)


def _output_weight_l1(layer: nn.Module) -> torch.Tensor:
    """L1 norm of the weights producing each output channel."""
    if isinstance(layer, DynamicMultiheadAttention):
        return layer.out_proj.weight.detach().abs().sum(1)
    if isinstance(layer, _DynamicConvTranspose):
        weight, groups = layer.weight.detach().abs(), layer.groups  # (in, out / groups, *kernel)
        return weight.reshape(groups, weight.shape[0] // groups, weight.shape[1], -1).sum((1, 3)).flatten()
    return layer.weight.detach().abs().flatten(1).sum(1)


def _block_width(members: list[Member]) -> int:
    """Whole groups move together: grouped convs' per-group widths and group norms' channels per group."""
    width = 1
    for m, _, _ in members:
        if isinstance(m, (_DynamicConv, _DynamicConvTranspose)) and m.groups > 1:
            width = math.lcm(width, m.out_channels // m.groups)
        elif isinstance(m, nn.GroupNorm):
            width = math.lcm(width, m.num_channels // m.num_groups)
    return width


@torch.no_grad()
def sort_channels_by_importance(model: nn.Module) -> dict[str, list[int]]:
    """Reorder every configurable channel group by descending importance; returns the orders."""
    orders = {}
    for hp, members in _group_members(model).values():
        score = _importance(hp, members)
        width = _block_width(members)
        if len(score) % width or any(offset % width for _, _, offset in members):
            continue  # whole blocks do not line up with this group (part of a concatenation): keep its order
        blocks = score.view(-1, width).sum(1)
        order = torch.argsort(blocks, descending=True, stable=True)
        perm = (order[:, None] * width + torch.arange(width, device=order.device)).flatten()
        for module, role, offset in members:
            _permute(module, role, perm, offset)
        orders[hp.name] = perm.tolist()
    return orders


def _move(tensor: torch.Tensor | None, dim: int, perm: torch.Tensor, offset: int, scale: int = 1) -> None:
    """Reorder the run of ``len(perm)`` channels at ``offset`` along ``dim`` (``scale`` entries each)."""
    if tensor is None:
        return
    perm = perm.to(tensor.device)
    runs = (perm[:, None] * scale + torch.arange(scale, device=tensor.device)).flatten() + offset * scale
    tensor.narrow(dim, offset * scale, len(runs)).copy_(tensor.index_select(dim, runs))


def _permute(module: nn.Module, role: str, perm: torch.Tensor, offset: int) -> None:
    if isinstance(module, DynamicMultiheadAttention):
        if role == "in":
            _move(module.in_proj_weight, 1, perm, offset)
        else:
            _move(module.out_proj.weight, 0, perm, offset)
            _move(module.out_proj.bias, 0, perm, offset)
        return
    if role == "features":
        for name in ("weight", "bias", "running_mean", "running_var"):
            _move(getattr(module, name, None), 0, perm, offset)
        return
    transposed = isinstance(module, _DynamicConvTranspose)  # weight laid out (in, out / groups, ...)
    grouped = isinstance(module, (_DynamicConv, _DynamicConvTranspose)) and module.groups > 1
    if role == "out":
        # a grouped conv's in and out are one group: its weight's dim 0 moves once, with the bias
        _move(module.weight, 1 if transposed and not grouped else 0, perm, offset)
        _move(module.bias, 0, perm, offset)
    elif not grouped:
        _move(module.weight, 0 if transposed else 1, perm, offset, dim_scale(module._hp_in))
