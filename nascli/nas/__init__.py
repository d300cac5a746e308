"""Public NAS API, call for call like ``modelopt.torch.nas``: ``import nascli.nas as mtn``."""

from __future__ import annotations

import random
import sys
from collections.abc import Callable
from typing import IO, Any

import torch
from rich.console import Console
from torch import nn

from nascli.cost.constraints import resolve_constraints
from nascli.cost.model import cost_model
from nascli.cost.profile import profile_costs, render_profile
from nascli.errors import UserInputError
from nascli.nas import config
from nascli.nas.config import resolve_mode
from nascli.recipe.factory import build_model
from nascli.space.convert import convert_model, default_dummy_input
from nascli.space.export import export_model
from nascli.space.importance import sort_channels_by_importance
from nascli.space.space import get_space, is_converted, random_sampling

__all__ = [
    "config",
    "convert",
    "export",
    "get_subnet_config",
    "is_converted",
    "print_search_space_summary",
    "profile",
    "random_sampling",
    "search",
    "sample",
    "select",
    "sort_channels_by_importance",
]


def as_inputs(dummy_input: Any) -> tuple[torch.Tensor, ...]:
    """A dummy input given as one tensor or a tuple of forward arguments, as a tuple."""
    return dummy_input if isinstance(dummy_input, tuple) else (dummy_input,)


def convert(
    model: nn.Module | Callable[[], nn.Module] | str,
    mode: Any = "autonas",
    dummy_input: torch.Tensor | tuple | None = None,
) -> nn.Module:
    """Convert a model (or a factory, or a ``"module:attr"`` factory name) into a search space.

    ``mode`` is ``"autonas"``, ``"fastnas"`` or ``[("autonas", config)]``. The model is traced
    once with ``dummy_input`` (one sample); without it, the input is guessed from the first layer
    (224-pixel images for a conv net).
    """
    model = build_model(model)
    name, rules = resolve_mode(mode)
    inputs = as_inputs(dummy_input) if dummy_input is not None else default_dummy_input(model)
    return convert_model(model, name, rules, inputs)


def sample(model: nn.Module, sample_func: Any = random.choice) -> dict[str, Any]:
    """Activate a subnet: ``max``, ``min``, ``random.choice``, "min"/"max"/"centroid"/"random",
    or a dict of those keyed by hparam-name patterns. Returns the subnet config."""
    return get_space(model).sample(sample_func)


def select(model: nn.Module, config: dict[str, Any]) -> None:
    """Activate the subnet described by ``config`` (hparam name -> value)."""
    if not isinstance(config, dict):
        raise UserInputError(f"select: expected a dict of hparam name to value, got {type(config).__name__}")
    get_space(model).select(config)


def get_subnet_config(model: nn.Module, configurable: bool | None = None) -> dict[str, Any]:
    """Active values of every listed attribute (None), the search dimensions only (True), or the fixed ones (False)."""
    return get_space(model).config(configurable)


def print_search_space_summary(model: nn.Module, verbose: bool = False, file: IO[str] | None = None) -> None:
    """Print each searchable attribute with its choices (``*`` marks a search dimension).

    ``verbose`` also lists every fixed dimension with the reason it is fixed (model input or
    output, an operation the tracer cannot follow, an untraceable module, rounding), so a user
    can see what to change in the model or the rules.
    """
    print(get_space(model).summary(verbose), file=file or sys.stdout)


def export(model: nn.Module) -> nn.Module:
    """The active subnet as a new plain model of native layers (the converted model is kept)."""
    return export_model(model)


