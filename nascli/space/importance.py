"""Channel importance for pruning: reorder each channel group so its prefix is the most important.

Subnets keep a prefix of each channel group, so sorting the stored channels by importance once
(FastNAS) makes every subnet keep the channels that matter most. By weights, a group's
importance is the |γ| of its batch norms, or else the L1 norm of its producers' output-channel
weights. By activations (Minitron), it is what the layers reading the group receive on
calibration batches: the mean |activation| of each channel (an MLP neuron, a hidden channel:
the inputs of the projections after each norm), or for heads the mean L2 norm of each head's
output (a key/value group's: of its query heads' outputs). Query heads inside key/value groups
are ranked within their group, so every group keeps its own best heads. The permutation is
applied to every tensor of the group, so the full model computes exactly what it did before.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

from nascli.space.hparam import Grouped, Hparam, Scaled, Segments, dim_parts, dim_scale
from nascli.space.kinds import DynamicModule, kind_of
from nascli.space.kinds.base import moving_each_tensor_once
from nascli.space.kinds.sequential import DepthStack
from nascli.space.space import get_space, random_sampling

# (layer, "out" | "in" | "features" | "param:<name>:<dim>", offset of the group in that dim, entries per channel,
# channels of the dim, as the layer's kind permutes them, per channel of the group)
Member = tuple[nn.Module, str, int, int, int]


@dataclass
class _Group:
    """The layer dims one configurable hparam sizes, and how a permutation of its channels may go.

    ``size`` channels are permuted together: the hparam's max, or for the query heads kept per
    key/value group every query head, permuted only within its group (runs of ``within``).
    """

    hp: Hparam
    members: list[Member] = field(default_factory=list)
    size: int = 0
    within: int = 0


def _group_members(model: nn.Module) -> dict[int, _Group]:
    """Configurable channel hparam -> every layer dim it sizes, with the group's offset in the dim.

    Grouped query heads give two groups: the key/value groups (each spanning its query heads'
    entries) and the query heads per group, ranked and moved within their group, so every group
    keeps its own best heads. Those come first: moving heads within groups leaves each group's
    score as it was, so the groups are ranked after on scores measured before either move.
    """
    space = get_space(model)
    configurable = {id(hp) for hp in space.hparams.values()}
    inner: dict[int, _Group] = {}
    groups: dict[int, _Group] = {}
    kept: set[int] = set()  # heads inside equal parts (GPT-2's q, k and v): their order stays

    def add(found: dict[int, _Group], hp: Hparam, member: Member, size: int, within: int = 1) -> None:
        if id(hp) in configurable:
            found.setdefault(id(hp), _Group(hp, [], size, within)).members.append(member)

    for module in model.modules():
        if not isinstance(module, DynamicModule):
            continue
        for dim in kind_of(module).ordered_dims(module):
            kept.update(id(hp) for hp in dim_parts(dim))
        for role, dim in kind_of(module).channel_dims(module):
            if isinstance(dim, Segments) and any(isinstance(part, Scaled) for part in dim.parts):
                kept.update(id(hp) for hp in dim_parts(dim))
                continue
            base, scale = (dim.base if isinstance(dim, Scaled) else dim), dim_scale(dim)
            if isinstance(base, Segments) and any(isinstance(part, Grouped) for part in base.parts):
                kept.update(id(hp) for hp in dim_parts(dim))  # query heads beside k and v heads (Falcon): kept in order
                continue
            if isinstance(base, Grouped):
                kv, per = base.groups, base.per_group
                add(inner, per, (module, role, 0, scale, 1), base.max, per.max)
                add(groups, kv, (module, role, 0, per.max * scale, per.max), kv.max)
                continue
            offsets = base.offsets() if isinstance(base, Segments) else [0]
            for hp, offset in zip(dim_parts(dim), offsets, strict=True):
                add(groups, hp, (module, role, offset, scale, 1), hp.max)
    found = {**inner, **groups}
    return {key: group for key, group in found.items() if key not in kept}


def _importance(group: _Group) -> torch.Tensor:
    """The |gamma| of the group's batch norms where it has any, else its producers' output-weight L1 norms
    (for a group only parameters size, the L1 norm of each of their slices along it)."""
    n, members = group.size, group.members
    features = [(kind_of(m).scale_importance(m), o) for m, role, o, _, _ in members if role == "features"]
    scales = [scale[o : o + n] for scale, o in features if scale is not None]
    if scales:
        return torch.stack(scales).sum(0)
    producers = [(kind_of(m).output_importance(m), o, s) for m, role, o, s, _ in members if role == "out"]
    if not producers:  # produced by weights the model's own code applies (an expert's): their slices' L1 norms
        producers = [(kind_of(m).slice_importance(m, role), o, s) for m, role, o, s, _ in members
                     if role.startswith("param:")]  # fmt: skip
    # a head's importance sums its entries (head size, or the query heads of a key/value group)
    return torch.stack([score[o * s : (o + n) * s].view(n, s).sum(1) for score, o, s in producers]).sum(0)


class _InputStatistics:
    """Per layer reading a group: the sum over positions of |x| per input channel, and of the L2
    norm of each block of ``scale`` channels (a head) for each block size its groups use."""

    def __init__(self, groups: dict[int, _Group]) -> None:
        self.scales: dict[nn.Module, set[int]] = defaultdict(set)
        for group in groups.values():
            for module, role, _, scale, _ in group.members:
                if role == "in":
                    self.scales[module].add(scale)
        self.sums: dict[tuple[nn.Module, int], torch.Tensor] = {}

    def hook(self, module: nn.Module, args: tuple) -> None:
        x = args[0] if args else None
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            return
        x = x.detach().float().movedim(kind_of(module).input_channel_dim, -1)
        channels = x.shape[-1]
        for scale in self.scales[module]:
            if channels % scale:
                continue
            blocks = x.reshape(-1, channels // scale, scale)
            total = blocks.abs().sum((0, 2)) if scale == 1 else blocks.norm(dim=2).sum(0)
            key = (module, scale)
            self.sums[key] = self.sums[key] + total if key in self.sums else total

    def importance(self, group: _Group) -> torch.Tensor | None:
        """The group's score per channel, summed over its readers; None where none was measured."""
        n, scores = group.size, []
        for module, role, offset, scale, _ in group.members:
            total = self.sums.get((module, scale)) if role == "in" else None
            if total is not None and len(total) >= offset + n:
                scores.append(total[offset : offset + n] / total.sum().clamp_min(1e-12))
        return torch.stack(scores).sum(0) if scores else None


