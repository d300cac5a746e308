"""Supernet training at equal wall-clock time, nascli against ModelOpt: what each subnet is worth afterwards.

Both engines convert the same ResNet-20 (``resnet20(10, 1, 16)``, the same initial weights) in
autonas mode to the same search space (channel divisor 8; ModelOpt gets the rules that give it
nascli's 14 hparams and choices, checked: scripts/supernet_space.py), for 1x28x28 inputs, and
train it on full Fashion-MNIST's training split for the same wall-clock budget. Neither may take
more than ``--budget`` seconds: each engine's seconds per step are measured first, the same way
for both (the mean of ``--calib-steps`` steps on real batches after 3 warm-up steps, the two
engines' steps alternating so that machine noise hits both alike, on throwaway copies of the
models; the mean, since a budget is a sum of steps, and a random subnet's step costs anywhere from
the min subnet's to the max's), and each trains for ``max(1, floor(budget / (steps per epoch * step seconds)))`` epochs
of warmup + cosine LR (nascli's 1-epoch warmup for both). The table reports the epochs run and
the actual training seconds.

Both train in nascli's training loop (``nascli.train.trainer``: the same SGD optimizer, schedule,
batch size 128 and per-epoch data order); only the step differs. nascli's is ``SupernetTrainer``'s,
as ``nascli train`` runs it with ``TrainSpec()``'s defaults (sandwich rule: max, min and 2 random
subnets, in-place distillation; SGD lr 0.1, momentum 0.9, nesterov, weight decay 5e-4), with
``--nascli-set key=value`` overriding TrainSpec fields for nascli only (``sandwich=false``,
``num_random=1``, ``channels_last=true``, ...). ModelOpt's is AutoNAS training as ModelOpt runs it:
the converted model in train mode draws one random subnet per forward, one cross-entropy
backward, one optimizer step. Neither loop evaluates between epochs (that would be time outside
the budget), so the training seconds are steps only.

Afterwards, for each engine: the test top-1 (the held-out test split) of the max subnet, the min
subnet, the subnet that engine's own search finds under flops <= ``--flops`` of the max (nascli's
``mtn.search_select``, which leaves the supernet converted), and the best uniform subnet under the
same bound (every channel hparam at one share of its maximum, depths at their maximum; the largest
share whose flops fit). Each is evaluated after the same batch-norm recalibration (nascli's
``recalibrate_bn`` on the training split's first 10 batches, for every model of both engines).
Flops are shown as a share of the max subnet's, by nascli's cost model for every config (the spaces
are the same). The searches score candidates on the validation split (after each engine's own BN
recalibration on the same 10 batches) with ModelOpt's default evolution settings for both
(population 100, 25 parents, mutation 0.1): nascli's runs ``--search-iterations`` generations,
taking the bound as "50%"; ModelOpt's takes the same bound in its own units (absolute flops: 2 x
multiply-accumulates of its batch-1 dummy input, of its max subnet) and samples until it has scored
as many candidates as nascli's search did (ModelOpt's ``num_iters`` counts samples, constraint
rejects and repeats included), so both searches score the same number of subnets. ModelOpt's search
exports the model in place, so it runs on a copy and its chosen config is evaluated on the
supernet, as every other row. ModelOpt recalibrates BN before each score from its own cache of 50
input batches (training's first ones, then every 100th, and the search's data_loader batches), so
the table also gives each searched subnet's validation top-1 after the common recalibration; a
smoke run trains on too few batches to fill that cache, and ModelOpt then scores with stale
statistics (it warns).

One table per seed (the seed sets the initial weights, sampled subnets, data order and search),
then the mean and spread (max - min) of each row across seeds, and two verdicts: is nascli's
searched subnet ahead of ModelOpt's at equal time, and does it beat the best uniform subnet by
more than the seeds' spread. The benchmark (Fashion-MNIST, 2 seeds):

    python scripts/bench_supernet.py --budget 600 --seeds 0 1 [--flops 50%] [--search-iterations 10]
                                     [--device auto|cpu|cuda] [--threads N] [--nascli-set key=value ...]

``--variant NAME:KEY=VALUE[,KEY=VALUE]`` adds another nascli engine to the same run (its TrainSpec
fields over the ``--nascli-set`` ones; e.g. ``--variant max-min:num_random=0``), trained for the same
budget, timed in the same alternation and searched the same way: settings compared side by side.
``--standalone`` also trains each nascli engine's searched subnet alone (fresh weights, the labels
only, the same loop and epochs) and reports the searched subnet's gap to it.

``--train-size`` trains on a fixed random subset of the training split, ``--eval-size`` scores the
searches' candidates on a fixed random subset of the validation split, and ``--test-size`` tests on
one of the test split (smoke runs only: 2,000 test images leave a standard error of 0.6 points), e.g.
``--budget 15 --train-size 2000 --eval-size 1000 --test-size 1000 --seeds 0 --search-iterations 1 --population 8``.
Without nvidia-modelopt installed, nascli runs alone and the table says so.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import importlib.metadata
import io
import itertools
import math
import platform
import random
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any
from unittest import mock

import torch
from optional_modelopt import NOT_INSTALLED, load_modelopt
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from supernet_space import CountedScore, check_same_space, modelopt_rules, uniform_configs
from torch import nn
from torch.utils.data import DataLoader, Subset

import nascli.nas as mtn
from nascli.cost.model import cost_model
from nascli.data import Splits, load_splits
from nascli.errors import UserInputError
from nascli.models import resnet20
from nascli.recipe.load import parse_overrides
from nascli.recipe.schema import DataSpec, TrainSpec
from nascli.space.space import random_sampling
from nascli.train.bn import recalibrate_bn
from nascli.train.device import training_device
from nascli.train.trainer import SubnetTrainer, SupernetTrainer, Trainer, accuracy

DIVISOR = 8
SHAPE = (1, 28, 28)
BN_BATCHES = 10  # TrainSpec's and SearchSpec's bn_calib_batches: every recalibration, both engines
WARMUP_STEPS = 3
SUBNETS = ("max", "min", "searched", "uniform")
STARTED = time.perf_counter()


def log(message: str) -> None:
    """Progress on stderr, with the minutes since the start: a full run takes a while."""
    print(f"[{(time.perf_counter() - STARTED) / 60:5.1f} min] {message}", file=sys.stderr, flush=True)


class NasCliTrainer(SupernetTrainer):
    """``nascli train``'s supernet loop, without the per-epoch evaluation: only steps count against the budget."""

    def evaluate(self) -> dict[str, float]:
        return {}


