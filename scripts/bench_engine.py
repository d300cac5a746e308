"""Engine overhead: convert time, and a training step of a converted model against plain models.

Prints one table. Timings alternate between the two models being compared (A, B, A, B, ...) and
the ratio is of medians, so machine noise hits both sides alike. Where nvidia-modelopt is
installed, the same measurements are taken for ModelOpt in the same run, under the same
conditions: resnet50 converted in autonas mode by both engines (the table shows that both find the
same number of searchable hparams), the converted model holding the original's weights, and every
timed step one forward+backward in train mode (batch norm on batch statistics, as in training) of a
fixed subnet. A converted model of either engine draws a random subnet on each train-mode forward;
that is switched off for the timed steps (nascli: ``mtn.random_sampling(model, enabled=False)``, ModelOpt:
``mtn.no_modelopt_patches()``, which also skips its caching of inputs for later batch-norm
calibration), so both steps run the subnet selected before timing.

A second table times training steps of a supernet, as the supernet issue measures them: a
ResNet-20 (width 16, channel divisor 8) on a batch of 128 Fashion-MNIST-sized images (1x28x28),
converted in autonas mode by both engines to the same search space (ModelOpt gets the rules that
give it nascli's hparams and choices, checked: scripts/supernet_space.py). ModelOpt's step is its
AutoNAS training step (the train-mode forward draws a random subnet, then one backward and one
SGD step), timed as ModelOpt users run it (NCHW) and with the model and batch in channels-last
layout (as nascli's training loop runs every engine's conv models), the ratios given to both;
nascli's are one random subnet per step (``single_subnet_step``), the max subnet alone,
and the sandwich step (max, min and 0 to ``--num-random`` random subnets, in-place distillation,
one SGD step), each also with the model and batch in channels-last layout (``train.channels_last``).
All steps alternate, medians of ``--repeats``; the flops ratio is what the subnets' flops alone
predict (the mean flops of random subnets from 2,000 draws, nascli's cost model).

    python scripts/bench_engine.py [--threads 1] [--size 224] [--batch 8] [--repeats 7]
"""

from __future__ import annotations

import argparse
import copy
import random
import statistics
import time
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
import torchvision
from optional_modelopt import NOT_INSTALLED, load_modelopt
from rich.console import Console
from rich.table import Table
from supernet_space import check_same_space, modelopt_rules

import nascli.nas as mtn
from nascli.cost.model import cost_model
from nascli.models import resnet20
from nascli.space.space import get_space
from nascli.train.sandwich import sandwich_step, single_subnet_step


def step_seconds(model: torch.nn.Module, x: torch.Tensor) -> float:
    start = time.perf_counter()
    model(x).sum().backward()
    return time.perf_counter() - start


def ratio_of_steps(a: torch.nn.Module, b: torch.nn.Module, x: torch.Tensor, repeats: int) -> tuple[float, float, float]:
    """(median seconds of a, median of b, b/a): train-mode steps alternating a and b after one warm-up each."""
    for m in (a, b):
        m.train()
        step_seconds(m, x)
    ta, tb = [], []
    for _ in range(repeats):
        ta.append(step_seconds(a, x))
        tb.append(step_seconds(b, x))
    ma, mb = statistics.median(ta), statistics.median(tb)
    return ma, mb, mb / ma


def convert_rows(engines: dict, repeats: int = 3) -> list[tuple[str, str, str, str]]:
    """Median seconds to convert a fresh resnet50, the engines alternating, and the hparams each finds."""
    times: dict[str, list[float]] = {name: [] for name in engines}
    found = {}
    for _ in range(repeats):
        for name, (convert, hparams) in engines.items():
            model = torchvision.models.resnet50()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                start = time.perf_counter()
                model = convert(model)
                times[name].append(time.perf_counter() - start)
            found[name] = len(hparams(model))
    medians = {name: statistics.median(t) for name, t in times.items()}
    rows = [
        (name, f"convert resnet50 (s), {found[name]} searchable hparams", f"{t:.2f}", "") for name, t in medians.items()
    ]
    if "ModelOpt" in medians:
        rows.append(("ratio", "convert: nascli / ModelOpt", f"{medians['nascli']:.2f} / {medians['ModelOpt']:.2f}",
                     f"{medians['ModelOpt'] / medians['nascli']:.2f}"))  # fmt: skip
    return rows


