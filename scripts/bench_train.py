"""Supernet training quality: sandwich + in-place distillation against one random subnet per step.

For the same number of optimizer steps, trains the digits (or Fashion-MNIST) ResNet-20 supernet
both ways and reports validation top-1 of its max, centroid and min subnets after BN
recalibration; trains the same three architectures alone from scratch for the same epochs,
evaluated after the same recalibration; and times a sandwich step against a plain step of the
original model. Prints the table, then each epoch's max and min accuracy of both supernets.

    python scripts/bench_train.py [--data digits|fashion_mnist] [--epochs 20] [--threads 2]
                                  [--train-size N] [--width 16] [--lr 0.1] [--seed 0]
                                  [--device auto|cpu|cuda]

``--train-size`` trains on a fixed random subset of the training split (validation stays whole),
so the Fashion-MNIST comparison fits a CPU session. ``--seed`` sets the initial weights, the
sampled subnets and the batch order of every run (the subset stays the same). On a GPU
(``--device auto`` finds it) every run trains there and the step times are synchronized.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import time
from collections.abc import Callable

import torch
from rich.console import Console
from rich.table import Table
from torch import nn
from torch.utils.data import DataLoader, Subset

import nascli.nas as mtn
from nascli.cost.model import cost_model
from nascli.data import load_splits
from nascli.errors import UserInputError
from nascli.models import resnet20
from nascli.recipe.schema import DataSpec, TrainSpec
from nascli.train.bn import recalibrate_bn
from nascli.train.device import training_device
from nascli.train.sandwich import sandwich_step
from nascli.train.task import Classification
from nascli.train.trainer import SupernetTrainer, accuracy, build_optimizer, subnet_metrics, warmup_cosine

SUBNETS = ("max", "centroid", "min")


def supernet(in_channels: int, width: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    config = mtn.config.AutoNASConfig()
    config["nn.Conv2d"]["*"]["channel_divisor"] = 8
    return mtn.convert(
        resnet20(10, in_channels, width), [("autonas", config)], dummy_input=torch.zeros(1, in_channels, *SIDE)
    )


def train_supernet(
    splits, data: DataSpec, spec: TrainSpec, in_channels: int, width: int, seed: int
) -> tuple[dict, float, list[dict]]:
    """Final accuracies of the three subnets, training seconds, and the trainer's per-epoch records."""
    model = supernet(in_channels, width, seed)
    trainer = SupernetTrainer(model, splits, data, spec, seed=seed)
    start = time.perf_counter()
    records: list[dict] = []
    trainer.fit(lambda state: None, records.append)
    seconds = time.perf_counter() - start
    calib, val = eval_loaders(splits, data)
    task = Classification()
    accs = {how: subnet_metrics(model, how, calib, val, spec.bn_calib_batches, task)["acc"] for how in SUBNETS}
    return accs, seconds, records


def eval_loaders(splits, data: DataSpec) -> tuple[DataLoader, DataLoader]:
    """BN recalibration batches (the training split's first) and the validation split, for every model."""
    return (
        DataLoader(splits.train, batch_size=data.batch_size, drop_last=True),
        DataLoader(splits.val, batch_size=data.eval_batch_size),
    )


def train_alone(splits, data: DataSpec, spec: TrainSpec, in_channels: int, width: int, how: str, seed: int) -> float:
    """The subnet's architecture as a plain model, trained from scratch with the same schedule."""
    space = supernet(in_channels, width, seed)
    mtn.sample(space, how)
    model = mtn.export_copy(space)
    torch.manual_seed(seed)
    for m in model.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    device = training_device(spec.device)
    model.to(device)
    optimizer = build_optimizer(model, spec)
    steps = len(splits.train) // data.batch_size
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(spec.epochs * steps, steps))
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(spec.epochs):
        order = torch.randperm(
            len(splits.train), generator=torch.Generator().manual_seed(seed * 100_003 + epoch)
        ).tolist()
        model.train()
        for inputs, targets in DataLoader(splits.train, batch_size=data.batch_size, sampler=order, drop_last=True):
            optimizer.zero_grad()
            loss_fn(model(inputs.to(device)), targets.to(device)).backward()
            optimizer.step()
            schedule.step()
    # Evaluated as the supernet's subnets are: BN statistics re-estimated on the same batches.
    calib, val = eval_loaders(splits, data)
    recalibrate_bn(model, calib, spec.bn_calib_batches)
    return accuracy(model, val)


