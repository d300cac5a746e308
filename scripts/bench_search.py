"""Subnet search on the digits supernet: evolution against random sampling, the searched subnet
against the uniform-width subnet, the share of time spent on constraint checks, and ModelOpt.

Trains the digits supernet with recipes/digits.yaml (or takes a trained ``train.pt``), then:
evolutionary and random search with the same number of scored candidates over several seeds
(median best score); the largest uniform subnet (every hparam at the same share of its
maximum) within the same flops bound, scored the same way; the time spent in the cost model
against the whole search; and, where nvidia-modelopt is installed, ModelOpt's ``mtn.search`` on
the same architecture, weights and bound (scored candidates per minute). Prints one table.

    python scripts/bench_search.py [--checkpoint runs/digits/train.pt] [--flops 50%] [--seeds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from torch import nn
from torch.utils.data import DataLoader

import nascli.nas as mtn
from nascli.cost.model import CostModel, cost_model
from nascli.data import load_splits
from nascli.recipe.load import load_recipe
from nascli.space.space import random_sampling
from nascli.stages.convert import convert_stage
from nascli.stages.load import load_stage_input
from nascli.stages.train import train_stage
from nascli.train.bn import recalibrate_bn
from nascli.train.trainer import accuracy

ROOT = Path(__file__).resolve().parents[1]


class CostClock:
    """Adds up the seconds spent in the cost model while it is installed."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._original = CostModel.evaluate

    def __enter__(self) -> CostClock:
        original, clock = self._original, self

        def timed(model: CostModel, matrix: np.ndarray) -> dict[str, np.ndarray]:
            start = time.perf_counter()
            try:
                return original(model, matrix)
            finally:
                clock.seconds += time.perf_counter() - start

        CostModel.evaluate = timed
        return self

    def __exit__(self, *exc: object) -> None:
        CostModel.evaluate = self._original


def trained_supernet(checkpoint: Path | None) -> tuple[nn.Module, Any, Path]:
    """(supernet, recipe, train.pt): the given checkpoint, or the digits recipe trained now."""
    if checkpoint is None:
        run_dir = Path(tempfile.mkdtemp(prefix="bench-search-"))
        recipe = load_recipe(ROOT / "recipes/digits.yaml", [f"run_dir={run_dir}"])
        model, _ = convert_stage(recipe)
        checkpoint = train_stage(model, recipe)
    model, _, _, recipe = load_stage_input(checkpoint, [])
    return model, recipe, checkpoint


def uniform_configs(model: nn.Module) -> list[dict[str, int]]:
    """One config per share of the maximum: each hparam takes its choice nearest that share."""
    hparams = mtn.get_subnet_config(model, configurable=True)
    space = cost_model(model).space
    shares = sorted({c / max(hp.choices) for hp in space.hparams.values() for c in hp.choices})
    configs = []
    for share in shares:
        configs.append(
            {
                name: min(
                    space.hparams[name].choices,
                    key=lambda c, n=name: (abs(c / max(space.hparams[n].choices) - share), -c),
                )
                for name in hparams
            }
        )
    return configs