class ModelOptTrainer(Trainer):
    """ModelOpt's AutoNAS training in nascli's loop (same optimizer, schedule, data order).

    The converted model's train-mode forward draws one random subnet (ModelOpt's patch, from
    Python's ``random``); the step is one loss on the labels, one backward, one optimizer step.
    """

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> float:
        inputs, targets = batch
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.task.loss(self.model(inputs), targets)
        loss.backward()
        self.optimizer.step()
        return loss.item()

    def evaluate(self) -> dict[str, float]:
        return {}


@dataclasses.dataclass
class Engine:
    """One engine's supernet and how to run it: the calls differ, the protocol does not."""

    name: str
    model: nn.Module
    spec: TrainSpec
    trainer: type[Trainer]
    fixed: Callable[[nn.Module], contextlib.AbstractContextManager]  # no random subnet per forward inside
    select: Callable[[nn.Module, dict], Any]
    before_training: Callable[[int], None] = lambda seed: None


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so that the clock measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def endless_batches(trainer: Trainer) -> Iterator[tuple[torch.Tensor, ...]]:
    """The trainer's own batches of its first epoch, over and over (a small training subset has few)."""
    for batch in itertools.chain.from_iterable(iter(trainer._epoch_batches, None)):
        yield tuple(trainer._placed(t) for t in batch)


