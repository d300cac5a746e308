"""Cost-model speed: configs per second, convert + mtn.profile in-process, `nascli profile` from process start.

Prints one table. nascli compiles its cost terms inside ``mtn.convert`` and ModelOpt traces the
model inside ``mtn.profile``, so the two engines are compared on what a user waits for before the
first answer: convert a fresh resnet50 (autonas mode in both) and profile it once. Both profile
calls ask for the same answer, the flops and params of the min, centroid and max subnets
(``use_centroid=True``); ModelOpt's default call, which estimates the centroid row as the median of
30 random subnets, is timed as well and reported in its own row. Where nvidia-modelopt is
installed its rows come from the same run, the two engines alternating, medians of the repeats.

    python scripts/bench_cost.py [--threads 1] [--configs 200000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision
from optional_modelopt import NOT_INSTALLED, load_modelopt
from rich.console import Console
from rich.table import Table

import nascli.nas as mtn
from nascli.cost.model import cost_model

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = {"flops": "50%"}  # a share of the original, so both engines read the same bound


def random_matrix(model: torch.nn.Module, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    choices = [np.array(hp.choices) for hp in cost_model(model).space.hparams.values()]
    return np.stack([c[rng.integers(0, len(c), n)] for c in choices], axis=1).astype(np.int64)


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    start = time.perf_counter()
    value = fn(*args, **kwargs)
    return time.perf_counter() - start, value


def nascli_timings(dummy: torch.Tensor) -> dict[str, Any]:
    """Seconds to convert a fresh resnet50 and to profile it (first and second call), its hparams and stats."""
    model = torchvision.models.resnet50()
    convert, model = timed(mtn.convert, model, "autonas")
    first, (_, stats) = timed(mtn.profile, model, dummy, CONSTRAINTS, verbose=False, use_centroid=True)
    later, _ = timed(mtn.profile, model, dummy, CONSTRAINTS, verbose=False, use_centroid=True)
    return {"convert": convert, "profile": first, "later": later, "hparams": len(mtn.get_subnet_config(model, True)),
            "stats": stats}  # fmt: skip


def modelopt_timings(motn, dummy: torch.Tensor) -> dict[str, Any]:
    """Seconds to convert a fresh resnet50 and to profile it as nascli does, then with ModelOpt's defaults."""
    model = torchvision.models.resnet50()
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        convert, model = timed(motn.convert, model, mode="autonas")
        first, (_, stats) = timed(motn.profile, model, dummy, constraints=CONSTRAINTS, verbose=False, use_centroid=True)
        default, _ = timed(motn.profile, model, dummy, constraints=CONSTRAINTS, verbose=False)
    return {"convert": convert, "profile": first, "default": default,
            "hparams": len(motn.get_subnet_config(model, True)), "stats": stats}  # fmt: skip


