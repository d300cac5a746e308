"""Architecture hyperparameters: the discrete dimensions a search space is made of."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any


class Hparam:
    """A named set of choices with one active value.

    One object is shared by every layer attribute that must take the same value (a channel group),
    so setting ``active`` once resizes all of them consistently. Numeric choices are sorted; the
    choices of a categorical hparam (an activation function) keep their given order, the last
    being its max (the layer as built).
    """

    __slots__ = ("name", "choices", "active")

    def __init__(self, name: str, choices: Sequence[Any], active: Any = None) -> None:
        if not choices:
            raise ValueError(f"hparam {name!r} needs at least one choice")
        self.name = name
        numeric = all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in choices)
        self.choices = tuple(sorted(set(choices))) if numeric else tuple(dict.fromkeys(choices))
        self.active = self.choices[-1] if active is None else active

    @property
    def max(self) -> Any:
        return self.choices[-1]

    @property
    def min(self) -> Any:
        return self.choices[0]

    @property
    def is_configurable(self) -> bool:
        return len(self.choices) > 1

    @property
    def is_categorical(self) -> bool:
        return not isinstance(self.choices[0], (int, float))

    @property
    def centroid(self) -> Any:
        """The choice nearest the mean of the choices (the smaller one on a tie); a categorical's max."""
        if self.is_categorical:
            return self.max
        mean = sum(self.choices) / len(self.choices)
        return min(self.choices, key=lambda c: (abs(c - mean), c))

    def __repr__(self) -> str:
        return f"Hparam({self.name!r}, choices={list(self.choices)}, active={self.active})"


def channel_choices(size: int, ratios: tuple[float, ...], divisor: int, multiple_of: int = 1) -> tuple[int, ...]:
    """Channel counts for the ratios, each rounded to the nearest multiple of ``divisor``.

    The full size is always a choice. Choices are kept divisible by ``multiple_of`` (the per-group
    width of a grouped convolution) so every choice maps to a whole number of groups.
    """
    found = {size}
    for r in ratios:
        c = int(math.floor(r * size / divisor + 0.5)) * divisor
        c = min(size, max(divisor, c))
        if c % multiple_of == 0:
            found.add(c)
    return tuple(sorted(found))


class Segments:
    """A dim made of consecutive channel groups: a layer reading a concatenation, or an output chunked
    into equal parts (q, k and v of one projection), whose parts may be split into heads (``Scaled``).

    Each part keeps its own hparam; the active input channels are each part's active prefix at
    the part's offset, so the index is a prefix only when every part but the last is full.
    """

    __slots__ = ("parts", "_last")

    def __init__(self, parts: Sequence[Hparam | Scaled]) -> None:
        self.parts = tuple(parts)
        self._last: list = []

    @property
    def active(self) -> int:
        return sum(p.active for p in self.parts)

    @property
    def max(self) -> int:
        return sum(p.max for p in self.parts)

    def offsets(self) -> list[int]:
        found, offset = [], 0
        for part in self.parts:
            found.append(offset)
            offset += part.max
        return found

    def index(self) -> Any:
        """A slice for a prefix, else a LongTensor of the active channels (kept for the last subnet)."""
        import torch

        actives = tuple(p.active for p in self.parts)
        if all(p.active == p.max for p in self.parts[:-1]):
            return slice(0, sum(actives))
        return _last_subnet(
            self._last,
            actives,
            lambda: torch.cat([torch.arange(o, o + a) for o, a in zip(self.offsets(), actives, strict=True)]),
        )