def step_rows(
    tool: str,
    converted: torch.nn.Module,
    original: torch.nn.Module,
    sample,
    export,
    fixed_subnet,
    x: torch.Tensor,
    repeats: int,
) -> list[tuple[str, str, str, str]]:
    """Step of the converted model at its max subnet against the original, at its min against the export."""
    converted.load_state_dict(original.state_dict())
    rows = []
    with fixed_subnet(converted):
        sample(converted, max)
        a, b, r = ratio_of_steps(original, converted, x, repeats)
        rows.append((tool, "fwd+bwd: converted@max / original", f"{a:.3f} / {b:.3f}", f"{r:.3f}"))
        sample(converted, min)
        exported = export(converted)
        a, b, r = ratio_of_steps(exported, converted, x, repeats)
        rows.append((tool, "fwd+bwd: converted@min / exported@min", f"{a:.3f} / {b:.3f}", f"{r:.3f}"))
    return rows


def _alternating_medians(steps: dict, repeats: int) -> dict[str, float]:
    """Median seconds of each step function, run in turn after two warm-up calls each."""
    for step in steps.values():
        step()
        step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def _random_flops_share(model: torch.nn.Module, draws: int = 2000) -> tuple[float, float]:
    """(min, mean random) flops as fractions of the max subnet's, by nascli's cost model."""
    costs, rng = cost_model(model), random.Random(0)
    hparams = costs.hparams
    full = costs.cost(costs.named("max"), ("flops",))["flops"]
    low = costs.cost(costs.named("min"), ("flops",))["flops"]
    configs = [{n: rng.choice(hp.choices) for n, hp in hparams.items()} for _ in range(draws)]
    mean = float(costs.evaluate(costs.encode(configs))["flops"].mean())
    return low / full, mean / full


def supernet_step_rows(motn, batch: int, num_random: int, repeats: int) -> list[tuple[str, ...]]:
    """Supernet training steps of both engines on one model, batch and search space, against ModelOpt's
    random-subnet step; nascli's sandwich with 0 to ``num_random`` random subnets, in NCHW and NHWC."""
    torch.manual_seed(0)
    x, y = torch.randn(batch, 1, 28, 28), torch.randint(0, 10, (batch,))
    config = mtn.config.AutoNASConfig()
    config["nn.Conv2d"]["*"]["channel_divisor"] = 8
    ours = mtn.convert(resnet20(10, 1, 16), [("autonas", config)], dummy_input=torch.zeros(1, 1, 28, 28)).train()
    nhwc = copy.deepcopy(ours).to(memory_format=torch.channels_last)  # what train.channels_last trains
    x_nhwc = x.contiguous(memory_format=torch.channels_last)
    steps = {
        "nascli: one random subnet": _step(single_subnet_step, ours, x, y, rng=random.Random(0)),
        "nascli: one random subnet, channels_last": _step(single_subnet_step, nhwc, x_nhwc, y, rng=random.Random(0)),
        "nascli: max subnet": _step(single_subnet_step, ours, x, y, subnet="max"),
        "nascli: max subnet, channels_last": _step(single_subnet_step, nhwc, x_nhwc, y, subnet="max"),
    }
    for k in range(num_random + 1):
        name = f"sandwich (max, min, {k} random)"
        steps[f"nascli: {name}"] = _step(sandwich_step, ours, x, y, num_random=k, rng=random.Random(0))
        steps[f"nascli: {name}, channels_last"] = _step(
            sandwich_step, nhwc, x_nhwc, y, num_random=k, rng=random.Random(0)
        )
        if k:  # the smaller subnets on their own slices of the batch (train.split_students)
            steps[f"nascli: {name}, students split, channels_last"] = _step(
                sandwich_step, nhwc, x_nhwc, y, num_random=k, rng=random.Random(0), split_students=True
            )
    if motn is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs = motn.convert(resnet20(10, 1, 16), mode=modelopt_rules(8)).train()
        check_same_space(ours, theirs)  # a step on another space would time another model
        theirs_nhwc = copy.deepcopy(theirs).to(memory_format=torch.channels_last)
        steps = {
            "ModelOpt: one random subnet (AutoNAS)": _their_step(theirs, x, y),
            "ModelOpt: one random subnet (AutoNAS), channels_last": _their_step(theirs_nhwc, x_nhwc, y),
            **steps,
        }
    medians = _alternating_medians(steps, repeats)
    low, mean = _random_flops_share(ours)
    get_space(ours).sample("max")
    bases = list(medians.values())[: 2 if motn is not None else 1]  # ModelOpt's steps, else nascli's first
    rows = [("", f"{name}, step (s)", f"{t:.4f}", *(f"{t / b:.2f}" for b in bases)) for name, t in medians.items()]
    ideal = (1 + low + num_random * mean) / mean
    rows.append(("", f"sandwich ({num_random} random) / random step from flops alone (min {low:.2f}, random"
                 f" {mean:.2f} of max)", "", *[f"{ideal:.2f}"] * len(bases)))  # fmt: skip
    return rows