def step_seconds(engines: list[Engine], splits: Splits, data: DataSpec, seed: int, steps: int) -> dict[str, float]:
    """Mean seconds per training step of each engine, on throwaway copies, the engines alternating.

    A step is what the training loop does per batch: fetch and place the batch, the engine's step
    (which reads the loss back, as the loop does), the LR schedule. Warm-up steps come first.
    """
    runs = {}
    for engine in engines:
        engine.before_training(seed)
        trainer = engine.trainer(copy.deepcopy(engine.model), splits, data, engine.spec, seed=seed)
        trainer.model.train()
        runs[engine.name] = (trainer, endless_batches(trainer))
    times: dict[str, list[float]] = {name: [] for name in runs}
    for index in range(WARMUP_STEPS + steps):
        for name, (trainer, batches) in runs.items():
            sync(trainer.device)
            start = time.perf_counter()
            trainer._step(next(batches))
            trainer.scheduler.step()
            sync(trainer.device)
            if index >= WARMUP_STEPS:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.fmean(t) for name, t in times.items()}


def train(engine: Engine, splits: Splits, data: DataSpec, epochs: int, seed: int) -> float:
    """Train the engine's supernet for ``epochs`` epochs; the seconds it took."""
    engine.before_training(seed)
    trainer = engine.trainer(engine.model, splits, data, engine.spec.model_copy(update={"epochs": epochs}), seed=seed)
    sync(trainer.device)
    start = time.perf_counter()
    trainer.fit(lambda state: None, lambda record: None)
    sync(trainer.device)
    return time.perf_counter() - start


def recalibrated_accuracy(engine: Engine, config: dict, calib: DataLoader, loader: DataLoader) -> float:
    """Top-1 of one subnet of the engine's supernet on ``loader``, after the BN recalibration every model gets."""
    with engine.fixed(engine.model):
        engine.select(engine.model, config)
        recalibrate_bn(engine.model, calib, BN_BATCHES)
        return accuracy(engine.model, loader)


def trained_alone(config: dict, splits: Splits, data: DataSpec, spec: TrainSpec, epochs: int, seed: int) -> float:
    """Test top-1 of the subnet ``config`` as a plain model of fresh weights, trained alone on the labels.

    The same loop, optimizer, schedule and epochs as the supernet it was found in; what a supernet's
    subnet is measured against (BigNAS and AlphaNet report theirs match or beat it).
    """
    model = convert_both(None, seed + 1000)[0]  # weights of its own, not the supernet's initial ones
    mtn.select(model, config)
    alone = mtn.export(model)
    trainer = SubnetTrainer(alone, splits, data, spec.model_copy(update={"epochs": epochs}), seed=seed)
    trainer.fit(lambda state: None, lambda record: None)
    return accuracy(alone, DataLoader(splits.test, batch_size=data.eval_batch_size))


