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
from nascli.opt.checkpoint import build_checkpoint, exported_checkpoint, remember_conversion, write_checkpoint
from nascli.recipe.schema import Recipe
from nascli.space.export import export_in_place, export_max, export_model, export_views
from nascli.stages.rundir import append_metrics, run_dir_lock
from nascli.train.activation_checkpointing import checkpoint_activations
from nascli.train.device import HALF_DTYPES, training_device, weights_dtype
from nascli.train.lora import add_adapters, merge_adapters
from nascli.train.trainer import SubnetTrainer


def finetune_stage(model: nn.Module, recipe: Recipe, console: Console | None) -> Path:
    """Train the active subnet as a plain model: the training schedule at half its LR by default.

    A bfloat16 or float16 model trains with float32 master weights (and so float32 optimizer
    states) and its forward in bfloat16 autocast, PyTorch's standard mixed precision; the
    fine-tuned weights are stored back in the model's dtype. With ``finetune.lora`` the subnet's
    weights stay frozen in their dtype as views of ``model``'s and only float32 low-rank adapters
    train; merged, they turn ``model`` itself into the fine-tuned subnet (nascli/train/lora.py).
    """
    with run_dir_lock(recipe.run_dir):
        return _finetune(model, recipe, console)


def _finetune(model: nn.Module, recipe: Recipe, console: Console | None) -> Path:
    spec = recipe.finetune
    epochs = spec.epochs or recipe.train.epochs
    train_spec = recipe.train.model_copy(update={"lr": spec.lr or recipe.train.lr * 0.5, "epochs": epochs})
    splits = recipe_splits(recipe)
    dtype = weights_dtype(model)
    if spec.lora is not None:  # frozen views of the converted model's tensors: no copy of the weights
        model.to(training_device(train_spec.device))  # so the views, and the merge into them, are on that device
        student = export_views(model).train()
        try:
            add_adapters(student, spec.lora)
        except ValueError as exc:
            raise UserInputError(str(exc)) from exc
    else:
        student = export_model(model).train()
        if dtype in HALF_DTYPES:
            student.float()  # float32 master weights
    if spec.activation_checkpointing:
        checkpoint_activations(student)
    if dtype in HALF_DTYPES:  # mixed precision: bfloat16 compute (autocast) over float32 trained weights
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
    task, val = trainer.task, trainer.val

    def log(record: dict[str, Any]) -> None:
        append_metrics(run_dir, {"stage": "finetune", **record})
        if console is not None:
            console.print(
                f"finetune epoch {record['epoch']}: loss {record['loss']:.4f}  val {task.metric} "
                f"{record[task.metric]:.4f}  {record[f'{task.unit}_per_s']:.0f} {task.unit}/s"
            )

    trainer.fit(lambda state: None, log)
    if spec.lora is not None:
        merge_adapters(student)  # into the views: the converted model's active subnet is now the fine-tuned one
        del trainer, student, teacher  # the views hold the full tensors, which the export below frees layer by layer
        remember_conversion(model, model)  # ``model`` turns into the student: it keeps the record of its conversion
        student = export_in_place(model)
    student.to(dtype)  # stored, evaluated and exported in the checkpoint's own dtype
    eval_batch = recipe.data.eval_batch_size
    metrics = {
        f"val_{task.metric}": task.evaluate(student, val)[task.metric],
        f"test_{task.metric}": task.evaluate(student, DataLoader(splits.test, eval_batch))[task.metric],
    }
    append_metrics(run_dir, {"stage": "finetune", **metrics})
    fields = {"stage": "finetune", "recipe": recipe.model_dump(mode="json"),
              "factory": recipe.model.model_dump(mode="json"), "metrics": metrics}  # fmt: skip
    if spec.lora is not None:  # ``model`` is the exported student, remembering its conversion
        checkpoint = build_checkpoint(student, **fields)
    else:
        checkpoint = exported_checkpoint(model, student, **fields)
    return write_checkpoint(checkpoint, run_dir / "finetune.pt")
