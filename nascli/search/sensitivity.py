"""FastNAS's search: a sensitivity map per hparam, then one global threshold found by bisection.

Pruning a trained model has no supernet whose subnets were all trained, so instead of evolving
a population this measures how much the score drops when one hparam alone shrinks to each of its
choices (every other hparam at its maximum). Each hparam then takes its smallest choice whose
drop stays within a global threshold. A larger threshold never grows any hparam, so costs fall
monotonically with it, and the smallest threshold that meets the bounds is found by bisection
over the map's distinct values: exact, a few cost-model evaluations, no scoring. What budget the
threshold's subnet leaves is then spent growing the hparams whose growth lowers the drop most.
Only the probes of the map and the chosen subnet are scored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from nascli.cost.latency import LatencyModel
from nascli.cost.model import CostModel
from nascli.search.evolve import Candidate, SearchState, check_satisfiable, score_shared
from nascli.train.distributed import Ranks

NO_DROP = 1e-5  # a drop below this counts as none: larger choices of the hparam are not scored


def _drops(choices: list[int], maximum_score: float, scores: dict[int, float]) -> dict[int, float]:
    """One hparam's score drop per choice, made non-increasing in the choice.

    Choices above the first one that costs nothing are taken to cost nothing too, whether or not
    they were scored, so the map does not depend on how many were scored at once.
    """
    raw: dict[int, float] = {}
    reached = False
    for choice in choices[:-1]:
        raw[choice] = 0.0 if reached else maximum_score - scores[choice]
        reached = reached or raw[choice] < NO_DROP
    raw[choices[-1]] = 0.0
    drops, running = {}, 0.0
    for choice in reversed(choices):
        running = max(running, raw[choice])
        drops[choice] = running
    return dict(sorted(drops.items()))


def _max_row(costs: CostModel) -> tuple[int, ...]:
    return tuple(costs.encode(costs.named("max"))[0].tolist())


def sensitivity_map(costs: CostModel, probes: dict[tuple, float]) -> dict[str, dict[int, float]]:
    """The score drop of every numeric hparam at every choice, from a finished measurement's probes.

    Categorical hparams (activation functions) have no smaller choice to prune to: they are not
    measured and stay as built.
    """
    maximum = _max_row(costs)
    found: dict[str, dict[int, float]] = {}
    for i, (name, hp) in enumerate(costs.hparams.items()):
        if hp.is_categorical:
            continue
        choices = sorted(int(c) for c in hp.choices)
        rows = {c: maximum[:i] + (c,) + maximum[i + 1 :] for c in choices[:-1]}
        found[name] = _drops(choices, probes[maximum], {c: probes[r] for c, r in rows.items() if r in probes})
    return found


class SensitivitySearch:
    """FastNAS's binary search (``algorithm="sensitivity"``): one subnet from a measured map."""

    def __init__(
        self,
        costs: CostModel,
        bounds: dict[str, float],
        score: Callable[[dict[str, Any]], float],
        latency: LatencyModel | None = None,
        ranks: Ranks = Ranks(),
    ) -> None:
        check_satisfiable(costs, bounds, latency)
        self.costs, self.bounds, self.score, self.latency, self.ranks = costs, bounds, score, latency, ranks
        self.names = costs.names
        self.maximum = _max_row(costs)

    def _config(self, row: tuple) -> dict[str, Any]:
        return self.costs.config_of(row)

    def _row(self, config: dict[str, Any]) -> tuple[int, ...]:
        return tuple(self.costs.encode(config)[0].tolist())

    def _probe(self, rows: list[tuple], state: SearchState) -> None:
        new = [row for row in rows if row not in state.probes]
        for row, value in zip(new, score_shared([self._config(r) for r in new], self.score, self.ranks), strict=True):
            state.probes[row] = value

    def _measure(self, i: int, state: SearchState) -> None:
        """Score hparam ``i`` at its choices, smallest first, one choice per process at a time."""
        hp = self.costs.hparams[self.names[i]]
        if hp.is_categorical:
            return
        choices = sorted(int(c) for c in hp.choices)[:-1]
        top = state.probes[self.maximum]
        for start in range(0, len(choices), self.ranks.world):
            chunk = choices[start : start + self.ranks.world]
            rows = [self.maximum[:i] + (c,) + self.maximum[i + 1 :] for c in chunk]
            self._probe(rows, state)
            if any(top - state.probes[row] < NO_DROP for row in rows):
                return

    def _fits(self, rows: list[tuple]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Which rows meet every bound, and their costs."""
        found = self.costs.evaluate(np.array(rows, dtype=np.int64))
        ok = np.ones(len(rows), dtype=bool)
        for key, bound in self.bounds.items():
            if key != "latency":
                ok &= found[key] <= bound
        if "latency" in self.bounds:
            ok &= np.array([self.latency.predict(self._config(r)) <= self.bounds["latency"] for r in rows])
        return ok, found

    def at_threshold(self, drops: dict[str, dict[int, float]], threshold: float) -> dict[str, Any]:
        """Each measured hparam's smallest choice whose drop is within ``threshold``; others at max."""
        hps = self.costs.hparams
        return {
            name: min(c for c, drop in drops[name].items() if drop <= threshold) if name in drops else hps[name].max
            for name in self.names
        }

    def threshold(self, drops: dict[str, dict[int, float]]) -> float:
        """The smallest threshold whose subnet meets every bound (bisection over the map's values)."""
        values = sorted({drop for per_choice in drops.values() for drop in per_choice.values()})
        if not values:  # nothing to prune: no numeric hparam
            return 0.0
        low, high = 0, len(values) - 1  # values[-1] selects the smallest subnet, which meets the bounds
        while low < high:
            middle = (low + high) // 2
            if self._fits([self._row(self.at_threshold(drops, values[middle]))])[0][0]:
                high = middle
            else:
                low = middle + 1
        return values[low]

    def fill(self, drops: dict[str, dict[int, float]], config: dict[str, Any]) -> dict[str, Any]:
        """Spend what the threshold's subnet leaves of the budget: grow hparams one choice at a time.

        The threshold moves in steps of whole drop values, so its subnet can stop well short of
        the bounds (with no drops at all it is the smallest subnet). Each step takes the growth
        that fits and lowers the map's drop the most, the cheapest in flops on ties.
        """
        names, row = self.names, list(self._row(config))
        ladders = {i: sorted(drops[n]) for i, n in enumerate(names) if n in drops}
        while True:
            moves = [i for i, ladder in ladders.items() if row[i] != ladder[-1]]
            grown = [tuple(row[:i] + [ladders[i][ladders[i].index(row[i]) + 1]] + row[i + 1 :]) for i in moves]
            if not grown:
                return self._config(row)
            ok, found = self._fits(grown)
            gains = [
                (drops[names[i]][row[i]] - drops[names[i]][g[i]], -float(f), -i, g)  # -i is unique: g never compared
                for i, g, f, fits in zip(moves, grown, found["flops"], ok, strict=True)
                if fits
            ]
            if not gains:
                return self._config(row)
            row = list(max(gains)[3])

    def run(
        self, state: SearchState | None = None, on_iteration: Callable[[SearchState], None] | None = None
    ) -> SearchState:
        """Measure the map (continuing from ``state``), then score the subnet at the threshold."""
        state = state or SearchState()
        self._probe([self.maximum], state)
        while state.iteration < len(self.names):
            self._measure(state.iteration, state)
            state.iteration += 1
            if on_iteration is not None:
                on_iteration(state)
        drops = sensitivity_map(self.costs, state.probes)
        config = self.fill(drops, self.at_threshold(drops, self.threshold(drops)))
        row = self._row(config)
        if row not in state.evaluated:
            found = self.costs.cost(config)
            latency = self.latency.predict(config) if self.latency is not None else None
            value = score_shared([config], self.score, self.ranks)[0]
            state.evaluated[row] = Candidate(config, found["flops"], found["params"], value, latency)
        return state


def threshold_report(costs: CostModel, state: SearchState) -> dict[str, Any]:
    """The measured map and the unpruned score, for search.json."""
    drops = sensitivity_map(costs, state.probes)
    return {"original_score": state.probes[_max_row(costs)], "sensitivity": drops}