def top_mean(history: dict, n: int = 10) -> float:
    """Mean score of the n best candidates: how much of the search found good subnets, not just one."""
    return statistics.mean(sorted((c["score"] for c in history["candidates"]), reverse=True)[:n])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=None, help="a trained train.pt (default: train now)")
    parser.add_argument("--flops", default="50%")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--population", type=int, default=40)
    parser.add_argument("--parents", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=6)
    parser.add_argument("--modelopt-iters", type=int, default=60, help="ModelOpt's sampled candidates")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-modelopt", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model, recipe, checkpoint = trained_supernet(args.checkpoint)
    splits = load_splits(recipe.data.name, recipe.data.root, recipe.data.val_fraction)
    calib = DataLoader(splits.train, batch_size=recipe.data.batch_size, shuffle=False, drop_last=True)
    val = DataLoader(splits.val, batch_size=recipe.data.eval_batch_size)
    batches = recipe.search.bn_calib_batches
    constraints = {"flops": args.flops}
    rows: list[tuple[str, ...]] = []

    def search(algorithm: str, seed: int, **settings: Any) -> tuple[dict, float, float]:
        config = {"data_loader": calib, "score_func": lambda m: accuracy(m, val), "max_iter_data_loader": batches,
                  "algorithm": algorithm, "seed": seed, "parents": args.parents, **settings}  # fmt: skip
        with CostClock() as clock:
            start = time.perf_counter()
            _, history = mtn.search(model, constraints, config=config)
            seconds = time.perf_counter() - start
        return history, seconds, clock.seconds

    evolve, random_, shares, per_candidate = [], [], [], []
    top_evolve, top_random = [], []
    for seed in range(args.seeds):
        history, seconds, in_costs = search("evolve", seed, population=args.population, iterations=args.iterations)
        scored = len(history["candidates"])
        evolve.append(history["best"])
        top_evolve.append(top_mean(history))
        shares.append(in_costs / seconds)
        per_candidate.append(seconds / scored)
        history, seconds, in_costs = search("random", seed, population=scored, iterations=1)
        random_.append(history["best"])
        top_random.append(top_mean(history))
        shares.append(in_costs / seconds)
    best_evolve = statistics.median(b["score"] for b in evolve)
    best_random = statistics.median(b["score"] for b in random_)
    original = cost_model(model).cost(cost_model(model).named("max"))
    rows.append(("evolve", f"median best val top-1 of {args.seeds} seeds, {scored} scored each", f"{best_evolve:.2%}"))
    rows.append(("random", f"median best val top-1 of {args.seeds} seeds, {scored} scored each", f"{best_random:.2%}"))
    for name, tops in (("evolve", top_evolve), ("random", top_random)):
        rows.append((name, "median mean val top-1 of the 10 best candidates", f"{statistics.median(tops):.2%}"))
    rows.append(
        (
            "evolve",
            "its flops (share of original)",
            f"{statistics.median(b['flops'] for b in evolve) / original['flops']:.1%}",
        )
    )  # noqa: E501

    # The searched subnet against the largest uniform subnet within the same bound.
    chosen = max(evolve, key=lambda b: b["score"])
    bound = history["constraints"]["flops"]
    costs = cost_model(model)
    fitting = [c for c in uniform_configs(model) if costs.cost(c)["flops"] <= bound]
    uniform = max(fitting, key=lambda c: costs.cost(c)["flops"])
    with random_sampling(model, enabled=False):
        mtn.select(model, uniform)
        recalibrate_bn(model, calib, batches)
        uniform_score = accuracy(model, val)
    rows.append(
        ("searched", f"best of all seeds: flops {chosen['flops'] / original['flops']:.1%}", f"{chosen['score']:.2%}")
    )  # noqa: E501
    rows.append(
        (
            "uniform",
            f"largest uniform subnet in the bound: flops {costs.cost(uniform)['flops'] / original['flops']:.1%}",
            f"{uniform_score:.2%}",
        )
    )  # noqa: E501
    rows.append(("search", "time in constraint checks (cost model), worst run (target < 1%)", f"{max(shares):.3%}"))
    rows.append(
        (
            "nascli",
            "scored candidates per minute (BN recalibration + validation)",
            f"{60 / statistics.median(per_candidate):.0f}",
        )
    )  # noqa: E501

    if not args.no_modelopt:
        rows += modelopt_rows(recipe, checkpoint, calib, val, batches, args)

    table = Table(title=f"Search on the digits supernet, flops <= {args.flops}, {torch.get_num_threads()} threads")
    for column in ("what", "measure", "value"):
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    Console(width=150).print(table)


def modelopt_rows(recipe: Any, checkpoint: Path, calib: DataLoader, val: DataLoader, batches: int, args) -> list:
    """ModelOpt's evolutionary search on the same architecture, weights and bound."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import modelopt.torch.nas as motn
    except ImportError:
        return [("ModelOpt", "not installed (pip install -e '.[bench]')", "")]
    from nascli.recipe.factory import build_model

    ours, _, _, _ = load_stage_input(checkpoint, [])
    weights = ours.state_dict()
    model = build_model(recipe.model.factory, recipe.model.kwargs)
    rules = {"nn.Conv2d": {"*": {"channel_divisor": 8}}}
    dummy = torch.zeros(1, *recipe.input_shape)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        model = motn.convert(model, mode=[("autonas", rules)])
        model.load_state_dict(weights, strict=False)
        scored = 0

        def score(m: nn.Module) -> float:
            nonlocal scored
            scored += 1
            return accuracy(m, val)

        config = {
            "data_loader": calib,
            "score_func": score,
            "max_iter_data_loader": batches,
            "num_iters": args.modelopt_iters,
            "checkpoint": str(Path(tempfile.mkdtemp()) / "search.pth"),
            "verbose": False,
        }
        start = time.perf_counter()
        motn.search(model, {"flops": args.flops}, dummy, config)
        seconds = time.perf_counter() - start
    return [
        ("ModelOpt", f"mtn.search: {args.modelopt_iters} sampled, {scored} scored, seconds", f"{seconds:.1f}"),
        ("ModelOpt", "scored candidates per minute", f"{60 * scored / seconds:.0f}"),
        (
            "ModelOpt",
            "sampled candidates per minute (constraint check by re-tracing)",
            f"{60 * args.modelopt_iters / seconds:.0f}",
        ),  # noqa: E501
    ]


if __name__ == "__main__":
    main()