@torch.no_grad()
def _activation_importance(
    model: nn.Module, groups: dict[int, _Group], batches: Iterable[tuple]
) -> dict[int, torch.Tensor]:
    """Scores from what each group's readers receive over ``batches`` (each a tuple of inputs), at the max subnet.

    Each reader's scores are normalized to sum 1 before they are added, so a layer with larger
    activations does not outvote the others.
    """
    stats = _InputStatistics(groups)
    handles = [module.register_forward_pre_hook(stats.hook) for module in stats.scales]
    space = get_space(model)
    was_training, active = model.training, space.config()
    model.eval()
    try:
        with random_sampling(model, enabled=False):
            space.sample("max")
            for inputs in batches:
                model(*inputs)
            space.select(active)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    found = {}
    for key, group in groups.items():
        score = stats.importance(group)
        if score is not None:
            found[key] = score
    return found


def _block_width(members: list[Member]) -> int:
    """Whole blocks move together: grouped convs' per-group widths and group norms' channels per group."""
    return math.lcm(1, *(kind_of(m).permutation_block(m) for m, _, _, _, _ in members))


@torch.no_grad()
def sort_channels_by_importance(model: nn.Module, batches: Iterable[tuple] | None = None) -> dict[str, list[int]]:
    """Reorder every configurable channel group by descending importance; returns the orders.

    By weights, or with ``batches`` (calibration inputs, each a tuple of the model's arguments)
    by activations; a group that no layer reads as its input keeps the weights' score.
    """
    orders = {}
    groups = _group_members(model)
    measured = _activation_importance(model, groups, batches) if batches is not None else {}
    for key, group in groups.items():
        score = measured[key] if key in measured else _importance(group)
        if group.within > 1:  # query heads: ranked within their key/value group, which keeps its place
            order = torch.argsort(score.view(-1, group.within), dim=1, descending=True, stable=True)
            perm = (torch.arange(len(order), device=order.device)[:, None] * group.within + order).flatten()
        else:
            width = _block_width(group.members)
            if len(score) % width or any(offset % width for _, _, offset, _, _ in group.members):
                continue  # whole blocks do not line up with this group (part of a concatenation): keep its order
            order = torch.argsort(score.view(-1, width).sum(1), descending=True, stable=True)
            perm = (order[:, None] * width + torch.arange(width, device=order.device)).flatten()
        _permute(group.members, perm)
        orders[group.hp.name] = perm.tolist()
    space = get_space(model)
    space.sorted_by = "activations" if batches is not None else "weights"
    space.channel_orders.append(orders)
    return orders