def search_nascli(
    model: nn.Module, share: float, calib: DataLoader, val: DataLoader, args: argparse.Namespace, seed: int
) -> tuple[dict, float, int, float]:
    """nascli's evolutionary search: (best config, its validation score, candidates scored, seconds)."""
    config = {
        "data_loader": calib,
        "score_func": lambda m: accuracy(m, val),
        "max_iter_data_loader": BN_BATCHES,
        "population": args.population,
        "parents": max(1, args.population // 4),
        "mutation_prob": 0.1,
        "iterations": args.search_iterations,
        "seed": seed,
    }
    start = time.perf_counter()
    _, history = mtn.search_select(model, {"flops": f"{100 * share:g}%"}, config=config)
    seconds = time.perf_counter() - start
    return history["best"]["config"], history["best"]["score"], len(history["candidates"]), seconds


def search_modelopt(
    motn: Any, model: nn.Module, share: float, calib: DataLoader, val: DataLoader, args, seed: int, scored_target: int
) -> tuple[dict, float, int, float, float]:
    """ModelOpt's evolutionary search on a copy, stopped once it has scored ``scored_target`` subnets.

    Returns (best config, its validation score, candidates scored, seconds, the absolute flops bound
    in ModelOpt's units). ``EvolveSearcher.early_stop`` is ModelOpt's hook for ending a search; it
    is asked after every sample.
    """
    from modelopt.torch.nas.autonas import EvolveSearcher

    model = copy.deepcopy(model)  # ModelOpt's search exports the model in place
    dummy = torch.zeros(1, *SHAPE, device=next(model.parameters()).device)
    score = CountedScore(val)
    config = {
        "data_loader": calib,
        "score_func": score,
        "max_iter_data_loader": BN_BATCHES,
        "population_size": args.population,
        "candidate_size": max(1, args.population // 4),
        "mutation_prob": 0.1,
        "num_iters": 50 * max(1, scored_target),  # a cap: most samples miss the flops window or repeat
        "verbose": False,
    }
    random.seed(seed)
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("always")
        with motn.no_modelopt_patches():
            motn.sample(model, max)
            bound = share * motn.utils.inference_flops(model, dummy_input=dummy, unit=1)
        start = time.perf_counter()
        with mock.patch.object(EvolveSearcher, "early_stop", lambda self: score.calls >= scored_target):
            _, state = motn.search(model, {"flops": bound}, dummy, config)
        seconds = time.perf_counter() - start
    # The one warning that matters: those scores were taken with stale BN statistics (a short run's cache is not full).
    stale = sum("modelopt data queue not filled" in str(w.message) for w in caught)
    if stale:
        log(f"ModelOpt warned {stale} times that its BN cache is not full: its search scored with stale statistics")
    return state["best"]["config"], state["best"]["metric"], score.calls, seconds, bound


def convert_both(motn: Any, seed: int) -> tuple[nn.Module, nn.Module | None]:
    """nascli's and ModelOpt's supernets of one ResNet-20 (the same initial weights, the same space)."""
    torch.manual_seed(seed)
    base = resnet20(10, SHAPE[0], 16)
    config = mtn.config.AutoNASConfig()
    config["nn.Conv2d"]["*"]["channel_divisor"] = DIVISOR
    ours = mtn.convert(copy.deepcopy(base), [("autonas", config)], dummy_input=torch.zeros(1, *SHAPE))
    if motn is None:
        return ours, None
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        theirs = motn.convert(copy.deepcopy(base), mode=modelopt_rules(DIVISOR))
    check_same_space(ours, theirs)
    return ours, theirs


def best_uniform(model: nn.Module, share: float) -> tuple[float, dict]:
    """(share, config) of the largest uniform-width subnet within the flops bound (depths at their max)."""
    costs = cost_model(model)
    bound = share * costs.cost(costs.named("max"), ("flops",))["flops"]
    fitting = [
        (s, c)
        for s, c in uniform_configs(model, lambda name: not name.endswith(".depth"))
        if costs.cost(c, ("flops",))["flops"] <= bound
    ]
    return max(fitting, key=lambda sc: sc[0])


def run_seed(
    engines: list[Engine], motn: Any, splits: Splits, data: DataSpec, loaders: dict, args, seed: int
) -> dict[str, dict[str, float]]:
    """Calibrate, train, search and evaluate every engine for one seed; the measured numbers per engine."""
    share = parse_share(args.flops)
    ours = engines[0].model
    costs = cost_model(ours)
    full = costs.cost(costs.named("max"), ("flops",))["flops"]
    log(f"seed {seed}: timing {args.calib_steps} steps per engine")
    per_step = step_seconds(engines, splits, data, seed, args.calib_steps)
    steps_per_epoch = len(splits.train) // data.batch_size
    results: dict[str, dict[str, float]] = {}
    order = engines if seed % 2 == 0 else engines[::-1]  # who trains first alternates with the seed
    for engine in order:
        epochs = max(1, math.floor(args.budget / (steps_per_epoch * per_step[engine.name])))
        log(f"seed {seed}: training {engine.name} for {epochs} epochs ({per_step[engine.name]:.4f} s per step)")
        seconds = train(engine, splits, data, epochs, seed)
        results[engine.name] = {"step_s": per_step[engine.name], "epochs": epochs, "train_s": seconds}
    uniform_share, uniform = best_uniform(ours, share)
    calib, val, test = loaders["calib"], loaders["val"], loaders["test"]
    nascli_scored = 0
    for engine in engines:
        found = results[engine.name]
        log(f"seed {seed}: searching {engine.name}")
        if engine.name.startswith("nascli"):
            searched, val_score, scored, seconds = search_nascli(engine.model, share, calib, val, args, seed)
            nascli_scored = nascli_scored or scored
        else:
            searched, val_score, scored, seconds, bound = search_modelopt(
                motn, engine.model, share, calib, val, args, seed, nascli_scored
            )
            found["bound"] = bound
        searched = {name: searched[name] for name in costs.space.hparams}
        log(f"seed {seed}: scored {scored} candidates in {seconds:.0f} s; test top-1 of {engine.name}'s subnets")
        configs = {"max": costs.named("max"), "min": costs.named("min"), "searched": searched, "uniform": uniform}
        for how, config in configs.items():
            found[how] = recalibrated_accuracy(engine, config, calib, test)
            found[f"{how}_flops"] = costs.cost(config, ("flops",))["flops"] / full
        # The search's score came after that engine's own BN recalibration; this one after the common one.
        found["search_val_common"] = recalibrated_accuracy(engine, searched, calib, val)
        found.update(search_val=val_score, scored=scored, search_s=seconds, uniform_share=uniform_share)
        if args.standalone and engine.name.startswith("nascli"):
            log(f"seed {seed}: training {engine.name}'s searched subnet alone for {found['epochs']} epochs")
            found["alone"] = trained_alone(searched, splits, data, engine.spec, found["epochs"], seed)
    return results


def parse_share(flops: str) -> float:
    """``"50%"`` -> 0.5: the bound as a share of the max subnet's flops."""
    if not flops.endswith("%"):
        raise UserInputError(f"--flops {flops!r}: give a share of the max subnet's flops, e.g. 50%")
    return float(flops[:-1]) / 100


ROWS: dict[str, tuple[str, Callable[[float], str]]] = {
    "step_s": ("seconds per training step (calibration mean)", lambda v: f"{v:.4f}"),
    "epochs": ("epochs run", lambda v: f"{v:g}"),
    "train_s": ("training seconds", lambda v: f"{v:.1f}"),
    **{how: (f"{how} subnet: test top-1", lambda v: f"{v:.2%}") for how in SUBNETS},
    **{f"{how}_flops": (f"{how} subnet: flops, share of max", lambda v: f"{v:.1%}") for how in SUBNETS},
    "search_val": ("searched subnet: validation top-1 (the search's score)", lambda v: f"{v:.2%}"),
    "search_val_common": ("searched subnet: validation top-1 after the common BN recalibration", lambda v: f"{v:.2%}"),
    "alone": ("searched subnet trained alone (fresh weights, same epochs): test top-1", lambda v: f"{v:.2%}"),
    "scored": ("search: candidates scored", lambda v: f"{v:g}"),
    "search_s": ("search seconds", lambda v: f"{v:.1f}"),
}


def seed_table(seed: int, results: dict[str, dict[str, float]], budget: float) -> Table:
    names = list(results)
    table = Table(title=f"Seed {seed}: supernet training budget {budget:g} s per engine")
    for column in ("measure", *names):
        table.add_column(column)
    for key, (label, fmt) in ROWS.items():
        if not any(key in results[name] for name in names):
            continue
        cells = [fmt(results[name][key]) if key in results[name] else "" for name in names]
        if key == "train_s":
            cells = [
                c + (" (over budget)" if results[n][key] > budget else "") for c, n in zip(cells, names, strict=True)
            ]
        table.add_row(label, *cells)
    table.add_row("uniform subnet: channel share", *[f"{results[n]['uniform_share']:.3f}" for n in names])
    if "ModelOpt" in results:
        table.add_row("ModelOpt's flops bound (its units: 2 x MACs)", "", f"{results['ModelOpt']['bound']:.4g}")
    return table


def summary_table(per_seed: dict[int, dict[str, dict[str, float]]]) -> Table:
    names = list(next(iter(per_seed.values())))
    table = Table(title=f"Across seeds {sorted(per_seed)}: mean (spread = max - min)")
    for column in ("measure", *names):
        table.add_column(column)
    for key, (label, fmt) in ROWS.items():
        cells = []
        for name in names:
            values = [r[name][key] for r in per_seed.values() if key in r[name]]
            cells.append(f"{fmt(statistics.mean(values))} ({fmt(max(values) - min(values))})" if values else "")
        if not any(cells):
            continue
        table.add_row(label, *cells)
    return table


def verdicts(per_seed: dict[int, dict[str, dict[str, float]]]) -> list[str]:
    """The two questions the benchmark asks, answered in points of test top-1."""
    runs = list(per_seed.values())

    def spread(values: list[float]) -> float:
        return max(values) - min(values)

    ours = [r["nascli"]["searched"] for r in runs]
    uniform = [r["nascli"]["uniform"] for r in runs]
    lines = []
    if "ModelOpt" in runs[0]:
        diffs = [r["nascli"]["searched"] - r["ModelOpt"]["searched"] for r in runs]
        mean = statistics.mean(diffs)
        lines.append(
            f"nascli's searched subnet is {'ahead of' if mean > 0 else 'not ahead of'} ModelOpt's at equal training "
            f"time: {100 * mean:+.2f} points of test top-1 (mean of {len(runs)} seeds; spread of the difference "
            f"{100 * spread(diffs):.2f}, of nascli's {100 * spread(ours):.2f}, of ModelOpt's "
            f"{100 * spread([r['ModelOpt']['searched'] for r in runs]):.2f})"
        )
    for name in runs[0]:
        if "alone" in runs[0][name]:
            gaps = [100 * (r[name]["searched"] - r[name]["alone"]) for r in runs]
            lines.append(
                f"{name}'s searched subnet against the same architecture trained alone for the same epochs: "
                f"{statistics.mean(gaps):+.2f} points (per seed: {', '.join(f'{g:+.2f}' for g in gaps)})"
            )
    margin = statistics.mean(ours) - statistics.mean(uniform)
    noise = max(spread(ours), spread(uniform))
    beats = margin > noise if len(runs) > 1 else None
    answer = {True: "yes", False: "no", None: "undecided: one seed has no spread"}[beats]
    lines.append(
        f"nascli's searched subnet beats its best uniform subnet by more than the seeds' spread: {answer} "
        f"({100 * margin:+.2f} points; spread {100 * noise:.2f} points, the larger of the two rows')"
    )
    return lines


def subset(dataset: torch.utils.data.Dataset, size: int | None) -> torch.utils.data.Dataset:
    """A fixed random subset (the same for every seed and engine), or the whole split."""
    if not size or size >= len(dataset):
        return dataset
    keep = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))[:size]
    return Subset(dataset, keep.tolist())


