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
from nascli.nas import autonas, config, patch, utils
from nascli.nas.config import resolve_modes
from nascli.nas.search_config import translate_search_config
from nascli.nas.utils import (
    as_inputs,
    converted_module,
    enable_modelopt_patches,
    inference_flops,
    is_dynamic,
    is_modelopt_patches_enabled,
    named_hparams,
    no_modelopt_patches,
    plain_model_stats,
    set_modelopt_patches_enabled,
)
from nascli.opt.checkpoint import remember_conversion
from nascli.recipe.factory import build_model
from nascli.space.convert import convert_model, costs_at_input
from nascli.space.dummy_input import guess_dummy_input
from nascli.space.export import export_model
from nascli.space.importance import sort_channels_by_importance
from nascli.space.patches import calibrate_after_eval, reset_before_sample
from nascli.space.space import get_space, is_converted, random_sampling

__all__ = [
    "autonas",
    "config",
    "convert",
    "enable_modelopt_patches",
    "export",
    "get_subnet_config",
    "inference_flops",
    "is_converted",
    "is_dynamic",
    "is_modelopt_patches_enabled",
    "named_hparams",
    "no_modelopt_patches",
    "patch",
    "print_search_space_summary",
    "profile",
    "random_sampling",
    "search",
    "sample",
    "select",
    "set_modelopt_patches_enabled",
    "sort_channels_by_importance",
    "utils",
]


def convert(
    model: nn.Module | Callable[[], nn.Module] | str | tuple,
    mode: Any = "autonas",
    dummy_input: torch.Tensor | tuple | None = None,
) -> nn.Module:
    """Convert a model (or a factory, a ``"module:attr"`` factory name or ``(cls, args, kwargs)``)
    into a search space.

    ``mode`` is ``"autonas"``, ``"fastnas"``, ``("autonas", config)`` or a list of those, as in
    ModelOpt: ``[]`` leaves the model as it is, and a trailing ``"export_nas"`` returns the
    active subnet exported. The model is traced once with ``dummy_input`` (one sample); without
    it, the input is guessed (space/dummy_input.py): a size the model declares or a common one that
    its forward accepts.
    """
    model = build_model(model)
    modes, export_after = resolve_modes(mode)
    for name, rules in modes:
        inputs = as_inputs(dummy_input) if dummy_input is not None else guess_dummy_input(model)
        convert_model(model, name, rules, inputs)
    return export(model) if export_after else model


def sample(model: nn.Module, sample_func: Any = random.choice) -> dict[str, Any]:
    """Activate a subnet: ``max``, ``min``, ``random.choice``, "min"/"max"/"centroid"/"random",
    or a dict of those keyed by hparam-name patterns.

    Returns the whole subnet config (every listed attribute, as ``get_subnet_config``), as
    ModelOpt does, so it can be passed to ``select`` or compared with ``get_subnet_config``.
    As in ModelOpt, the subnet is not pinned: in train mode the next forward draws a random one
    again, unless random sampling is off (``random_sampling(model, False)``,
    ``no_modelopt_patches()``); ``eval()`` next re-estimates BN statistics for it. ``model``
    may hold the converted module (names then start with its path); one holding none has
    nothing to sample and gets ``{}``.
    """
    found = converted_module(model)
    if found is None:
        return {}
    space = get_space(found[1])
    sampling = space.sample_in_train
    space.sample(sample_func)
    space.sample_in_train = sampling
    reset_before_sample(space.patch_data)
    return _prefixed(found[0], space.config(None))


def select(model: nn.Module, config: dict[str, Any]) -> None:
    """Activate the subnet described by ``config`` (hparam name -> value).

    Like ``sample``, it leaves random sampling in train mode as it was, as ModelOpt does.
    """
    if not isinstance(config, dict):
        raise UserInputError(f"select: expected a dict of hparam name to value, got {type(config).__name__}")
    found = converted_module(model)
    if found is None and not config:
        return  # an empty config fits a model with no hparams, as in ModelOpt
    if found is None:
        get_space(model)  # the error that says to convert first
        return
    prefix = f"{found[0]}." if found[0] else ""
    if stray := [name for name in config if not name.startswith(prefix)]:
        raise UserInputError(f"select: {stray[0]!r} is not an hparam of {found[0]!r}, the converted module")
    space = get_space(found[1])
    sampling = space.sample_in_train
    space.select({name.removeprefix(prefix): value for name, value in config.items()})
    space.sample_in_train = sampling
    reset_before_sample(space.patch_data)


def get_subnet_config(model: nn.Module, configurable: bool | None = None) -> dict[str, Any]:
    """Active values of every listed attribute (None), the search dimensions only (True), or the fixed ones (False).

    ``{}`` for a model that holds no converted module, as in ModelOpt.
    """
    found = converted_module(model)
    return {} if found is None else _prefixed(found[0], get_space(found[1]).config(configurable))


def _prefixed(name: str, config: dict[str, Any]) -> dict[str, Any]:
    """Hparam names as seen from a model holding the converted module ``name``."""
    return {f"{name}.{key}": value for key, value in config.items()} if name else config


def print_search_space_summary(model: nn.Module, verbose: bool = False, file: IO[str] | None = None) -> None:
    """Print each searchable attribute with its choices (``*`` marks a search dimension).

    ``verbose`` also lists every fixed dimension with the reason it is fixed (model input or
    output, an operation the tracer cannot follow, an untraceable module, rounding), so a user
    can see what to change in the model or the rules.
    """
    print(get_space(model).summary(verbose), file=file or sys.stdout)


