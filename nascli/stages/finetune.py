"""The finetune stage: the searched subnet exported and trained alone; finetune.pt out."""

from __future__ import annotations

import copy
import time
from pathlib import Path

import torch
from rich.console import Console
from torch import nn
from torch.utils.data import DataLoader

from nascli.data import recipe_splits
from nascli.opt.checkpoint import exported_checkpoint, write_checkpoint
from nascli.recipe.schema import Recipe
from nascli.space.export import export_model
from nascli.space.space import get_space
from nascli.stages.rundir import append_metrics, run_dir_lock
from nascli.train.device import autocast, training_device
from nascli.train.sandwich import distillation_loss
from nascli.train.trainer import accuracy, build_optimizer, warmup_cosine


def finetune_stage(model: nn.Module, recipe: Recipe, console: Console | None) -> Path:
    """Train the active subnet as a plain model: the training schedule at half its LR by default."""
    with run_dir_lock(recipe.run_dir):
        return _finetune(model, recipe, console)


def _finetune(model: nn.Module, recipe: Recipe, console: Console | None) -> Path:
    spec = recipe.finetune
    epochs = spec.epochs or recipe.train.epochs
    train_spec = recipe.train.model_copy(update={"lr": spec.lr or recipe.train.lr * 0.5, "epochs": epochs})
    splits = recipe_splits(recipe)
    device = training_device(recipe.train.device)
    precision = torch.bfloat16 if recipe.train.bf16 else None
    student = export_model(model).train().to(device)
    teacher = None
    if spec.distill:
        teacher = copy.deepcopy(model).to(device)
        get_space(teacher).sample("max")
        teacher.eval()
    seed = recipe.train.seed if recipe.train.seed is not None else recipe.seed
    torch.manual_seed(seed)
    batch = recipe.data.batch_size
    steps = len(splits.train) // batch
    optimizer = build_optimizer(student, train_spec)
    warmup = int(round(train_spec.warmup_epochs * steps))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(epochs * steps, warmup))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=train_spec.label_smoothing)
    val = DataLoader(splits.val, batch_size=recipe.data.eval_batch_size)
    run_dir = Path(recipe.run_dir)
    for epoch in range(epochs):
        start = time.perf_counter()
        order = torch.randperm(len(splits.train), generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        student.train()
        total = 0.0
        for inputs, targets in DataLoader(splits.train, batch_size=batch, sampler=order.tolist(), drop_last=True):
            optimizer.zero_grad(set_to_none=True)
            inputs, targets = inputs.to(device), targets.to(device)
            with autocast(device, precision):
                logits = student(inputs)
                if teacher is not None:
                    with torch.no_grad():
                        soft = teacher(inputs)
                    loss = distillation_loss(logits, soft, spec.temperature)
                else:
                    loss = loss_fn(logits, targets)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item()
        record = {"stage": "finetune", "epoch": epoch + 1, "loss": total / max(1, steps),
                  "acc": accuracy(student, val), "seconds": round(time.perf_counter() - start, 3)}  # fmt: skip
        append_metrics(run_dir, record)
        if console is not None:
            console.print(f"finetune epoch {epoch + 1}: loss {record['loss']:.4f}  val acc {record['acc']:.4f}")
    test_acc = accuracy(student, DataLoader(splits.test, batch_size=recipe.data.eval_batch_size))
    metrics = {"val_acc": accuracy(student, val), "test_acc": test_acc}
    append_metrics(run_dir, {"stage": "finetune", **metrics})
    checkpoint = exported_checkpoint(
        model, student, stage="finetune", recipe=recipe.model_dump(mode="json"),
        factory=recipe.model.model_dump(mode="json"), metrics=metrics,
    )  # fmt: skip
    return write_checkpoint(checkpoint, run_dir / "finetune.pt")