def profile(
    model: nn.Module,
    dummy_input: torch.Tensor | tuple | None = None,
    constraints: dict[str, Any] | None = None,
    verbose: bool = True,
) -> tuple[bool, dict[str, Any]]:
    """Flops and params of the min, centroid and max subnets, and whether ``constraints`` can be met.

    Costs come from the analytic cost model (no forward pass). Constraints take numbers, "2G",
    "350M" or "60%" of the original model. Returns ``(is_satisfied, stats)``.
    """
    space = get_space(model)
    if dummy_input is not None:
        given = [tuple(t.shape[1:]) for t in as_inputs(dummy_input)]
        recorded = [tuple(s[1:]) for s in space.input_shapes]
        if given != recorded:
            raise UserInputError(
                f"profile: dummy input of sample shape {given} differs from the shape the model was converted "
                f"with {recorded}; convert with dummy_input= of the deployment shape"
            )
    costs = cost_model(model)
    is_satisfied, stats = profile_costs(costs, constraints)
    if verbose:
        render_profile(stats, costs, Console(soft_wrap=True, highlight=False))
    return is_satisfied, stats


_SEARCH_KEYS = {
    "population",
    "parents",
    "mutation_prob",
    "crossover",
    "iterations",
    "time_budget",
    "lower_bound_ratio",
    "seed",
}


def search(
    model: nn.Module,
    constraints: dict[str, Any],
    dummy_input: torch.Tensor | tuple | None = None,
    config: dict[str, Any] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Find the best-scoring subnet that meets ``constraints`` and select it.

    ``config``: ``data_loader`` (batches for BN recalibration), ``score_func(model) -> float``
    (higher is better), ``max_iter_data_loader`` (recalibration batches, default 10),
    ``algorithm`` ("evolve", "random", or "sensitivity": FastNAS's per-hparam score drops and a
    bisected global threshold; the default for fastnas models, "evolve" for others) and the
    searcher's settings (population, parents,
    mutation_prob, crossover, iterations, time_budget, lower_bound_ratio, seed). Returns the
    model with the best subnet active and the search history (candidates, Pareto front, best).
    """
    from nascli.search.evolve import SearchSettings
    from nascli.search.run import search_report, search_subnet

    settings = dict(config or {})
    try:
        loader, score_func = settings.pop("data_loader"), settings.pop("score_func")
    except KeyError as exc:
        raise UserInputError(f"search: config needs {exc.args[0]!r}") from None
    _check_search_inputs(loader, score_func)
    batches = settings.pop("max_iter_data_loader", 10)
    algorithm = settings.pop("algorithm", None)
    if algorithm not in (None, "evolve", "random", "sensitivity"):
        raise UserInputError(f"search: algorithm {algorithm!r} is not one of evolve, random, sensitivity")
    unknown = set(settings) - _SEARCH_KEYS
    if unknown:
        raise UserInputError(f"search: unknown config keys {sorted(unknown)} (known: {sorted(_SEARCH_KEYS)})")
    if dummy_input is not None:
        profile(model, dummy_input, verbose=False)  # checks the input shape matches the conversion
    costs = cost_model(model)
    original = costs.cost(costs.named("max"), ("flops", "params", "memory"))
    bounds = resolve_constraints(constraints, original)
    best, state = search_subnet(model, bounds, score_func, loader, batches, SearchSettings(**settings), algorithm)
    return model, search_report(state, best, bounds, original, model)


def _check_search_inputs(loader: Any, score_func: Any) -> None:
    """Refuse a score function that cannot be called and a data loader BN recalibration cannot use.

    Recalibration runs once per scored subnet, so the loader must yield batches every time it
    is iterated: an empty one would leave BN statistics as they were and score every subnet
    with the wrong ones, and a one-shot iterator would be empty from the second subnet on.
    """
    if not callable(score_func):
        raise UserInputError(f"search: score_func must be callable (model -> float), got {type(score_func).__name__}")
    try:
        iterator = iter(loader)
    except TypeError:
        raise UserInputError(f"search: data_loader must be iterable, got {type(loader).__name__}") from None
    if iterator is loader:
        raise UserInputError("search: data_loader is a one-shot iterator; give a DataLoader or a list of batches")
    if next(iterator, None) is None:
        raise UserInputError("search: data_loader yields no batches")
