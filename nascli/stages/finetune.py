"""The finetune stage: the searched subnet exported and trained alone; finetune.pt out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch import nn
from torch.utils.data import DataLoader

from nascli.data import recipe_splits
from nascli.errors import UserInputError
from nascli.opt.checkpoint import exported_checkpoint, write_checkpoint
from nascli.recipe.schema import Recipe
from nascli.space.export import export_max, export_model
from nascli.stages.rundir import append_metrics, run_dir_lock
from nascli.train.device import HALF_DTYPES, weights_dtype
from nascli.train.trainer import SubnetTrainer


def finetune_stage(model: nn.Module, recipe: Recipe, console: Console | None) -> Path:
    """Train the active subnet as a plain model: the training schedule at half its LR by default.

    A bfloat16 or float16 model trains with float32 master weights (and so float32 optimizer
    states) and its forward in bfloat16 autocast, PyTorch's standard mixed precision; the
    fine-tuned weights are stored back in the model's dtype.
    """
    with run_dir_lock(recipe.run_dir):
        return _finetune(model, recipe, console)


def _finetune(model: nn.Module, recipe: Recipe, console: Console | None) -> Path:
    spec = recipe.finetune
    epochs = spec.epochs or recipe.train.epochs
    train_spec = recipe.train.model_copy(update={"lr": spec.lr or recipe.train.lr * 0.5, "epochs": epochs})
    splits = recipe_splits(recipe)
    student = export_model(model).train()
    dtype = weights_dtype(student)
    if dtype in HALF_DTYPES:  # mixed precision: float32 master weights, bfloat16 compute (autocast)
        student.float()
        train_spec = train_spec.model_copy(update={"bf16": True})
    teacher = None
    if spec.distill and spec.distill_weight > 0:  # the max subnet as plain layers sharing its tensors: no copy
        teacher = export_max(model).eval()
    seed = recipe.train.seed if recipe.train.seed is not None else recipe.seed
    try:
        trainer = SubnetTrainer(
            student, splits, recipe.data, train_spec, seed, teacher=teacher, temperature=spec.temperature,
            distill_weight=spec.distill_weight, teacher_autocast=torch.bfloat16 if spec.teacher_bf16 else None,
        )  # fmt: skip
    except ValueError as exc:
        raise UserInputError(str(exc)) from exc
    run_dir = Path(recipe.run_dir)

    metric = trainer.task.metric

    def log(record: dict[str, Any]) -> None:
        append_metrics(run_dir, {"stage": "finetune", **record})
        if console is not None:
            console.print(
                f"finetune epoch {record['epoch']}: loss {record['loss']:.4f}  val {metric} {record[metric]:.4f}  "
                f"{record[f'{trainer.task.unit}_per_s']:.0f} {trainer.task.unit}/s"
            )

    trainer.fit(lambda state: None, log)
    student.to(dtype)  # stored, evaluated and exported in the checkpoint's own dtype
    eval_batch = recipe.data.eval_batch_size
    metrics = {
        f"val_{metric}": trainer.task.evaluate(student, trainer.val)[metric],
        f"test_{metric}": trainer.task.evaluate(student, DataLoader(splits.test, eval_batch))[metric],
    }
    append_metrics(run_dir, {"stage": "finetune", **metrics})
    checkpoint = exported_checkpoint(
        model, student, stage="finetune", recipe=recipe.model_dump(mode="json"),
        factory=recipe.model.model_dump(mode="json"), metrics=metrics,
    )  # fmt: skip
    return write_checkpoint(checkpoint, run_dir / "finetune.pt")
