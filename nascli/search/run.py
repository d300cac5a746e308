"""Search a converted (trained) model for the best subnet under constraints."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

from torch import nn

from nascli.cost.latency import LatencyModel
from nascli.cost.model import CostModel, cost_model
from nascli.errors import UserInputError
from nascli.search.evolve import Candidate, ConstrainedSearch, SearchSettings, SearchState, best_candidate
from nascli.search.pareto import pareto_front
from nascli.search.sensitivity import SensitivitySearch, threshold_report
from nascli.search.uniform import UniformCosts
from nascli.space.space import get_space, random_sampling
from nascli.train.bn import recalibrate_bn
from nascli.train.distributed import Ranks


def search_subnet(
    model: nn.Module,
    bounds: dict[str, float],
    score_model: Callable[[nn.Module], float],
    calib_loader: Iterable | None,
    calib_batches: int,
    settings: SearchSettings,
    algorithm: str | None = None,
    on_iteration: Callable[[SearchState], None] | None = None,
    state: SearchState | None = None,
    latency: LatencyModel | None = None,
    ranks: Ranks = Ranks(),
    uniform: bool = False,
) -> tuple[Candidate, SearchState]:
    """Run (or continue from ``state``) the search; the best subnet is left selected, BN recalibrated.

    ``algorithm``: "evolve", "random" or "sensitivity" (FastNAS's map and threshold); by default
    "sensitivity" for a model converted in fastnas mode and "evolve" otherwise. ``uniform``: the
    hparams of one role in every block take one value (search/uniform.py); a resumed ``state``
    must come from a search with the same setting.
    """
    space = get_space(model)
    algorithm = algorithm or default_algorithm(model)

    def score(config: dict[str, Any]) -> float:
        with random_sampling(model, enabled=False):
            space.select(config)
            return score_active(model, score_model, calib_loader, calib_batches)

    costs = search_costs(model, uniform)
    if algorithm == "sensitivity":
        search = SensitivitySearch(costs, bounds, score, latency, ranks)
    else:
        search = ConstrainedSearch(costs, bounds, score, settings, algorithm, latency, ranks)
    state = search.run(state, on_iteration=on_iteration)
    best = best_candidate(state)
    score(best.config)
    space.sample_in_train = False  # the chosen subnet stays active in a training loop of the caller's
    return best, state


def search_costs(model: nn.Module, uniform: bool) -> CostModel | UniformCosts:
    """The cost model the search walks: over the model's hparams, or over roles when ``uniform``."""
    costs = cost_model(model)
    return UniformCosts(costs) if uniform else costs


def score_active(
    model: nn.Module, score_model: Callable[[nn.Module], float], calib_loader: Iterable | None, calib_batches: int
) -> float:
    """The active subnet's score as every search takes it: BN recalibrated, in eval mode whatever
    mode the caller left the model in, checked to be a finite number."""
    if calib_loader is not None:
        recalibrate_bn(model, calib_loader, calib_batches)
    was_training = model.training
    model.eval()
    try:
        return checked_score(score_model(model))
    finally:
        model.train(was_training)


def checked_score(value: Any) -> float:
    """A score as a float; one that is not a finite number would rank subnets arbitrarily (NaN
    compares false with everything), so it stops the search naming the value."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UserInputError(f"score_func returned {value!r}: expected a finite number") from None
    if not math.isfinite(number):
        raise UserInputError(f"score_func returned {number}: expected a finite number")
    return number


def default_algorithm(model: nn.Module) -> str:
    """FastNAS prunes with its sensitivity map, as ModelOpt's fastnas mode does; NAS modes evolve."""
    return "sensitivity" if get_space(model).modes[-1][0] == "fastnas" else "evolve"


def _history_keys(bounds: dict[str, float]) -> list[str]:
    """The metrics a candidate records: flops and params always, latency when it was bounded."""
    return ["flops", "params", *(["latency"] if "latency" in bounds else [])]


def search_report(
    state: SearchState,
    best: Candidate,
    bounds: dict[str, float],
    original: dict[str, int],
    model: nn.Module,
    uniform: bool = False,
) -> dict:
    """The search as plain data: every candidate, the Pareto front (score against flops), the best.

    ``history`` holds ModelOpt's per-candidate lists: each scored candidate's score (``metric``)
    and its flops, params and (under a latency bound) latency (``constraints``).
    A sensitivity search adds its map (score drop per hparam, or role when ``uniform``, and
    choice) and the unpruned score.
    """
    candidates = list(state.evaluated.values())
    front = pareto_front([c.flops for c in candidates], [c.score for c in candidates])

    def as_dict(c: Candidate) -> dict[str, Any]:
        return {"config": c.config, "flops": c.flops, "params": c.params, "latency": c.latency, "score": c.score}

    return {
        "original": original,
        "constraints": bounds,
        "best": as_dict(best),
        "candidates": [as_dict(c) for c in candidates],
        "pareto": [as_dict(candidates[i]) for i in front],
        "iterations": state.iteration,
        "uniform": uniform,
        "history": {
            "metric": [c.score for c in candidates],
            "constraints": {key: [getattr(c, key) for c in candidates] for key in _history_keys(bounds)},
        },
        **(threshold_report(search_costs(model, uniform), state) if state.probes else {}),
    }