class Scaled:
    """A dim holding ``scale`` entries per channel, channel-major: a linear layer reading flattened maps.

    Flattening (N, C, H, W) to (N, C * H * W) keeps each channel's H * W values together, so the
    active channels' entries are again a prefix (or, for segments, one run per active channel).
    """

    __slots__ = ("base", "scale", "_last")

    def __init__(self, base: Hparam | Segments | Grouped, scale: int) -> None:
        self.base, self.scale = base, scale
        self._last: list = []

    @property
    def active(self) -> int:
        return self.base.active * self.scale

    @property
    def max(self) -> int:
        return self.base.max * self.scale

    def index(self) -> Any:
        import torch

        index = dim_index(self.base)
        if isinstance(index, slice):
            return slice(0, index.stop * self.scale)
        actives = tuple(p.active for p in dim_parts(self.base))
        return _last_subnet(
            self._last, actives, lambda: (index[:, None] * self.scale + torch.arange(self.scale)).flatten()
        )


class Grouped:
    """A dim of ``groups`` runs of ``per_group`` channels each, group-major: the query heads of
    grouped-query attention, ``per_group`` query heads for each key/value group.

    Every kept group keeps the same number of its channels, each group's own prefix, so the
    exported attention is again a plain grouped-query one (``num_attention_heads = kv_heads *
    per_group``, the head size kept). The active channels are a prefix only while every group is full.
    """

    __slots__ = ("groups", "per_group", "_last")

    def __init__(self, groups: Hparam, per_group: Hparam) -> None:
        self.groups, self.per_group = groups, per_group
        self._last: list = []

    @property
    def active(self) -> int:
        return self.groups.active * self.per_group.active

    @property
    def max(self) -> int:
        return self.groups.max * self.per_group.max

    def index(self) -> Any:
        import torch

        groups, per_group, stride = self.groups.active, self.per_group.active, self.per_group.max
        if per_group == stride:
            return slice(0, groups * stride)
        return _last_subnet(
            self._last,
            (groups, per_group),
            lambda: (torch.arange(groups)[:, None] * stride + torch.arange(per_group)).flatten(),
        )


def _last_subnet(memo: list, actives: tuple, build: Callable[[], Any]) -> Any:
    """The index of the subnet ``actives``, rebuilt only when the subnet changes.

    Forwards of one subnet (search scoring, evaluation) reuse it. Only the last subnet is kept:
    training draws a new subnet per forward, and a flattened dim's index has H*W entries per
    channel, so a cache of every subnet seen would grow without bound.
    """
    if not memo or memo[0] != actives:
        memo[:] = [actives, build()]
    return memo[1]


Dim = Hparam | Segments | Scaled | Grouped


def dim_index(dim: Dim) -> Any:
    """How to slice a stored dim to its active size: a slice, or an index tensor for segments."""
    return dim.index() if isinstance(dim, (Segments, Scaled, Grouped)) else slice(0, dim.active)


def dim_parts(dim: Dim) -> tuple[Hparam, ...]:
    """The hparams a dim follows, in order (a segment split into heads counts by its head hparam;
    query heads in key/value groups by the groups' hparam, then the per-group one)."""
    if isinstance(dim, Scaled):
        return dim_parts(dim.base)
    if isinstance(dim, Grouped):
        return (dim.groups, dim.per_group)
    return tuple(p for part in dim.parts for p in dim_parts(part)) if isinstance(dim, Segments) else (dim,)


def dim_scale(dim: Dim) -> int:
    """Entries per channel: the spatial size a flattened dim was made of, else 1."""
    return dim.scale if isinstance(dim, Scaled) else 1


def size_in(dim: Dim, config: dict[str, Any]) -> int:
    """The size a dim takes in ``config`` (independent hparam name -> value; others as they are)."""
    if isinstance(dim, Scaled):
        return size_in(dim.base, config) * dim.scale
    if isinstance(dim, Segments):
        return sum(size_in(part, config) for part in dim.parts)
    if isinstance(dim, Grouped):
        return size_in(dim.groups, config) * size_in(dim.per_group, config)
    return config.get(dim.name, dim.active) if dim.is_configurable else dim.max


def take(tensor: Any, dim: int, index: Any) -> Any:
    """``tensor`` restricted to ``index`` along ``dim``: a view for a slice, a copy for a tensor."""
    if isinstance(index, slice):
        return tensor.narrow(dim, index.start, index.stop - index.start)
    return tensor.index_select(dim, index.to(tensor.device))
