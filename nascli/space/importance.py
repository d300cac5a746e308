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

from nascli.space.hparam import Hparam, Scaled, Segments, dim_parts, dim_scale
from nascli.space.kinds import DynamicModule, kind_of
from nascli.space.kinds.base import moving_each_tensor_once
from nascli.space.space import get_space

# (layer, "out" | "in" | "features" | "param:<name>", offset of the group in that dim, entries per channel)
Member = tuple[nn.Module, str, int, int]


def _group_members(model: nn.Module) -> dict[int, tuple[Hparam, list[Member]]]:
    """Configurable channel hparam -> every layer dim it sizes, with the group's offset in the dim."""
    space = get_space(model)
    configurable = {id(hp) for hp in space.hparams.values()}
    groups: dict[int, tuple[Hparam, list]] = defaultdict(lambda: (None, []))
    kept: set[int] = set()  # heads inside equal parts (GPT-2's q, k and v): their order stays
    for module in model.modules():
        if not isinstance(module, DynamicModule):
            continue
        for role, dim in kind_of(module).channel_dims(module):
            if isinstance(dim, Segments) and any(isinstance(part, Scaled) for part in dim.parts):
                kept.update(id(hp) for hp in dim_parts(dim))
                continue
            base = dim.base if isinstance(dim, Scaled) else dim
            offsets = base.offsets() if isinstance(base, Segments) else [0]
            for hp, offset in zip(dim_parts(dim), offsets, strict=True):
                if id(hp) in configurable:
                    groups[id(hp)] = (hp, groups[id(hp)][1] + [(module, role, offset, dim_scale(dim))])
    return {key: group for key, group in groups.items() if key not in kept}


def _importance(hp: Hparam, members: list[Member]) -> torch.Tensor:
    """The |gamma| of the group's batch norms where it has any, else its producers' output-weight L1 norms."""
    n = hp.max
    features = [(kind_of(m).scale_importance(m), o) for m, role, o, _ in members if role == "features"]
    scales = [scale[o : o + n] for scale, o in features if scale is not None]
    if scales:
        return torch.stack(scales).sum(0)
    producers = [(kind_of(m).output_importance(m), o, s) for m, role, o, s in members if role == "out"]
    # a head's importance sums its entries (head size, or the query heads of a key/value group)
    return torch.stack([score[o * s : (o + n) * s].view(n, s).sum(1) for score, o, s in producers]).sum(0)


def _block_width(members: list[Member]) -> int:
    """Whole blocks move together: grouped convs' per-group widths and group norms' channels per group."""
    return math.lcm(1, *(kind_of(m).permutation_block(m) for m, _, _, _ in members))


@torch.no_grad()
def sort_channels_by_importance(model: nn.Module) -> dict[str, list[int]]:
    """Reorder every configurable channel group by descending importance; returns the orders."""
    orders = {}
    for hp, members in _group_members(model).values():
        score = _importance(hp, members)
        width = _block_width(members)
        if len(score) % width or any(offset % width for _, _, offset, _ in members):
            continue  # whole blocks do not line up with this group (part of a concatenation): keep its order
        blocks = score.view(-1, width).sum(1)
        order = torch.argsort(blocks, descending=True, stable=True)
        perm = (order[:, None] * width + torch.arange(width, device=order.device)).flatten()
        with moving_each_tensor_once():  # a tied embedding and output head share one tensor
            for module, role, offset, _ in members:
                kind_of(module).permute(module, role, perm, offset)
        orders[hp.name] = perm.tolist()
    return orders