def export(model: nn.Module, calib: bool = False) -> nn.Module:
    """The active subnet as a new plain model of native layers (the converted model is kept).

    The new model remembers the conversion it came from, so ``nascli.opt.save`` of it restores
    from the original model (``nascli.opt.restore(original, path)``). ``calib=True`` first
    re-estimates the converted model's BN statistics from the batches it cached in train mode,
    as its ``eval()`` would (ModelOpt's ``calib``), so the export carries statistics of its subnet.
    """
    space = get_space(model)
    if calib:
        calibrate_after_eval(model, space)
    return remember_conversion(export_model(model), model)


def profile(
    model: nn.Module,
    dummy_input: torch.Tensor | tuple | None = None,
    constraints: dict[str, Any] | None = None,
    verbose: bool = True,
    use_centroid: bool = True,
) -> tuple[bool, dict[str, Any]]:
    """Flops and params of the min, centroid and max subnets, and whether ``constraints`` can be met.

    Costs come from the analytic cost model (no forward pass). Constraints take numbers, "2G",
    "350M" or "60%" of the original model. Returns ``(is_satisfied, stats)``. A model that was
    not converted gets the costs of its one network under ``stats["full"]``, as in ModelOpt.
    ``use_centroid=False`` leaves the centroid out of the stats.
    """
    if not is_converted(model):
        if dummy_input is None:
            dummy_input = guess_dummy_input(model)
        is_satisfied, stats = plain_model_stats(model, as_inputs(dummy_input), constraints)
        if verbose:
            print(f"full model: flops {stats['full']['flops']:,}, params {stats['full']['params']:,}")
        return is_satisfied, stats
    if dummy_input is not None:
        costs_at_input(model, as_inputs(dummy_input))  # the costs of inputs of this shape
    costs = cost_model(model)
    is_satisfied, stats = profile_costs(costs, constraints)
    if verbose:
        render_profile(stats, costs, Console(soft_wrap=True, highlight=False))
    if not use_centroid:
        del stats["centroid"]
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
    "uniform",
}


def search(
    model: nn.Module,
    constraints: dict[str, Any],
    dummy_input: torch.Tensor | tuple | None = None,
    config: dict[str, Any] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Find the best-scoring subnet that meets ``constraints`` and select it.

    ``config``: ``score_func(model) -> float`` (higher is better), ``data_loader`` (batches for
    BN recalibration before each score; without it BN statistics are left as they are),
    ``max_iter_data_loader`` (recalibration batches, default 10), ``algorithm`` ("evolve",
    "random", or "sensitivity": FastNAS's per-hparam score drops and a bisected global
    threshold; the default for fastnas models, "evolve" for others), ``uniform`` (True: the
    hparams of one role take one value in every block, e.g. every layer's MLP width, as a
    Hugging Face config needs) and the searcher's settings (population, parents, mutation_prob,
    crossover, iterations, time_budget, lower_bound_ratio, seed). ModelOpt's ``num_iters``,
    ``population_size`` and ``candidate_size`` name iterations, population and parents;
    ``checkpoint`` is a path the searched model is saved to; ``verbose`` prints the chosen
    subnet. A fastnas model's channels are first sorted by weight importance, so each width
    keeps its most important channels, unless they were sorted already
    (``sort_channels_by_importance(model, batches)`` sorts by activations). Returns the model
    with the best subnet active and the search history (candidates, Pareto front, best).
    """
    from nascli.search.evolve import SearchSettings
    from nascli.search.run import search_report, search_subnet

    settings, extras = translate_search_config(dict(config or {}))
    loader = settings.pop("data_loader", None)
    try:
        score_func = settings.pop("score_func")
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
        costs_at_input(model, as_inputs(dummy_input))  # constraints hold for inputs of this shape
    costs = cost_model(model)
    original = costs.cost(costs.named("max"), ("flops", "params", "memory"))
    bounds = resolve_constraints(constraints, original)
    if get_space(model).modes[-1][0] == "fastnas" and get_space(model).sorted_by is None:
        sort_channels_by_importance(model)
    uniform = settings.pop("uniform", False)
    if not isinstance(uniform, bool):
        raise UserInputError(f"search: config key 'uniform' must be True or False, got {uniform!r}")
    best, state = search_subnet(
        model, bounds, score_func, loader, batches, SearchSettings(**settings), algorithm, uniform=uniform
    )
    report = search_report(state, best, bounds, original, model, uniform)
    if extras["verbose"]:
        print(f"search: chosen subnet flops {best.flops:,}, params {best.params:,}, score {best.score:.4g}")
    if extras["checkpoint"] is not None:
        from nascli.opt import save

        save(model, extras["checkpoint"])
    return model, report


def _check_search_inputs(loader: Any, score_func: Any) -> None:
    """Refuse a score function that cannot be called and a data loader BN recalibration cannot use.

    Recalibration runs once per scored subnet, so the loader must yield batches every time it
    is iterated: an empty one would leave BN statistics as they were and score every subnet
    with the wrong ones, and a one-shot iterator would be empty from the second subnet on.
    """
    if not callable(score_func):
        raise UserInputError(f"search: score_func must be callable (model -> float), got {type(score_func).__name__}")
    if loader is None:  # no BN recalibration: the score function sees each subnet as it is
        return
    try:
        iterator = iter(loader)
    except TypeError:
        raise UserInputError(f"search: data_loader must be iterable, got {type(loader).__name__}") from None
    if iterator is loader:
        raise UserInputError("search: data_loader is a one-shot iterator; give a DataLoader or a list of batches")
    if next(iterator, None) is None:
        raise UserInputError("search: data_loader yields no batches")
