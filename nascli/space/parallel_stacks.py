"""Parallel stacks: block lists of one module that a loop indexes together, searched as one depth.

XLM keeps each layer's parts in four lists (``attentions``, ``layer_norm1``, ``ffns``,
``layer_norm2``) and runs layer ``i`` as ``self.attentions[i](...)`` ... ``self.layer_norm2[i](...)``
for ``i in range(self.n_layers)``. No list alone is a stack of blocks: dropping attention ``i``
would leave its norms and MLP running. Together they are: the ``i``-th entries, called one after
the other before any ``i + 1``-th one, make layer ``i``. Such lists share one depth hparam; they
are indexed by position among the kept blocks (``layers[i]`` is the ``i``-th block kept, the
numbering the export gives them), and an int attribute of their holder named for layers and equal
to their length (``n_layers``, not an index such as ``layer_idx``) follows the depth, so the loop runs
the kept layers only (``space/convert.py``). As for one stack, a depth drops trailing layers only, those
that keep the shape and channel group of their input, unless importance ranks them.
docs/architecture.md ("Sizes a module holds") places this among the tracer's relations.
"""

from __future__ import annotations

from collections import defaultdict

from torch import fx, nn

from nascli.space.hparam import Hparam
from nascli.space.kinds.base import keeps_shape_and_group
from nascli.space.trace import TraceResult


def parallel_groups(
    lists: list[tuple[str, nn.Module]], trace: TraceResult, order: dict[fx.Node, int]
) -> list[list[str]]:
    """Groups of two or more block lists of one holder, of one length, whose ``i``-th blocks are each
    called once and all before any ``i + 1``-th block: the parts of one layer per index (``order``: each
    node's position in the graph)."""
    by_holder: dict[tuple[str, int], list[str]] = defaultdict(list)
    for name, stack in lists:
        holder, _, _ = name.rpartition(".")
        by_holder[(holder, len(stack))].append(name)
    return [
        names
        for (_, length), names in by_holder.items()
        if len(names) > 1 and length > 1 and _interleaved(names, length, trace, order)
    ]


def _interleaved(names: list[str], length: int, trace: TraceResult, order: dict[fx.Node, int]) -> bool:
    """Whether every list's block ``i`` is called once, and all of them after every block ``i - 1``."""
    last_before = -1
    for index in range(length):
        outputs = []
        for name in names:
            calls = trace.calls.get(f"{name}.{index}", [])
            if len(calls) != 1 or calls[0][0] is None or calls[0][1] not in order:
                return False
            outputs.append(order[calls[0][1]])
        if min(outputs) <= last_before:
            return False
        last_before = max(outputs)
    return True


def layer_calls(names: list[str], index: int, trace: TraceResult, order: dict[fx.Node, int]) -> tuple[fx.Node, fx.Node]:
    """The input of the first part of layer ``index`` to be called, and the output of the last (``order``: each
    node's position in the graph)."""
    calls = sorted((trace.calls[f"{name}.{index}"][0] for name in names), key=lambda call: order[call[1]])
    return calls[0][0], calls[-1][1]


def shared_depth(
    names: list[str], length: int, trace: TraceResult, order: dict[fx.Node, int], min_depth: int
) -> Hparam | None:
    """One depth for the group, named after its first list: the trailing layers that keep the shape and
    channel group of their input may be dropped, as for one stack (``kinds/base.py`` ``depth_hparam``)."""
    first = length
    while first > 0 and keeps_shape_and_group(trace, *layer_calls(names, first - 1, trace, order)):
        first -= 1
    low = max(first, min_depth)
    return Hparam(f"{names[0]}.depth", range(low, length + 1)) if low < length else None
