"""Channel importance for pruning: reorder each channel group so its prefix is the most important.

Subnets keep a prefix of each channel group, so sorting the stored channels by importance once
(FastNAS) makes every subnet keep the channels that matter most. A group's importance is the |γ|
of its batch norms, or else the L1 norm of its producers' output-channel weights. The permutation
is applied to every tensor of the group, so the full model computes exactly what it did before.
"""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import nn

from nascli.space.dynamic.conv import _DynamicConv
from nascli.space.dynamic.linear import DynamicLinear
from nascli.space.dynamic.norm import _DynamicBatchNorm
from nascli.space.hparam import Hparam, Segments, dim_parts
from nascli.space.space import get_space

Member = tuple[nn.Module, str, int]  # (layer, "out" | "in" | "features", offset of the group in that dim)


def _group_members(model: nn.Module) -> dict[int, tuple[Hparam, list[Member]]]:
    """Configurable channel hparam -> every layer dim it sizes, with the group's offset in the dim."""
    space = get_space(model)
    configurable = {id(hp) for hp in space.hparams.values()}
    groups: dict[int, tuple[Hparam, list]] = defaultdict(lambda: (None, []))
    for module in model.modules():
        if isinstance(module, (_DynamicConv, DynamicLinear)):
            slots = (("out", module._hp_out), ("in", module._hp_in))
        elif isinstance(module, _DynamicBatchNorm):
            slots = (("features", module._hp_features),)
        else:
            continue
        for role, dim in slots:
            offsets = dim.offsets() if isinstance(dim, Segments) else [0]
            for hp, offset in zip(dim_parts(dim), offsets, strict=True):
                if id(hp) in configurable:
                    groups[id(hp)] = (hp, groups[id(hp)][1] + [(module, role, offset)])
    return dict(groups)


def _importance(hp: Hparam, members: list[Member]) -> torch.Tensor:
    n = hp.max
    norms = [
        m.weight.detach().abs()[o : o + n] for m, role, o in members if role == "features" and m.weight is not None
    ]
    if norms:
        return torch.stack(norms).sum(0)
    producers = [m.weight.detach().abs().flatten(1).sum(1) for m, role, _ in members if role == "out"]
    return torch.stack(producers).sum(0)


def _block_width(members: list[Member]) -> int:
    """Grouped convs move whole groups: the permutation acts on blocks of their per-group width."""
    widths = [m.out_channels // m.groups for m, _, _ in members if isinstance(m, _DynamicConv) and m.groups > 1]
    return max([w for w in widths if w > 1] + [1])


@torch.no_grad()
def sort_channels_by_importance(model: nn.Module) -> dict[str, list[int]]:
    """Reorder every configurable channel group by descending importance; returns the orders."""
    orders = {}
    for hp, members in _group_members(model).values():
        score = _importance(hp, members)
        width = _block_width(members)
        blocks = score.view(-1, width).sum(1)
        order = torch.argsort(blocks, descending=True, stable=True)
        perm = (order[:, None] * width + torch.arange(width)).flatten()
        for module, role, offset in members:
            _permute(module, role, perm, offset)
        orders[hp.name] = perm.tolist()
    return orders


def _permute(module: nn.Module, role: str, perm: torch.Tensor, offset: int) -> None:
    part = slice(offset, offset + len(perm))
    if role == "features":
        for name in ("weight", "bias", "running_mean", "running_var"):
            tensor = getattr(module, name)
            if tensor is not None:
                tensor[part] = tensor[offset + perm]
        return
    grouped = isinstance(module, _DynamicConv) and module.groups > 1
    if role == "out" or grouped:  # a grouped conv's in and out are one group, permuted along dim 0 once
        if role == "in":
            return
        module.weight.copy_(module.weight[perm])
        if module.bias is not None:
            module.bias.copy_(module.bias[perm])
    else:
        module.weight[:, part] = module.weight[:, offset + perm]
