"""The search stage: a trained supernet in; search.pt, search.json and pareto.png out."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch import nn
from torch.utils.data import DataLoader, Subset

from nascli.atomic import atomic_write_text
from nascli.cost.constraints import parse_bound, resolve_constraints
from nascli.cost.latency import LatencyModel
from nascli.cost.model import cost_model
from nascli.data import Splits, recipe_splits
from nascli.errors import UserInputError
from nascli.opt.checkpoint import build_checkpoint, write_checkpoint
from nascli.recipe.factory import import_factory
from nascli.recipe.schema import Recipe
from nascli.search.evolve import SearchSettings, SearchState
from nascli.search.plot import search_plot
from nascli.search.run import score_active, search_costs, search_report, search_subnet
from nascli.space.importance import rank_blocks, sort_channels_by_importance
from nascli.space.space import get_space
from nascli.stages.rundir import append_metrics, run_dir_lock
from nascli.train.distributed import Ranks
from nascli.train.task import task_of
from nascli.userdirs import cache_dir


def search_stage(
    model: nn.Module,
    recipe: Recipe,
    constraints: dict[str, Any],
    console: Console | None,
    resume_from: dict[str, Any] | None = None,
    ranks: Ranks = Ranks(),
    input_stage: str = "convert",
) -> Path:
    """Search the best subnet under ``constraints`` (recipe's search.constraints overridden by them).

    ``input_stage`` is the stage whose checkpoint holds ``model``: a model trained plainly
    (``train.plain``) is sorted again by importance before a fastnas search, one trained as a
    supernet never is (its subnets learned the channels in their order).

    ``search.pt`` is rewritten after every iteration with the search state, so an interrupted
    search continues from it (``resume_from``, the stored state) to the same result. Under
    torchrun every rank scores its share of each generation; rank 0 writes.
    """
    with run_dir_lock(recipe.run_dir) if ranks.main else nullcontext():
        splits = recipe_splits(recipe)
        score = _scorer(recipe, splits, model)
        if resume_from is None:
            _sort_for_pruning(model, recipe, input_stage, splits, score, console)
        return _search(model, recipe, splits, score, constraints, console, resume_from, ranks)


def resumed_constraints(state: dict[str, Any], wanted: dict[str, Any]) -> dict[str, Any]:
    """The constraints an unfinished search ran under, which its resume keeps.

    Given again they must agree (2G and 2e9 do): a search resumed under other bounds would mix
    candidates chosen under both, and one resumed without them would finish unconstrained.
    """
    stored = state.get("constraints")
    if stored is None:  # a search.pt written before the constraints were kept in it
        return wanted
    for key, value in wanted.items():
        if key not in stored or parse_bound(key, value) != parse_bound(key, stored[key]):
            was = f"{key}={stored[key]}" if key in stored else f"no {key} bound"
            raise UserInputError(
                f"constraint {key}={value}: the unfinished search ran with {was}; resume without it,"
                " or remove search.pt to start again"
            )
    return dict(stored)


def _check_resumed_uniform(state: dict[str, Any], uniform: bool) -> None:
    """A search resumes with the ``search.uniform`` it ran with: its stored rows are of roles or of
    hparams, and the two cannot be mixed."""
    stored = bool(state.get("uniform", False))
    if stored != uniform:
        raise UserInputError(
            f"search.uniform={str(uniform).lower()}: the unfinished search ran with search.uniform="
            f"{str(stored).lower()}; resume with that, or remove search.pt to start again"
        )


def _scorer(recipe: Recipe, splits: Splits, model: nn.Module) -> Callable[[nn.Module], float]:
    """What a search maximizes: ``search.score_func``, or accuracy (a language model's negative
    perplexity) on ``search.score_samples`` random validation samples (all of them by default)."""
    spec, val = recipe.search, splits.val
    if spec.score_samples is not None and spec.score_samples < len(val):
        val = _random_subset(val, spec.score_samples, recipe.seed)
    loader = DataLoader(val, batch_size=recipe.data.eval_batch_size)
    if spec.score_func:
        user_score = import_factory(spec.score_func, "search.score_func")
        return lambda m: user_score(m, loader)
    task = task_of(splits)
    task.check_model(model)
    return lambda m: task.score(task.evaluate(m, loader))


def _calibration_loader(recipe: Recipe, splits: Splits) -> DataLoader:
    """The training batches BN statistics are recalibrated on before each score, in a fixed order."""
    return DataLoader(splits.train, batch_size=recipe.data.batch_size, shuffle=False, drop_last=True)


def _random_subset(dataset: Any, size: int, seed: int) -> Subset:
    """``size`` samples of ``dataset`` drawn with ``seed``, in dataset order."""
    chosen = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:size]
    return Subset(dataset, sorted(chosen.tolist()))


def _sort_for_pruning(
    model: nn.Module,
    recipe: Recipe,
    input_stage: str,
    splits: Splits,
    score: Callable[[nn.Module], float],
    console: Console | None,
) -> None:
    """Sort a fastnas model's channels by ``search.importance`` where its weights were not sorted
    already (by activations, Minitron's, always; by weights again after plain training), and rank
    the blocks of each searchable depth by the score without each one (space/importance.py)."""
    importance, fastnas = recipe.search.importance, get_space(model).modes[-1][0] == "fastnas"
    supernet = input_stage == "train" and not recipe.train.plain
    if input_stage == "search":
        return  # sorted and ranked by the search that wrote it
    if importance == "activations" and not fastnas:
        raise UserInputError("search.importance: activations sorts channels for pruning; set mode: fastnas")
    if importance == "activations" and supernet:
        raise UserInputError(
            "search.importance: activations would reorder the channels a supernet was trained on;"
            " use it on a model trained with train.plain: true, or keep importance: weights"
        )
    if not fastnas or supernet:
        return
    start = time.perf_counter()
    if importance == "activations":
        samples = min(recipe.search.importance_samples, len(splits.train))
        loader = DataLoader(_random_subset(splits.train, samples, recipe.seed), batch_size=recipe.data.eval_batch_size)
        device = next(model.parameters()).device
        sort_channels_by_importance(model, ((inputs.to(device),) for inputs, _ in loader))
        if console is not None:
            console.print(f"importance: activations on {samples} training samples, {time.perf_counter() - start:.1f}s")
    elif input_stage == "train":
        sort_channels_by_importance(model)
    start = time.perf_counter()
    calib = _calibration_loader(recipe, splits)
    batches = recipe.search.bn_calib_batches
    ranked = rank_blocks(model, lambda m: score_active(m, score, calib, batches))  # scored as candidates are
    if ranked and console is not None:
        blocks = sum(len(scores) for scores in ranked.values())
        console.print(
            f"importance: {blocks} blocks ranked by the score without each, {time.perf_counter() - start:.1f}s"
        )


def _search(
    model: nn.Module,
    recipe: Recipe,
    splits: Splits,
    score: Callable[[nn.Module], float],
    constraints: dict[str, Any],
    console: Console | None,
    resume_from: dict[str, Any] | None,
    ranks: Ranks,
) -> Path:
    spec = recipe.search
    calib = _calibration_loader(recipe, splits)
    costs = cost_model(model)
    costs.memory_batch = recipe.deployment.batch_size
    original: dict[str, Any] = costs.cost(costs.named("max"), ("flops", "params", "memory"))
    wanted = {**spec.constraints, **constraints}
    if resume_from is not None:
        wanted = resumed_constraints(resume_from, wanted)
        _check_resumed_uniform(resume_from, spec.uniform)
    latency = None
    if "latency" in wanted and ranks.world > 1:
        raise UserInputError("--latency: search under a latency bound in one process (its table is per machine)")
    if "latency" in wanted:
        deploy = recipe.deployment
        latency = LatencyModel(model, deploy.device, deploy.batch_size, deploy.repeats, cache_dir())
        latency.calibrate()
        original["latency"] = latency.predict(costs.named("max"))
    bounds = resolve_constraints(wanted, original)
    settings = SearchSettings(
        spec.population, spec.parents, spec.mutation_prob, spec.crossover, spec.iterations, spec.time_budget,
        spec.lower_bound_ratio, spec.seed if spec.seed is not None else recipe.seed,
    )  # fmt: skip

    run_dir = Path(recipe.run_dir)
    factory = recipe.model.model_dump(mode="json")
    walked, unit = search_costs(model, spec.uniform), "roles" if spec.uniform else "hparams"
    if spec.uniform and walked.untied and console is not None:
        shown = ", ".join(walked.untied[:3]) + (", ..." if len(walked.untied) > 3 else "")
        console.print(f"uniform: {len(walked.untied)} roles stay per layer (their layers' choices differ): {shown}")

    def progress(state: Any) -> None:
        if not ranks.main:
            return
        unfinished = {**state.to_plain(), "constraints": wanted, "uniform": spec.uniform}
        checkpoint = build_checkpoint(
            model, "search", recipe.model_dump(mode="json"), factory, {}, unfinished, reference_weights=True
        )
        checkpoint["subnet"] = None
        write_checkpoint(checkpoint, run_dir / "search.pt")
        if console is not None and state.probes:
            console.print(f"sensitivity: {state.iteration}/{len(walked.names)} {unit}, {len(state.probes)} scored")
        elif console is not None:
            top = max(c.score for c in state.evaluated.values())
            console.print(
                f"iteration {state.iteration}/{spec.iterations}: {len(state.evaluated)} scored, best {top:.4f}"
            )

    state = SearchState.from_plain(resume_from) if resume_from is not None else None
    best, state = search_subnet(
        model, bounds, score, calib, spec.bn_calib_batches, settings, spec.algorithm, progress, state, latency, ranks,
        spec.uniform,
    )  # fmt: skip
    path = run_dir / "search.pt"
    if not ranks.main:
        return path
    if latency is not None:
        latency.save()
    report = search_report(state, best, bounds, original, model, spec.uniform)
    metrics = {"score": best.score, "flops": best.flops, "params": best.params, "candidates": len(state.evaluated)}
    checkpoint = build_checkpoint(
        model, "search", recipe.model_dump(mode="json"), factory, metrics, reference_weights=True
    )
    write_checkpoint(checkpoint, path)
    atomic_write_text(run_dir / "search.json", json.dumps(report, indent=1))
    search_plot(report, run_dir / "pareto.png", None if spec.score_func else task_of(splits).metric)
    append_metrics(run_dir, {"stage": "search", **metrics, "bounds": bounds})
    if console is not None:
        console.print(
            f"best subnet (before fine-tuning): score {best.score:.4f}, flops {best.flops:,} "
            f"({best.flops / original['flops']:.1%} of the original), params {best.params:,} "
            f"({best.params / original['params']:.1%}); {len(state.evaluated) + len(state.probes)} subnets scored"
        )
    return path
