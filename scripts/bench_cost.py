"""Cost-model speed: configs per second, mtn.profile in-process, `nascli profile` from process start.

Prints one table. Where nvidia-modelopt is installed, ModelOpt's mtn.profile runs on the same
model in the same run and the ratio is reported.

    python scripts/bench_cost.py [--threads 1] [--configs 200000]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torchvision
from rich.console import Console
from rich.table import Table

import nascli.nas as mtn
from nascli.cost.model import cost_model

ROOT = Path(__file__).resolve().parents[1]


def random_matrix(model: torch.nn.Module, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    choices = [np.array(hp.choices) for hp in cost_model(model).space.hparams.values()]
    return np.stack([c[rng.integers(0, len(c), n)] for c in choices], axis=1).astype(np.int64)


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    start = time.perf_counter()
    value = fn(*args, **kwargs)
    return time.perf_counter() - start, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--configs", type=int, default=200_000)
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

    fresh = mtn.convert(torchvision.models.resnet50(), "autonas")
    with contextlib.redirect_stdout(io.StringIO()):
        first, _ = timed(mtn.profile, fresh, dummy, {"flops": 2e9})
        again, _ = timed(mtn.profile, fresh, dummy, {"flops": 2e9})
    rows.append(("nascli", "mtn.profile resnet50, first call (s)", f"{first:.3f}"))
    rows.append(("nascli", "mtn.profile resnet50, later calls (s)", f"{again:.3f}"))

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

    if not args.no_modelopt:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                import modelopt.torch.nas as motn
        except ImportError:
            rows.append(("ModelOpt", "not installed (pip install -e '.[bench]')", ""))
        else:
            theirs = motn.convert(torchvision.models.resnet50(), mode="autonas")
            with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                mo_seconds, _ = timed(motn.profile, theirs, dummy, constraints={"flops": 2e9})
            rows.append(("ModelOpt", "mtn.profile resnet50 (s)", f"{mo_seconds:.2f}"))
            rows.append(
                ("ratio", "ModelOpt mtn.profile / nascli mtn.profile (first call)", f"{mo_seconds / first:.0f}x")
            )

    table = Table(
        title=f"Cost model, resnet50 1x3x224x224, {torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    for column in ("tool", "measure", "value"):
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    Console(width=140).print(table)


if __name__ == "__main__":
    main()
