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
from nascli.nas.config import (
    EXPORT_MODES,
    ExportConfig,
    ExportNASModeDescriptor,
    check_next_mode,
    current_mode,
    resolve_modes,
)
from nascli.nas.deferred import defer, resolve
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
    replace_forward,
    set_modelopt_patches_enabled,
)
from nascli.opt.checkpoint import convert_recorded, export_recorded, remember_conversion, state_at_root
from nascli.recipe.factory import build_model
from nascli.space.convert import costs_at_input
from nascli.space.dummy_input import guess_dummy_input
from nascli.space.export import export_model
from nascli.space.importance import sort_channels_by_importance
from nascli.space.patches import calibrate_after_eval, reset_before_sample
from nascli.space.space import check_not_pending, get_space, is_converted, is_pending, random_sampling

__all__ = [
    "ExportConfig",
    "ExportNASModeDescriptor",
    "autonas",
    "config",
    "convert",
    "enable_modelopt_patches",
    "export",
    "export_copy",
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
    "replace_forward",
    "search",
    "search_select",
    "sample",
    "select",
    "set_modelopt_patches_enabled",
    "sort_channels_by_importance",
    "utils",
]


def convert(
    model: nn.Module | Callable[[], nn.Module] | str | tuple,
    mode: Any = "autonas",
    registry: Any = None,
    dummy_input: torch.Tensor | tuple | None = None,
) -> nn.Module:
    """Convert a model (or a factory, a ``"module:attr"`` factory name or ``(cls, args, kwargs)``)
    into a search space, in place.

    ``mode`` is ``"autonas"``, ``"fastnas"``, ``("autonas", config)``, ``"export_nas"`` or a list
    of those, applied in order as in ModelOpt: ``[]`` leaves the model as it is, ``export_nas``
    exports the search space in place (``export``), and a model exported so may be converted
    again (``["autonas", "export_nas", "fastnas"]``). A chain ModelOpt refuses (a search-space
    mode on one not yet exported, ``export_nas`` with nothing to export) is an AssertionError
    with ModelOpt's message, raised before anything is applied. Each conversion traces the
    model once with ``dummy_input`` (one sample); without it, the input is guessed
    (space/dummy_input.py): a size the model declares or a common one that its forward accepts.
    When no guess runs the model (a 1-d model of a fixed length, a model of unknown layers), the
    conversion waits for the first real input (nas/deferred.py): the model's first forward, or
    ``profile``, ``search`` or ``convert`` given ``dummy_input``, converts it in place. nascli has
    one registry of modes, so ``registry`` (ModelOpt's third parameter) must be None.
    """
    if registry is not None:
        raise UserInputError("convert: registry must be None (nascli's modes are all in one registry)")
    model = build_model(model)
    steps = resolve_modes(mode)
    if not steps:
        return model
    state_at_root(model)  # a state held by a submodule is that module's to extend
    last = current_mode(model)
    for name, _ in steps:
        check_next_mode(last, name, type(model).__name__)
        last = None if name in EXPORT_MODES else name
    inputs = as_inputs(dummy_input) if dummy_input is not None else None
    if is_pending(model):  # converted before without an input: these modes follow the ones waiting
        if inputs is None:
            return defer(model, steps)
        resolve(model, inputs)
    return apply_steps(model, steps, inputs)


def apply_steps(model: nn.Module, steps: list[tuple[str, Any]], inputs: tuple | None) -> nn.Module:
    """Apply ``resolve_modes``' steps in order on ``inputs``; without them, on a guessed input, or
    from the first step no guess runs on, on the model's first input (``deferred.defer``)."""
    for i, (name, rules) in enumerate(steps):
        if name in EXPORT_MODES:
            model = export(model, **rules)
            continue
        if inputs is not None:
            convert_recorded(model, name, rules, inputs)
            continue
        try:
            guessed = guess_dummy_input(model)
        except UserInputError:  # no shape to guess: the rest waits for a real input
            return defer(model, steps[i:])
        convert_recorded(model, name, rules, guessed)
    return model


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


