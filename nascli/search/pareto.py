"""The Pareto front of candidates: no other candidate is at most as costly and strictly better."""

from __future__ import annotations

from collections.abc import Sequence


def pareto_front(costs: Sequence[float], scores: Sequence[float]) -> list[int]:
    """Indices of the non-dominated points (lower cost and higher score are better), by cost.

    A point is dominated when another has cost <= and score >= with at least one strict.
    Sorting by cost (then best score first) and keeping each point that beats every cheaper
    score gives the front in one pass.
    """
    order = sorted(range(len(costs)), key=lambda i: (costs[i], -scores[i]))
    front, best = [], float("-inf")
    for i in order:
        if scores[i] > best:
            front.append(i)
            best = scores[i]
    return front
