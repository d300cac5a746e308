"""Evolutionary and random search, with candidates generated only inside the constraints.

The analytic cost model checks constraints for whole batches of candidate configs, so the
search never builds, traces or scores a subnet that breaks a bound; only scoring (BN
recalibration and validation) touches the model. A candidate is never scored twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch.distributed as dist

from nascli.cost.latency import LatencyModel
from nascli.cost.model import CostModel
from nascli.errors import ConstraintError
from nascli.train.distributed import Ranks


@dataclass
class SearchSettings:
    population: int = 100
    parents: int = 25  # the best this many, at most half the population, breed the next generation
    mutation_prob: float = 0.1
    crossover: bool = True
    iterations: int = 10
    time_budget: float | None = None  # seconds; stops after the iteration that exceeds it
    lower_bound_ratio: float = 0.85  # candidates use at least this share of each upper bound
    seed: int = 0


@dataclass
class Candidate:
    config: dict[str, Any]
    flops: int
    params: int
    score: float
    latency: float | None = None  # predicted seconds, when searching under a latency bound


@dataclass
class SearchState:
    """Everything needed to continue a search: scored candidates, population, RNG, iteration.

    ``probes`` holds configs scored only to measure sensitivity (they need not meet the bounds,
    so they are not candidates).
    """

    evaluated: dict[tuple, Candidate] = field(default_factory=dict)
    population: list[tuple] = field(default_factory=list)
    iteration: int = 0
    rng_state: dict | None = None
    probes: dict[tuple, float] = field(default_factory=dict)

    def to_plain(self) -> dict[str, Any]:
        """Plain data for a checkpoint (128-bit generator words stored as strings)."""
        rng = None
        if self.rng_state is not None:
            rng = {**self.rng_state, "state": {k: str(v) for k, v in self.rng_state["state"].items()}}
        return {
            "evaluated": [
                [list(row), c.config, c.flops, c.params, c.score, c.latency] for row, c in self.evaluated.items()
            ],
            "population": [list(row) for row in self.population],
            "iteration": self.iteration,
            "rng_state": rng,
            "probes": [[list(row), score] for row, score in self.probes.items()],
        }

    @classmethod
    def from_plain(cls, data: dict[str, Any]) -> SearchState:
        rng = data["rng_state"]
        if rng is not None:
            rng = {**rng, "state": {k: int(v) for k, v in rng["state"].items()}}
        evaluated = {tuple(row): Candidate(dict(config), *rest) for row, config, *rest in data["evaluated"]}
        probes = {tuple(row): score for row, score in data.get("probes", [])}  # older checkpoints have none
        return cls(evaluated, [tuple(r) for r in data["population"]], data["iteration"], rng, probes)


def check_satisfiable(costs: CostModel, bounds: dict[str, float], latency: LatencyModel | None = None) -> None:
    """Refuse bounds that even the smallest subnet breaks, naming each bound and the smallest cost."""
    smallest = costs.config_of(costs.encode(costs.named("min"))[0])
    minimum: dict[str, float] = dict(costs.cost(smallest, ("flops", "params", "memory")))
    if "latency" in bounds:
        if latency is None:
            raise ValueError("a latency bound needs a latency model")
        minimum["latency"] = latency.predict(smallest)
    failing = [k for k, bound in bounds.items() if minimum[k] > bound]
    if failing:
        details = ", ".join(f"{k} <= {bounds[k]:,.0f} (smallest subnet: {minimum[k]:,})" for k in failing)
        raise ConstraintError(f"constraints cannot be met: {details}")


def score_shared(configs: list[dict[str, Any]], score: Callable[[dict[str, Any]], float], ranks: Ranks) -> list[float]:
    """Score the configs; across processes each rank scores every world-th one and all get every score."""
    scores = {i: score(configs[i]) for i in range(ranks.rank, len(configs), ranks.world)}
    if ranks.world > 1:
        shared: list[dict[int, float]] = [{} for _ in range(ranks.world)]
        dist.all_gather_object(shared, scores)
        scores = {i: value for part in shared for i, value in part.items()}
    return [scores[i] for i in range(len(configs))]


class ConstrainedSearch:
    """Evolution (``algorithm="evolve"``) or random sampling (``"random"``) under cost bounds."""

    def __init__(
        self,
        costs: CostModel,
        bounds: dict[str, float],
        score: Callable[[dict[str, Any]], float],
        settings: SearchSettings,
        algorithm: str = "evolve",
        latency: LatencyModel | None = None,
        ranks: Ranks = Ranks(),
    ) -> None:
        self.costs, self.score, self.settings, self.algorithm = costs, score, settings, algorithm
        self.ranks = ranks
        self.bounds = {k: v for k, v in bounds.items() if k != "latency"}
        self.latency_bound = bounds.get("latency")
        self.latency = latency
        self.choices = [costs.column_values(name) for name in costs.names]
        self.rng = np.random.default_rng(settings.seed)
        check_satisfiable(costs, bounds, latency)

    # -- candidate generation ------------------------------------------------------------------
    def _valid(self, matrix: np.ndarray, lower: bool) -> np.ndarray:
        """The rows within every bound (and, with ``lower``, using at least the budget's lower share)."""
        ratio = self.settings.lower_bound_ratio
        found = self.costs.evaluate(matrix)  # once, for the upper and the lower bounds
        ok = np.ones(matrix.shape[0], dtype=bool)
        for key, bound in self.bounds.items():
            ok &= found[key] <= bound
            if lower:
                ok &= found[key] >= ratio * bound
        matrix = matrix[ok]
        if self.latency_bound is None:
            return matrix
        low = ratio * self.latency_bound if lower else 0.0
        predicted = np.array([self._predict(row) for row in matrix.tolist()])
        return matrix[(predicted <= self.latency_bound) & (predicted >= low)] if len(matrix) else matrix

    def _predict(self, row: list[int]) -> float:
        return self.latency.predict(self.costs.config_of(row))

    def _random(self, n: int) -> np.ndarray:
        return np.stack([c[self.rng.integers(0, len(c), n)] for c in self.choices], axis=1).astype(np.int64)

    def _fresh(self, proposals: Callable[[int], np.ndarray], wanted: int, seen: set[tuple]) -> list[tuple]:
        """Up to ``wanted`` new in-bounds configs; the lower bound is dropped if it starves the search."""
        found: list[tuple] = []
        if wanted <= 0:
            return found
        for attempt in range(50):
            batch = self._valid(proposals(max(256, 4 * wanted)), lower=attempt < 25)
            for row in map(tuple, batch.tolist()):
                if row not in seen:
                    seen.add(row)
                    found.append(row)
                    if len(found) == wanted:
                        return found
        return found

    def _mutate(self, parents: np.ndarray) -> Callable[[int], np.ndarray]:
        def propose(n: int) -> np.ndarray:
            base = parents[self.rng.integers(0, len(parents), n)].copy()
            if self.settings.crossover and len(parents) > 1:
                other = parents[self.rng.integers(0, len(parents), n)]
                take = self.rng.random(base.shape) < 0.5
                base[take] = other[take]
            fresh = self._random(n)
            mutate = self.rng.random(base.shape) < self.settings.mutation_prob
            base[mutate] = fresh[mutate]
            return base

        return propose

    # -- loop ----------------------------------------------------------------------------------
    def _evaluate(self, rows: list[tuple], state: SearchState) -> None:
        """Score the new rows; across processes each rank scores its share and all share the scores."""
        rows = [row for row in dict.fromkeys(rows) if row not in state.evaluated]
        if not rows:
            return
        configs = [self.costs.config_of(row) for row in rows]
        scores = score_shared(configs, self.score, self.ranks)
        found = self.costs.evaluate(np.array(rows, dtype=np.int64))
        for i, (row, config) in enumerate(zip(rows, configs, strict=True)):
            latency = self.latency.predict(config) if self.latency is not None else None
            flops, params = int(found["flops"][i]), int(found["params"][i])
            state.evaluated[row] = Candidate(config, flops, params, scores[i], latency)

    def run(
        self, state: SearchState | None = None, on_iteration: Callable[[SearchState], None] | None = None
    ) -> SearchState:
        """Search until the iterations or the time budget are used; resumable from ``state``."""
        state = state or SearchState()
        if state.rng_state is not None:
            self.rng.bit_generator.state = state.rng_state
        start = time.perf_counter()
        seen = set(state.evaluated)
        settings = self.settings
        while state.iteration < settings.iterations:
            if not state.population or self.algorithm == "random":
                rows = self._fresh(self._random, settings.population, seen)
            else:
                ranked = sorted(state.population, key=lambda r: -state.evaluated[r].score)
                kept = ranked[: min(settings.parents, max(1, settings.population // 2))]  # room for children
                parents = np.array(kept, dtype=np.int64)
                rows = kept + self._fresh(self._mutate(parents), settings.population - len(parents), seen)
            self._evaluate(rows, state)
            state.population = sorted(set(rows) | set(state.population), key=lambda r: -state.evaluated[r].score)[
                : settings.population
            ]
            state.iteration += 1
            state.rng_state = self.rng.bit_generator.state
            if on_iteration is not None:
                on_iteration(state)
            if settings.time_budget is not None and time.perf_counter() - start > settings.time_budget:
                break
        return state


def best_candidate(state: SearchState) -> Candidate:
    """The highest score; ties go to the cheaper subnet."""
    return max(state.evaluated.values(), key=lambda c: (c.score, -c.flops, -c.params))
