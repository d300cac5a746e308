"""Engine overhead: convert time, and a training step of a converted model against plain models.

Prints one table. Timings alternate between the two models being compared (A, B, A, B, ...) and
the ratio is of medians, so machine noise hits both sides alike. Where nvidia-modelopt is
installed, the same measurements are taken for ModelOpt in the same run.

    python scripts/bench_engine.py [--threads 1] [--size 224] [--batch 8] [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
import torchvision
from rich.console import Console
from rich.table import Table

import nascli.nas as mtn


def step_seconds(model: torch.nn.Module, x: torch.Tensor) -> float:
    start = time.perf_counter()
    model(x).sum().backward()
    return time.perf_counter() - start


def ratio_of_steps(
    a: torch.nn.Module, b: torch.nn.Module, x: torch.Tensor, repeats: int, train: bool = True
) -> tuple[float, float, float]:
    """(median seconds of a, median of b, b/a), alternating a and b after one warm-up each.

    ``train=False`` keeps both in eval mode, so a model that resamples its subnet on every
    train-mode forward (ModelOpt's) keeps the one being measured.
    """
    for m in (a, b):
        m.train(train)
        step_seconds(m, x)
    ta, tb = [], []
    for _ in range(repeats):
        ta.append(step_seconds(a, x))
        tb.append(step_seconds(b, x))
    ma, mb = statistics.median(ta), statistics.median(tb)
    return ma, mb, mb / ma


def convert_seconds(convert, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        model = torchvision.models.resnet50()
        start = time.perf_counter()
        convert(model)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def nascli_rows(x: torch.Tensor, repeats: int) -> list[tuple[str, str, str, str]]:
    rows = []
    t = convert_seconds(lambda m: mtn.convert(m, "autonas"))
    rows.append(("nascli", "convert resnet50 (s)", f"{t:.2f}", ""))

    original = torchvision.models.resnet50()
    converted = mtn.convert(torchvision.models.resnet50(), "autonas", dummy_input=x[:1])
    converted.load_state_dict(original.state_dict())
    with mtn.random_sampling(converted, enabled=False):
        mtn.sample(converted, max)
        a, b, r = ratio_of_steps(original, converted, x, repeats)
        rows.append(("nascli", "fwd+bwd: converted@max / original", f"{a:.3f} / {b:.3f}", f"{r:.3f}"))
        mtn.sample(converted, min)
        exported = mtn.export(converted)
        a, b, r = ratio_of_steps(exported, converted, x, repeats)
        rows.append(("nascli", "fwd+bwd: converted@min / exported@min", f"{a:.3f} / {b:.3f}", f"{r:.3f}"))
    return rows


def modelopt_rows(x: torch.Tensor, repeats: int) -> list[tuple[str, str, str, str]]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import modelopt.torch.nas as motn
    except ImportError:
        return [("ModelOpt", "not installed (pip install -e '.[bench]')", "", "")]
    rows = []
    t = convert_seconds(lambda m: motn.convert(m, mode="autonas"))
    rows.append(("ModelOpt", "convert resnet50 (s)", f"{t:.2f}", ""))
    original = torchvision.models.resnet50()
    converted = motn.convert(torchvision.models.resnet50(), mode="autonas")
    motn.sample(converted, max)
    a, b, r = ratio_of_steps(original, converted, x, repeats, train=False)
    rows.append(("ModelOpt", "fwd+bwd: converted@max / original", f"{a:.3f} / {b:.3f}", f"{r:.3f}"))
    motn.sample(converted, min)
    import copy

    exported = motn.export(copy.deepcopy(converted))
    a, b, r = ratio_of_steps(exported, converted, x, repeats, train=False)
    rows.append(("ModelOpt", "fwd+bwd: converted@min / exported@min", f"{a:.3f} / {b:.3f}", f"{r:.3f}"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--size", type=int, default=224, help="image side in pixels")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--no-modelopt", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.randn(args.batch, 3, args.size, args.size)
    rows = nascli_rows(x, args.repeats)
    if not args.no_modelopt:
        rows += modelopt_rows(x, args.repeats)
    table = Table(
        title=f"Engine overhead, resnet50, batch {args.batch}x3x{args.size}x{args.size}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    for column in ("tool", "measure", "seconds (a / b)", "ratio b/a"):
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    Console(width=140).print(table)


if __name__ == "__main__":
    main()