def largest_difference(ours: dict, theirs: dict) -> float:
    """Largest relative difference of the min, centroid and max flops and params of the two profiles.

    ModelOpt counts a multiply-accumulate as two flops, so its flops are halved first. A small
    difference remains: the two engines count batch norm differently.
    """
    return max(
        abs(theirs[key][measure] / scale - ours[key][measure]) / ours[key][measure]
        for key in ("min", "centroid", "max")
        for measure, scale in (("flops", 2), ("params", 1))
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--configs", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3, help="convert + profile runs per engine")
    parser.add_argument("--no-modelopt", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    dummy = torch.randn(1, 3, 224, 224)

    model = mtn.convert(torchvision.models.resnet50(), "autonas")
    costs = cost_model(model)
    matrix = random_matrix(model, args.configs)
    seconds, _ = timed(costs.evaluate, matrix)
    rows.append(("nascli", f"configs/s, batch of {args.configs:,} (resnet50)", f"{args.configs / seconds:,.0f}"))
    configs = [dict(zip(costs.names, row, strict=True)) for row in matrix[:2000].tolist()]
    seconds, _ = timed(lambda: [costs.cost(c) for c in configs])
    rows.append(("nascli", "configs/s, one dict at a time (resnet50)", f"{len(configs) / seconds:,.0f}"))

    motn = None if args.no_modelopt else load_modelopt()
    ours, theirs = [], []
    for _ in range(args.repeats):
        ours.append(nascli_timings(dummy))
        if motn is not None:
            theirs.append(modelopt_timings(motn, dummy))

    def median(runs: list[dict], key: str) -> float:
        return statistics.median(run[key] for run in runs)

    def total(runs: list[dict]) -> float:
        return statistics.median(run["convert"] + run["profile"] for run in runs)

    rows.append(("nascli", "searchable hparams after convert (autonas)", str(ours[0]["hparams"])))
    rows.append(("nascli", "convert resnet50 (s)", f"{median(ours, 'convert'):.3f}"))
    rows.append(("nascli", "mtn.profile, first call on the converted model (s)", f"{median(ours, 'profile'):.4f}"))
    rows.append(("nascli", "mtn.profile, second call (s)", f"{median(ours, 'later'):.4f}"))
    rows.append(("nascli", "convert + first mtn.profile (s)", f"{total(ours):.3f}"))
    if motn is None and not args.no_modelopt:
        rows.append(("ModelOpt", NOT_INSTALLED, ""))
    if theirs:
        rows.append(("ModelOpt", "searchable hparams after convert (autonas)", str(theirs[0]["hparams"])))
        rows.append(("ModelOpt", "convert resnet50 (s)", f"{median(theirs, 'convert'):.3f}"))
        rows.append(("ModelOpt", "mtn.profile, use_centroid=True, first call on the converted model (s)",
                     f"{median(theirs, 'profile'):.3f}"))  # fmt: skip
        rows.append(("ModelOpt", "convert + first mtn.profile (s)", f"{total(theirs):.3f}"))
        rows.append(("ModelOpt", "mtn.profile with its defaults (centroid = median of 30 random subnets) (s)",
                     f"{median(theirs, 'default'):.2f}"))  # fmt: skip
        rows.append(("both", "largest difference of the profiled min/centroid/max flops and params",
                     f"{largest_difference(ours[0]['stats'], theirs[0]['stats']):.2%}"))  # fmt: skip
        rows.append(("ratio", "ModelOpt / nascli: convert + first mtn.profile", f"{total(theirs) / total(ours):.1f}x"))
        rows.append(("ratio", "ModelOpt / nascli: convert alone",
                     f"{median(theirs, 'convert') / median(ours, 'convert'):.1f}x"))  # fmt: skip
        rows.append(("ratio", "ModelOpt / nascli: mtn.profile alone, first call (nascli's terms compiled in convert)",
                     f"{median(theirs, 'profile') / median(ours, 'profile'):.0f}x"))  # fmt: skip

    with tempfile.TemporaryDirectory() as tmp:
        nascli = [sys.executable, "-m", "nascli", "-q"]
        recipe = str(ROOT / "recipes/resnet50.yaml")
        subprocess.run([*nascli, "convert", recipe, f"run_dir={tmp}"], check=True, capture_output=True)
        start = time.perf_counter()
        subprocess.run([*nascli, "profile", f"{tmp}/convert.pt", "--flops", "2G"], check=True, capture_output=True)
        rows.append(("nascli", "`nascli profile` resnet50 checkpoint, process start to exit (s)",
                     f"{time.perf_counter() - start:.2f}"))  # fmt: skip
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import torch, torchvision.models"], check=True, capture_output=True)
        rows.append(
            ("floor", "`python -c 'import torch, torchvision.models'` (s)", f"{time.perf_counter() - start:.2f}")
        )

    table = Table(
        title=f"Cost model, resnet50 1x3x224x224, {torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"median of {args.repeats}"
    )
    for column in ("tool", "measure", "value"):
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    Console(width=140).print(table)


if __name__ == "__main__":
    main()
