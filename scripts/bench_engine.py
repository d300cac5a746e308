"""Engine overhead: convert time, and a training step of a converted model against plain models.

Prints one table. Timings alternate between the two models being compared (A, B, A, B, ...) and
the ratio is of medians, so machine noise hits both sides alike. Where nvidia-modelopt is
installed, the same measurements are taken for ModelOpt in the same run, under the same
conditions: resnet50 converted in autonas mode by both engines (the table shows that both find the
same number of searchable hparams), the converted model holding the original's weights, and every
timed step one forward+backward in train mode (batch norm on batch statistics, as in training) of a
fixed subnet. A converted model of either engine draws a random subnet on each train-mode forward
(nascli's stops once ``mtn.sample`` picks one, ModelOpt's does not); that is switched off for the
timed steps (nascli: ``mtn.random_sampling(model, enabled=False)``, ModelOpt:
``mtn.no_modelopt_patches()``, which also skips its caching of inputs for later batch-norm
calibration), so both steps run the subnet selected before timing.

    python scripts/bench_engine.py [--threads 1] [--size 224] [--batch 8] [--repeats 7]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
import warnings

import torch
import torchvision
from optional_modelopt import NOT_INSTALLED, load_modelopt
from rich.console import Console
from rich.table import Table

import nascli.nas as mtn


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
        mtn.export,  # a new model; the converted one is left as it was
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


if __name__ == "__main__":
    main()