def select(model: nn.Module, config: dict[str, Any], strict: bool | None = None) -> None:
    """Activate the subnet described by ``config`` (hparam name -> value).

    Like ``sample``, it leaves random sampling in train mode as it was, as ModelOpt does.
    ``strict`` as in ModelOpt: True requires every search dimension in ``config`` and, when it
    names any fixed attribute, every attribute, each consistent with the subnet selected
    (``get_subnet_config`` gives such a config), else a RuntimeError listing the keys and
    nothing changes; False lets ``config`` name some hparams and ignores names that are not
    hparams of the model. The default (None) is nascli's: a partial config changes only the
    hparams it names, and a name that is not an hparam is an error (a typo is not ignored).
    """
    if not isinstance(config, dict):
        raise UserInputError(f"select: expected a dict of hparam name to value, got {type(config).__name__}")
    if strict not in (None, True, False):
        raise UserInputError(f"select: strict must be True, False or None, got {strict!r}")
    found = converted_module(model)
    if found is None and (not config or strict is False):
        return  # an empty config fits a model with no hparams, as in ModelOpt
    if found is None:
        get_space(model)  # the error that says to convert first
        return
    prefix = f"{found[0]}." if found[0] else ""
    space = get_space(found[1])
    if strict is False:  # ModelOpt's strict=False: what is not an hparam of the model is ignored
        listed = {name for name, _ in space.entries}
        config = {name: value for name, value in config.items() if name.removeprefix(prefix) in listed}
    if stray := [name for name in config if not name.startswith(prefix)]:
        raise UserInputError(f"select: {stray[0]!r} is not an hparam of {found[0]!r}, the converted module")
    own = {name.removeprefix(prefix): value for name, value in config.items()}
    if strict:
        _check_strict(space, own, prefix)
    sampling = space.sample_in_train
    space.select(own)
    space.sample_in_train = sampling
    reset_before_sample(space.patch_data)


def _check_strict(space: Any, config: dict[str, Any], prefix: str) -> None:
    """ModelOpt's ``select(strict=True)`` checks, before anything is selected: the keys it misses,
    names it does not know and fixed attributes whose value differs from the subnet's."""
    missing = [name for name in space.hparams if name not in config]
    if missing:
        lines = "\n\t".join(["Missing keys in config for:", *(prefix + name for name in missing)])
        raise RuntimeError(f"{lines}\nMake sure all keys are present in config or set strict=False.")
    entries = dict(space.entries)
    unexpected = [name for name in config if name not in entries]
    errors = []
    if unexpected:
        errors.append("\n\t".join(["Unexpected keys in config for:", *(prefix + name for name in unexpected)]))
        errors.append("Make sure only required keys are in config or set strict=False.")
    if any(name in config for name in entries if name not in space.hparams):  # fixed names given: all of them
        chosen = {id(entries[name]): value for name, value in config.items() if name in space.hparams}
        inconsistent, absent = [], []
        for name, hp in entries.items():
            if name in space.hparams:
                continue
            if name not in config:
                absent.append(prefix + name)
            elif config[name] != chosen.get(id(hp), hp.active):
                inconsistent.append(f"{prefix}{name}: active={chosen.get(id(hp), hp.active)}, config={config[name]}")
        if absent:
            lines = "\n\t".join(["Missing keys in config for:", *absent])
            raise RuntimeError(f"{lines}\nMake sure all keys are present in config or set strict=False.")
        if inconsistent:
            errors.append("\n\t".join(["Inconsistent keys in config:", *inconsistent]))
            errors.append("Make sure keys in config are consistent or set strict=False.")
    if errors:
        raise RuntimeError("Error in selecting config:\n" + "\n".join(errors))


def get_subnet_config(model: nn.Module, configurable: bool | None = None) -> dict[str, Any]:
    """Active values of every listed attribute (None), the search dimensions only (True), or the fixed ones (False).

    ``{}`` for a model that holds no converted module, as in ModelOpt.
    """
    found = converted_module(model)
    return {} if found is None else _prefixed(found[0], get_space(found[1]).config(configurable))


