"""Latency prediction quality: 20 random resnet18 subnets, predicted against measured, on the CPU.

Prints one table: Spearman rank correlation (target >= 0.9) and median relative error (target
<= 15%) of the lookup-table prediction against the measured latency of each exported subnet.

    python scripts/bench_latency.py [--threads 1] [--subnets 20] [--size 224] [--batch 1]
"""

from __future__ import annotations

import argparse
import random
import time

import numpy as np
import torch
import torchvision
from rich.console import Console
from rich.table import Table

import nascli.nas as mtn
from nascli.cost.latency import LatencyModel


def ranks(values: np.ndarray) -> np.ndarray:
    order = values.argsort()
    found = np.empty(len(values))
    found[order] = np.arange(len(values))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--subnets", type=int, default=20)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3, help="measurements of each subnet (the minimum counts)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    random.seed(0)
    torch.manual_seed(0)
    model = mtn.convert(torchvision.models.resnet18(), dummy_input=torch.zeros(1, 3, args.size, args.size))
    timing = LatencyModel(model, "cpu", args.batch, args.repeats)
    start = time.perf_counter()
    timing.calibrate()
    configs = [mtn.sample(model, "random") for _ in range(args.subnets)]
    timing.prefetch(configs, rounds=args.rounds)
    predicted = np.array([timing.predict(c) for c in configs])
    table_seconds = time.perf_counter() - start
    measured = np.array(timing.measure_many(configs, rounds=args.rounds))
    again = np.array(timing.measure_many(configs, rounds=args.rounds))
    rho = np.corrcoef(ranks(predicted), ranks(measured))[0, 1]
    ceiling = np.corrcoef(ranks(again), ranks(measured))[0, 1]
    error = np.median(np.abs(predicted - measured) / measured)

    table = Table(
        title=f"Latency prediction, resnet18 autonas, {args.subnets} random subnets, batch {args.batch}x3x"
        f"{args.size}x{args.size}, cpu, {torch.get_num_threads()} threads"
    )
    for column in ("measure", "value", "target"):
        table.add_column(column)
    table.add_row("Spearman rank correlation", f"{rho:.3f}", ">= 0.9")
    table.add_row("median relative error", f"{error:.1%}", "<= 15%")
    table.add_row("noise ceiling: Spearman of two measurements of the same subnets", f"{ceiling:.3f}", "")
    table.add_row("measured latency, min .. max (ms)", f"{measured.min() * 1e3:.1f} .. {measured.max() * 1e3:.1f}", "")
    table.add_row("table entries timed", str(len(timing.entries)), "")
    table.add_row("fitted scale, overhead (ms)", f"{timing.scale:.2f}, {timing.overhead * 1e3:.2f}", "")
    table.add_row(f"table build + calibration + {args.subnets} predictions (s)", f"{table_seconds:.1f}", "")
    Console(width=140).print(table)


if __name__ == "__main__":
    main()