def step_speed(
    splits, data: DataSpec, in_channels: int, width: int, device: torch.device, repeats: int = 10
) -> tuple[float, float]:
    """(sandwich step seconds / plain step seconds of the original model, ideal ratio from flops)."""
    batch = [t.to(device) for t in next(iter(DataLoader(splits.train, batch_size=data.batch_size)))]
    converted = supernet(in_channels, width).to(device)
    original = mtn.export_copy(converted)
    costs = cost_model(converted)
    rng = random.Random(0)
    configs = [costs.named("max"), costs.named("min")] + [mtn.sample(converted, rng.choice) for _ in range(2)]
    ideal = sum(costs.cost(c)["flops"] for c in configs) / costs.cost(costs.named("max"))["flops"]
    loss_fn = nn.CrossEntropyLoss()
    opt_a = torch.optim.SGD(original.parameters(), lr=0.01)
    opt_b = torch.optim.SGD(converted.parameters(), lr=0.01)

    def plain() -> None:
        opt_a.zero_grad()
        loss_fn(original(batch[0]), batch[1]).backward()
        opt_a.step()

    def timed(step: Callable[[], object]) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    times_a, times_b = [], []
    for _ in range(repeats):
        times_a.append(timed(plain))
        times_b.append(timed(lambda: sandwich_step(converted, batch, loss_fn, opt_b, num_random=2, rng=rng)))
    times_a.sort(), times_b.sort()
    return times_b[repeats // 2] / times_a[repeats // 2], ideal


SIDE = (8, 8)


def main() -> None:
    global SIDE
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="digits", choices=("digits", "fashion_mnist"))
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--train-size", type=int, default=None, help="a fixed subset of the training split")
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="auto: cuda when available")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        device = training_device(args.device)
    except UserInputError as error:
        parser.error(str(error))
    splits = load_splits(args.data)
    if args.train_size:
        keep = torch.randperm(len(splits.train), generator=torch.Generator().manual_seed(0))[: args.train_size]
        splits = dataclasses.replace(splits, train=Subset(splits.train, keep.tolist()))
    SIDE = splits.input_shape[1:]
    in_channels = splits.input_shape[0]
    data = DataSpec(name=args.data, batch_size=64 if args.data == "digits" else 128)
    sandwich = TrainSpec(epochs=args.epochs, lr=args.lr, device=args.device)
    # Same optimizer steps; the single-subnet baseline trains one random subnet per step on the labels.
    single = TrainSpec(epochs=args.epochs, lr=args.lr, sandwich=False, device=args.device)
    acc_s, sec_s, curve_s = train_supernet(splits, data, sandwich, in_channels, args.width, args.seed)
    acc_r, sec_r, curve_r = train_supernet(splits, data, single, in_channels, args.width, args.seed)
    alone = {how: train_alone(splits, data, single, in_channels, args.width, how, args.seed) for how in SUBNETS}
    ratio, ideal = step_speed(splits, data, in_channels, args.width, device)

    table = Table(
        title=f"Supernet training, resnet20 width {args.width} on {args.data} ({len(splits.train)} training "
        f"images), {args.epochs} epochs, lr {args.lr}, seed {args.seed}, {device.type}, "
        f"{torch.get_num_threads()} threads (validation top-1 after BN recalibration)"
    )
    for column in ("training", *SUBNETS, "seconds"):
        table.add_column(column)
    table.add_row("sandwich + distillation", *[f"{acc_s[h]:.2%}" for h in SUBNETS], f"{sec_s:.0f}")
    table.add_row("one random subnet per step", *[f"{acc_r[h]:.2%}" for h in SUBNETS], f"{sec_r:.0f}")
    table.add_row("each architecture alone", *[f"{alone[h]:.2%}" for h in SUBNETS], "")
    for name, acc in (("sandwich - alone", acc_s), ("one random - alone", acc_r)):
        table.add_row(name, *[f"{100 * (acc[h] - alone[h]):+.2f} points" for h in SUBNETS], "")
    table.add_row("sandwich step / plain step time", f"{ratio:.2f}x", f"ideal {ideal:.2f}x (flops)", "", "")
    Console(width=160).print(table)

    curves = Table(title="Per epoch: validation top-1 of the max and min subnets (the trainer's own evaluation)")
    for column in ("epoch", "sandwich max", "sandwich min", "one random max", "one random min"):
        curves.add_column(column)
    for a, b in zip(curve_s, curve_r, strict=True):
        curves.add_row(str(a["epoch"]), *[f"{r[k]:.2%}" for r in (a, b) for k in ("acc_max", "acc_min")])
    Console(width=160).print(curves)


if __name__ == "__main__":
    main()
