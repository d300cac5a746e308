"""Subnet search on the digits supernet: evolution against random sampling, the searched subnet
against the uniform-width subnet, the share of time spent on constraint checks, and ModelOpt.

Trains the digits supernet with recipes/digits.yaml (or takes a trained ``train.pt``), then:
evolutionary and random search with the same number of scored candidates over several seeds
(median best score); the largest uniform subnet (every hparam at the same share of its
maximum) within the same flops bound; the time spent in the cost model against the whole search;
and, where nvidia-modelopt is installed, ModelOpt's ``mtn.search`` on the same search space,
weights, bound and scoring, sampling enough candidates to score about as many as one nascli search
so that each search's start-up cost weighs alike (scored candidates per minute). Prints one table.

The data has three disjoint splits: the supernet trains on the training split (whose first batches
also recalibrate batch norm before every score), the search scores candidates on the validation
split, and the chosen subnets are reported on the test split, which no search selected on: a
subnet picked as the best of hundreds on validation is flattered by that choice, so only the test
scores compare the searched subnet with the uniform one fairly. Every reported subnet gets the same
batch-norm recalibration first.

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
from optional_modelopt import NOT_INSTALLED, load_modelopt
from rich.console import Console
from rich.table import Table
from supernet_space import CountedScore, check_same_space, uniform_configs
from supernet_space import modelopt_rules as same_space_rules
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
    parser.add_argument(
        "--modelopt-iters",
        type=int,
        default=800,
        help="ModelOpt's sampled candidates (default: about as many scored as one nascli search)",
    )
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-modelopt", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model, recipe, checkpoint = trained_supernet(args.checkpoint)
    splits = load_splits(recipe.data.name, recipe.data.root, recipe.data.val_fraction)
    calib = DataLoader(splits.train, batch_size=recipe.data.batch_size, shuffle=False, drop_last=True)
    val = DataLoader(splits.val, batch_size=recipe.data.eval_batch_size)
    test = DataLoader(splits.test, batch_size=recipe.data.eval_batch_size)
    batches = recipe.search.bn_calib_batches
    constraints = {"flops": args.flops}
    rows: list[tuple[str, ...]] = []

    def search(algorithm: str, seed: int, **settings: Any) -> tuple[dict, float, float]:
        config = {"data_loader": calib, "score_func": lambda m: accuracy(m, val), "max_iter_data_loader": batches,
                  "algorithm": algorithm, "seed": seed, "parents": args.parents, **settings}  # fmt: skip
        with CostClock() as clock:
            start = time.perf_counter()
            _, history = mtn.search_select(model, constraints, config=config)
            seconds = time.perf_counter() - start
        return history, seconds, clock.seconds

    def scores(config: dict[str, int]) -> tuple[float, float]:
        """(val, test) top-1 of a subnet after the batch-norm recalibration the search gives each candidate."""
        with random_sampling(model, enabled=False):
            mtn.select(model, config)
            recalibrate_bn(model, calib, batches)
            return accuracy(model, val), accuracy(model, test)

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
    costs = cost_model(model)
    original = costs.cost(costs.named("max"))["flops"]
    seeds = f"{args.seeds} seeds, {scored} scored each"
    for name, bests, tops in (("evolve", evolve, top_evolve), ("random", random_, top_random)):
        rows.append((name, f"median best val top-1 (the score searched on) of {seeds}",
                     f"{statistics.median(b['score'] for b in bests):.2%}"))  # fmt: skip
        rows.append((name, "median test top-1 of each seed's best (held out)",
                     f"{statistics.median(scores(b['config'])[1] for b in bests):.2%}"))  # fmt: skip
        rows.append((name, "median mean val top-1 of the 10 best candidates", f"{statistics.median(tops):.2%}"))

    # The searched subnet against the largest uniform subnet within the same bound.
    chosen = max(evolve, key=lambda b: b["score"])
    bound = history["constraints"]["flops"]
    fitting = [c for _, c in uniform_configs(model) if costs.cost(c)["flops"] <= bound]
    uniform = max(fitting, key=lambda c: costs.cost(c)["flops"])
    for name, what, config in (
        ("searched", "best val score of all evolve seeds", chosen["config"]),
        ("uniform", "largest uniform subnet in the bound", uniform),
    ):
        val_score, test_score = scores(config)
        share = costs.cost(config)["flops"] / original
        rows.append((name, f"{what}, flops {share:.1%}: val top-1 (the split searched on)", f"{val_score:.2%}"))
        rows.append((name, f"{what}, flops {share:.1%}: test top-1 (held out, {len(splits.test)} images)",
                     f"{test_score:.2%}"))  # fmt: skip
    rows.append(("search", "time in constraint checks (cost model), worst run (target < 1%)", f"{max(shares):.3%}"))
    rows.append(("nascli", "scored candidates per minute (BN recalibration + validation)",
                 f"{60 / statistics.median(per_candidate):.0f}"))  # fmt: skip

    if not args.no_modelopt:
        rows += modelopt_rows(model, recipe, checkpoint, calib, val, batches, args)

    table = Table(title=f"Search on the digits supernet, flops <= {args.flops}, {torch.get_num_threads()} threads")
    for column in ("what", "measure", "value"):
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    Console(width=150).print(table)


def modelopt_rules(recipe: Any) -> list:
    """ModelOpt's autonas rules that give the search space nascli builds from the recipe's conv channel divisor."""
    return same_space_rules(recipe.rules["nn.Conv2d"]["*"]["channel_divisor"])


def modelopt_rows(
    ours: nn.Module, recipe: Any, checkpoint: Path, calib: DataLoader, val: DataLoader, batches: int, args
) -> list:
    """ModelOpt's evolutionary search on the same search space, weights, bound and scoring."""
    motn = load_modelopt()
    if motn is None:
        return [("ModelOpt", NOT_INSTALLED, "")]
    from nascli.recipe.factory import build_model

    weights = load_stage_input(checkpoint, [])[0].state_dict()
    model = build_model(recipe.model.factory, recipe.model.kwargs)
    dummy = torch.zeros(1, *recipe.input_shape)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        model = motn.convert(model, mode=modelopt_rules(recipe))
        model.load_state_dict(weights)
        theirs = check_same_space(ours, model)
        score = CountedScore(val)
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
    scored = score.calls
    return [
        ("ModelOpt", f"same search space: {len(theirs)} hparams, the same choices; same weights", "yes"),
        ("ModelOpt", f"mtn.search: {args.modelopt_iters} sampled, {scored} scored, seconds", f"{seconds:.1f}"),
        ("ModelOpt", "scored candidates per minute (BN recalibration + validation)", f"{60 * scored / seconds:.0f}"),
        (
            "ModelOpt",
            "sampled candidates per minute (constraint check by re-tracing)",
            f"{60 * args.modelopt_iters / seconds:.0f}",
        ),  # fmt: skip
    ]


if __name__ == "__main__":
    main()