def _their_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    """ModelOpt's AutoNAS training step on (x, y) (its train-mode forward draws the subnet), as a thunk."""
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    def step() -> None:
        sgd.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        sgd.step()

    return step


def _step(step, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, **kwargs):
    """One training step of ``model`` on (x, y) by ``step`` with an SGD optimizer of its own, as a thunk."""
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return lambda: step(model, (x, y), F.cross_entropy, sgd, **kwargs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--size", type=int, default=224, help="image side in pixels")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--no-modelopt", action="store_true")
    parser.add_argument("--supernet-batch", type=int, default=128)
    parser.add_argument("--num-random", type=int, default=2, help="random subnets of the sandwich step")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.randn(args.batch, 3, args.size, args.size)
    motn = None if args.no_modelopt else load_modelopt()

    engines = {"nascli": (lambda m: mtn.convert(m, "autonas"), lambda m: mtn.get_subnet_config(m, True))}
    if motn is not None:
        engines["ModelOpt"] = (lambda m: motn.convert(m, mode="autonas"), lambda m: motn.get_subnet_config(m, True))
    rows = convert_rows(engines)

    converted = mtn.convert(torchvision.models.resnet50(), "autonas")
    rows += step_rows(
        "nascli",
        converted,
        torchvision.models.resnet50(),
        mtn.sample,
        mtn.export_copy,  # a new model; the converted one is left as it was
        lambda m: mtn.random_sampling(m, enabled=False),
        x,
        args.repeats,
    )
    if motn is None and not args.no_modelopt:
        rows.append(("ModelOpt", NOT_INSTALLED, "", ""))
    if motn is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            converted = motn.convert(torchvision.models.resnet50(), mode="autonas")
            rows += step_rows(
                "ModelOpt",
                converted,
                torchvision.models.resnet50(),
                motn.sample,
                lambda m: motn.export(copy.deepcopy(m)),  # ModelOpt exports in place
                lambda m: motn.no_modelopt_patches(),
                x,
                args.repeats,
            )
    table = Table(
        title=f"Engine overhead, resnet50 (autonas), train-mode fwd+bwd of a fixed subnet, batch "
        f"{args.batch}x3x{args.size}x{args.size}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    for column in ("tool", "measure", "seconds (a / b)", "ratio b/a"):
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    Console(width=160).print(table)
    supernet = Table(
        title=f"Supernet training step, ResNet-20 (autonas, divisor 8), batch {args.supernet_batch}x1x28x28, SGD, "
        f"{torch.get_num_threads()} threads"
    )
    ratios = ("/ ModelOpt's step", "/ ModelOpt's, channels_last") if motn is not None else ("/ the first row",)
    for column in ("", "step", "seconds", *ratios):
        supernet.add_column(column)
    for row in supernet_step_rows(motn, args.supernet_batch, args.num_random, args.repeats):
        supernet.add_row(*row)
    Console(width=160).print(supernet)


if __name__ == "__main__":
    main()