def _prefixed(name: str, config: dict[str, Any]) -> dict[str, Any]:
    """Hparam names as seen from a model holding the converted module ``name``."""
    return {f"{name}.{key}": value for key, value in config.items()} if name else config


def print_search_space_summary(
    model: nn.Module,
    skipped_hparams: list[str] | tuple[str, ...] = ("kernel_size",),
    verbose: bool = False,
    file: IO[str] | None = None,
) -> None:
    """Print each searchable attribute with its choices (``*`` marks a search dimension).

    As in ModelOpt, attributes whose name ends with one of ``skipped_hparams`` are not listed
    (by default ``kernel_size``; ``[]`` lists all).

    ``verbose`` also lists every fixed dimension with the reason it is fixed (model input or
    output, an operation the tracer cannot follow, an untraceable module, rounding), so a user
    can see what to change in the model or the rules.
    """
    if isinstance(skipped_hparams, str):
        raise UserInputError("print_search_space_summary: skipped_hparams is a list of name endings, not a string")
    print(get_space(model).summary(verbose, tuple(skipped_hparams)), file=file or sys.stdout)


def export(model: nn.Module, strict: bool = True, calib: bool = False) -> nn.Module:
    """Turn the converted model into its active subnet, a plain model of native layers, in place,
    and return it, as ModelOpt's ``export`` does.

    The model keeps the record of its conversion, so ``nascli.opt.save`` of it restores from the
    original model, and it may be converted again (a chain of modes). ``calib=True`` first
    re-estimates the BN statistics from the batches the model cached in train mode, as its
    ``eval()`` would (ModelOpt's ``calib``). ``strict`` is ModelOpt's check, on restore, that the
    recorded subnet config names every hparam; nascli records and restores the whole config, so
    it always does and ``strict`` changes nothing. Layers the subnet uses whole keep their tensors and
    shrunk ones free theirs, so a model as large as memory allows is exported without a second
    copy. A model holding a converted module is an AssertionError naming the module to pass, as
    in ModelOpt; ``export_copy`` leaves the converted model as it is.
    """
    _check_flags("export", strict=strict, calib=calib)
    state_at_root(model)
    check_next_mode(current_mode(model), "export_nas", type(model).__name__)
    if calib:
        calibrate_after_eval(model, get_space(model))
    return export_recorded(model)


def export_copy(model: nn.Module, strict: bool = True, calib: bool = False) -> nn.Module:
    """The active subnet as a new plain model of native layers; the converted model is kept.

    For exporting several subnets of one search space (candidates, a student next to its
    supernet). The new model remembers the conversion it came from, as one ``export`` made does;
    it holds one compact copy of the subnet's weights. ``strict`` and ``calib`` as for ``export``
    (the BN statistics re-estimated are the converted model's).
    """
    _check_flags("export_copy", strict=strict, calib=calib)
    space = get_space(model)
    if calib:
        calibrate_after_eval(model, space)
    return remember_conversion(export_model(model), model)


def _check_flags(where: str, **flags: Any) -> None:
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise UserInputError(f"{where}: {name} must be True or False, got {value!r}")