def machine(device: torch.device) -> str:
    """The card or CPU, threads, and the versions the numbers belong to."""
    if device.type == "cuda":
        where = torch.cuda.get_device_name(device)
    else:
        where = platform.processor() or "CPU"
        with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
            where = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), where)
    try:
        modelopt = importlib.metadata.version("nvidia-modelopt")
    except importlib.metadata.PackageNotFoundError:
        modelopt = NOT_INSTALLED
    return (
        f"device: {where} ({device.type}), {torch.get_num_threads()} threads; torch {torch.__version__}, "
        f"nvidia-modelopt {modelopt}"
    )


def nascli_spec(overrides: list[str], device: str) -> TrainSpec:
    """``TrainSpec()``'s defaults with the ``--nascli-set`` overrides (values read as YAML)."""
    fields = {".".join(path): value for path, value in parse_overrides(overrides)}
    if "epochs" in fields:
        raise UserInputError("--nascli-set epochs: the budget sets the epochs")
    return TrainSpec(**{"device": device, **fields})


def parse_variants(values: list[str]) -> list[tuple[str, list[str]]]:
    """``["r1:num_random=1,channels_last=true"]`` -> ``[("r1", ["num_random=1", "channels_last=true"])]``."""
    parsed = []
    for value in values:
        name, sep, sets = value.partition(":")
        if not sep or not name or not sets:
            raise UserInputError(f"--variant {value!r}: give NAME:KEY=VALUE[,KEY=VALUE]")
        parsed.append((name, sets.split(",")))
    return parsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=600, help="training seconds per engine")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--flops", default="50%", help="the search's bound, a share of the max subnet's flops")
    parser.add_argument("--search-iterations", type=int, default=10, help="generations of nascli's search")
    parser.add_argument("--population", type=int, default=100, help="both searches' population (parents: a quarter)")
    parser.add_argument("--calib-steps", type=int, default=60, help="timed steps per engine before training")
    parser.add_argument("--nascli-set", action="append", default=[], metavar="KEY=VALUE", help="a TrainSpec field")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME:KEY=VALUE[,KEY=VALUE]",
        help="another nascli engine in the same run, TrainSpec fields over the --nascli-set ones",
    )
    parser.add_argument("--standalone", action="store_true", help="also train each nascli searched subnet alone")
    parser.add_argument("--train-size", type=int, default=None, help="a fixed subset of the training split")
    parser.add_argument("--eval-size", type=int, default=None, help="a fixed subset of validation (the searches')")
    parser.add_argument("--test-size", type=int, default=None, help="a fixed subset of test (smoke runs only)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="auto: cuda when available")
    parser.add_argument("--no-modelopt", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        share = parse_share(args.flops)
        spec = nascli_spec(args.nascli_set, args.device)
        variants = {
            name: nascli_spec(args.nascli_set + sets, args.device) for name, sets in parse_variants(args.variant)
        }
        device = training_device(args.device)
    except (UserInputError, ValidationError, ValueError) as error:
        parser.error(str(error))
    if not 0 < share <= 1:
        parser.error(f"--flops {args.flops}: a share between 0% and 100%")
    motn = None if args.no_modelopt else load_modelopt()
    splits = load_splits("fashion_mnist")
    splits = dataclasses.replace(
        splits,
        train=subset(splits.train, args.train_size),
        val=subset(splits.val, args.eval_size),
        test=subset(splits.test, args.test_size),
    )
    data = DataSpec(name="fashion_mnist", batch_size=128)
    loaders = {
        "calib": DataLoader(splits.train, batch_size=data.batch_size, shuffle=False, drop_last=True),
        "val": DataLoader(splits.val, batch_size=data.eval_batch_size),
        "test": DataLoader(splits.test, batch_size=data.eval_batch_size),
    }
    console = Console(width=160)
    console.print(machine(device))
    changed = ", ".join(args.nascli_set) or "none"
    console.print(
        f"Fashion-MNIST: {len(splits.train)} training, {len(splits.val)} validation, {len(splits.test)} test images; "
        f"ResNet-20 (autonas, divisor {DIVISOR}); nascli TrainSpec overrides: {changed}; search: flops <= "
        f"{args.flops}, population {args.population}, {args.search_iterations} nascli generations"
    )
    if motn is None:
        console.print(f"ModelOpt: {'left out (--no-modelopt)' if args.no_modelopt else NOT_INSTALLED}; nascli alone")
    # ModelOpt trains with TrainSpec's defaults: the --nascli-set overrides are nascli's variant.
    modelopt_spec = TrainSpec(device=args.device, sandwich=False)
    per_seed = {}
    for seed in args.seeds:
        ours, theirs = convert_both(motn, seed)
        engines = [Engine("nascli", ours, spec, NasCliTrainer, lambda m: random_sampling(m, enabled=False), mtn.select)]
        for name, variant in variants.items():
            engines.append(
                Engine(
                    f"nascli {name}",
                    copy.deepcopy(ours),
                    variant,
                    NasCliTrainer,
                    lambda m: random_sampling(m, enabled=False),
                    mtn.select,
                )  # fmt: skip
            )
        if theirs is not None:
            engines.append(
                Engine(
                    "ModelOpt",
                    theirs,
                    modelopt_spec,
                    ModelOptTrainer,
                    lambda m: motn.no_modelopt_patches(),
                    lambda m, c: motn.select(m, c, strict=False),
                    before_training=random.seed,
                )  # fmt: skip
            )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ModelOpt's deprecation and tracing notes
            per_seed[seed] = run_seed(engines, motn, splits, data, loaders, args, seed)
        console.print(seed_table(seed, per_seed[seed], args.budget))
    console.print(summary_table(per_seed))
    for line in verdicts(per_seed):
        console.print(line)


if __name__ == "__main__":
    main()