def _permute(members: list[Member], perm: torch.Tensor) -> None:
    """Move every member's channels by ``perm``; a member spanning several channels of its dim per channel
    of the group (a key/value group's query heads) moves each run whole."""
    with moving_each_tensor_once():  # a tied embedding and output head share one tensor
        for module, role, offset, _, runs in members:
            moved = perm if runs == 1 else (perm[:, None] * runs + torch.arange(runs, device=perm.device)).flatten()
            kind_of(module).permute(module, role, moved, offset * runs)


@torch.no_grad()
def apply_channel_orders(model: nn.Module, orders: list[dict[str, list[int]]]) -> None:
    """Reorder the channels as the recorded sorts did, in their order (``SearchSpace.channel_orders``).

    Sorting is a permutation of each group, so the weights of a model sorted once can be rebuilt
    from the weights it was built with and these orders, exactly, without storing them again.
    """
    groups = {group.hp.name: group for group in _group_members(model).values()}
    space = get_space(model)
    for sort in orders:
        for name, perm in sort.items():
            if name not in groups or sorted(perm) != list(range(groups[name].size)):
                raise ValueError(f"a recorded channel order of {name} does not fit the model")
            _permute(groups[name].members, torch.as_tensor(perm, dtype=torch.long))
        space.channel_orders.append(sort)


def set_block_ranks(model: nn.Module, depth: str, ranks: list[int]) -> None:
    """Give the blocks of the stack the depth hparam ``depth`` sizes their ranks: a depth ``d`` keeps
    the blocks ranked below ``d``. Costs built after this read them (the cached cost model is dropped)."""
    space = get_space(model)
    space.block_ranks[depth] = list(ranks)
    for module in model.modules():
        if isinstance(module, DepthStack) and module._hp_depth.name == depth:
            module._ranks = space.block_ranks[depth]
    space._cost_model = None


@torch.no_grad()
def rank_blocks(model: nn.Module, score: Callable[[nn.Module], float]) -> dict[str, list[float]]:
    """Rank the skippable blocks of every searchable depth by the score of the model without each one.

    Minitron's depth importance: each block that a depth may skip is skipped alone, every other
    hparam at its max, and ``score(model)`` (higher is better, e.g. the negative validation
    perplexity) measured. The block whose absence costs the least is skipped first as the depth
    shrinks; blocks a depth never skips keep their place. A model whose config gives its layers
    different types by position (``layer_types``: sliding-window and full attention) keeps
    skipping the last blocks, since its own code picks each block's type by loop position.
    Returns each ranked depth's scores per skippable block, in block order.
    """
    space = get_space(model)
    active, before = space.config(), dict(space.block_ranks)
    measured: dict[str, list[float]] = {}
    try:
        with random_sampling(model, enabled=False):
            space.sample("max")
            for module in model.modules():
                name = module._hp_depth.name if isinstance(module, DepthStack) else None
                if name in space.hparams and name not in measured:  # parallel lists share one depth
                    if not _typed_by_position(model, module._hp_depth.min):
                        measured[module._hp_depth.name] = _rank_stack(model, module, score)
            space.select(active)
    except BaseException:  # a failed score leaves the ranks and the subnet as they were
        _restore_ranks(model, before)
        space.select(active)
        raise
    return measured


def _rank_stack(model: nn.Module, stack: DepthStack, score: Callable[[nn.Module], float]) -> list[float]:
    space, depth, blocks = get_space(model), stack._hp_depth, len(stack)
    without: dict[int, float] = {}
    for block in range(depth.min, blocks):  # skipped alone: ranked last
        alone = [i - (i > block) if i != block else blocks - 1 for i in range(blocks)]
        set_block_ranks(model, depth.name, alone)
        space.select({depth.name: blocks - 1})
        without[block] = score(model)
    space.select({depth.name: blocks})
    order = sorted(without, key=lambda b: without[b])  # the lowest score without it: the most important
    ranks = list(range(blocks))
    for rank, block in enumerate(order, start=depth.min):
        ranks[block] = rank
    set_block_ranks(model, depth.name, ranks)
    return [without[b] for b in sorted(without)]


def _typed_by_position(model: nn.Module, first: int) -> bool:
    """Whether the model's config types its layers by position from ``first`` on (mixed attention kinds)."""
    config = getattr(model, "config", None)
    types = getattr(config, "layer_types", None) or getattr(config, "layers_block_type", None)
    return isinstance(types, (list, tuple)) and len(set(types[first:])) > 1


def _restore_ranks(model: nn.Module, ranks: dict[str, list[int]]) -> None:
    space = get_space(model)
    for module in model.modules():
        if isinstance(module, DepthStack) and module._hp_depth.name not in ranks:
            module._ranks = None
    space.block_ranks = {}
    for depth, found in ranks.items():
        set_block_ranks(model, depth, found)
    space._cost_model = None