def profile(
    model: nn.Module,
    dummy_input: torch.Tensor | tuple | None = None,
    constraints: dict[str, Any] | None = None,
    deployment: dict[str, str] | None = None,
    strict: bool = False,
    verbose: bool = True,
    use_centroid: bool = True,
) -> tuple[bool, dict[str, Any]]:
    """Flops and params of the min, centroid and max subnets, and whether ``constraints`` can be met.

    Costs come from the analytic cost model (no forward pass). Constraints take numbers, "2G",
    "350M" or "60%" of the original model. Returns ``(is_satisfied, stats)``. A model that was
    not converted gets the costs of its one network under ``stats["full"]``, as in ModelOpt.
    ``use_centroid=False`` leaves the centroid out of the stats. ``strict=True`` raises a
    ValueError, as ModelOpt's does, when a converted model's search space cannot meet the
    constraints. ``deployment`` (ModelOpt's latency measured on a device) must be None: nascli
    predicts latency from a timed table through the CLI.
    """
    from nascli.nas.algorithms import latency_refusal

    if deployment is not None:
        raise UserInputError(latency_refusal("profile"))
    _check_flags("profile", strict=strict)
    if is_pending(model) and dummy_input is not None:
        resolve(model, as_inputs(dummy_input))  # converted without an input: on this one
    check_not_pending(model)
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
    if strict and not is_satisfied:
        raise ValueError("NOT all constraints can be satisfied within the search space, see above!")
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
    """Find the best-scoring subnet that meets ``constraints`` and export the model to it in place.

    As ModelOpt's ``search``: returns ``(model, history)``, where ``model`` is the model given,
    now the plain best subnet (as ``export`` makes it), so counting its parameters, reading its
    ``state_dict`` or saving it right after the search sees the subnet, not the supernet. Code
    that wants the supernet afterwards (to score or export other subnets of it)
    calls ``search_select``, which takes the same arguments and only selects the best subnet.

    ``config``: ``score_func(model) -> float`` (higher is better), ``data_loader`` (batches for
    BN recalibration before each score; without it BN statistics are left as they are),
    ``max_iter_data_loader`` (recalibration batches, default 10), ``algorithm`` ("evolve",
    "random", or "sensitivity": FastNAS's per-hparam score drops and a bisected global
    threshold; the default for fastnas models, "evolve" for others), ``uniform`` (True: the
    hparams of one role take one value in every block, e.g. every layer's MLP width, as a
    Hugging Face config needs) and the searcher's settings (population, parents, mutation_prob,
    crossover, iterations, time_budget, lower_bound_ratio, seed). ModelOpt's ``num_iters``,
    ``population_size`` and ``candidate_size`` name iterations, population and parents;
    ``checkpoint`` is a path the returned model is saved to (``nascli.opt.save``); ``verbose``
    prints the chosen subnet. A fastnas model's channels are first sorted by weight importance,
    so each width keeps its most important channels, unless they were sorted already
    (``sort_channels_by_importance(model, batches)`` sorts by activations). The history, plain
    data, holds ``best`` (config, flops, params, latency, score), ``candidates``, ``pareto``,
    ``original`` (the max subnet's costs), ``constraints`` and ModelOpt's ``history`` lists
    (score and costs per candidate); ``search_select`` returns the same.
    """
    return _search(model, constraints, dummy_input, config, export_best=True)


def search_select(
    model: nn.Module,
    constraints: dict[str, Any],
    dummy_input: torch.Tensor | tuple | None = None,
    config: dict[str, Any] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """``search`` without the export: the best subnet is selected and the model stays converted.

    Returns ``(model, history)`` as ``search`` does, ``model`` being the converted model given,
    with the best subnet active and random sampling off (``random_sampling(model, False)``), so
    a forward in train mode runs that subnet. For code that goes on using the supernet: score
    or export other subnets of it (``select``, ``export_copy``), or train the chosen one in it; ``export``
    later gives what ``search`` would have returned. ``checkpoint`` saves the converted model.
    """
    return _search(model, constraints, dummy_input, config, export_best=False)


def _search(
    model: nn.Module,
    constraints: dict[str, Any],
    dummy_input: torch.Tensor | tuple | None,
    config: dict[str, Any] | None,
    export_best: bool,
) -> tuple[nn.Module, dict[str, Any]]:
    """Run the search (``search``'s arguments), select the best subnet and export it if asked.

    The history is made before the export: a sensitivity search's report reads the converted
    model's costs.
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
    if export_best:
        state_at_root(model)  # a model holding a converted module, which export refuses, is refused before the search
    if is_pending(model) and dummy_input is not None:
        resolve(model, as_inputs(dummy_input))  # converted without an input: on this one
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
    if export_best:
        model = export(model)
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
