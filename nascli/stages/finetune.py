"""The finetune stage: the searched subnet exported and trained alone; finetune.pt out."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch import nn
from torch.utils.data import DataLoader

from nascli.data import recipe_splits
from nascli.errors import UserInputError
from nascli.opt.checkpoint import (
    build_checkpoint,
    exported_checkpoint,
    read_checkpoint,
    remember_conversion,
    write_checkpoint,
)
from nascli.recipe.schema import Recipe
from nascli.space.export import export_in_place, export_max, export_model, export_views
from nascli.stages.load import identity_differences
from nascli.stages.rundir import append_metrics, run_dir_lock
from nascli.train.activation_checkpointing import checkpoint_activations
from nascli.train.device import HALF_DTYPES, training_device, weights_dtype
from nascli.train.distributed import Ranks
from nascli.train.fsdp import full_model_state
from nascli.train.lora import add_adapters, load_merged, merge_adapters, merged_copies
from nascli.train.trainer import SubnetTrainer


def finetune_stage(
    model: nn.Module,
    recipe: Recipe,
    console: Console | None,
    ranks: Ranks = Ranks(),
    unfinished: dict[str, Any] | None = None,
) -> Path:
    """Train the active subnet as a plain model: the training schedule at half its LR by default.

    A bfloat16 or float16 model trains with float32 master weights (and so float32 optimizer
    states) and its forward in bfloat16 autocast, PyTorch's standard mixed precision; the
    fine-tuned weights are stored back in the model's dtype. With ``finetune.lora`` the subnet's
    weights stay frozen in their dtype as views of ``model``'s and only float32 low-rank adapters
    train; merged, they turn ``model`` itself into the fine-tuned subnet (nascli/train/lora.py).

    Under torchrun (``ranks.world > 1``) student and teacher are sharded with FSDP2 across the
    processes (nascli/train/fsdp.py); rank 0 alone takes the run directory's lock and writes,
    the whole weights gathered onto its CPU. Until the last epoch ends ``finetune.pt`` holds the
    student's float32 weights and the trainer's state, which ``unfinished`` (``resumable``)
    continues from, in one process or several.
    """
    if ranks.world > 1 and recipe.finetune.lora is not None:
        raise UserInputError(SHARDED_LORA)
    with run_dir_lock(recipe.run_dir) if ranks.main else nullcontext():
        return _finetune(model, recipe, console, ranks, unfinished)


#: adapters are views of the converted model's tensors, merged back into them; FSDP's shards are copies
SHARDED_LORA = (
    "finetune.lora: adapters fine-tune in one process only; under torchrun (FSDP) drop finetune.lora to fine-tune"
    " every weight, or run one process"
)


def resumable(recipe: Recipe, searched: dict[str, Any]) -> dict[str, Any] | None:
    """The run directory's unfinished ``finetune.pt`` to continue; None when it finished.

    Refused: no ``finetune.pt`` there, and one fine-tuning another model or subnet than the
    ``search.pt`` given (a stale file another run left in the directory).
    """
    path = Path(recipe.run_dir) / "finetune.pt"
    if not path.is_file():
        raise UserInputError(f"--resume: no finetune.pt in {recipe.run_dir} to resume from")
    checkpoint = read_checkpoint(path)
    if checkpoint.get("trainer") is None:
        return None
    differ = identity_differences(searched, checkpoint)
    if checkpoint.get("subnet") != searched.get("subnet"):
        differ.append("subnet")
    if differ:
        raise UserInputError(
            f"--resume: {path} fine-tunes another model than the input ({', '.join(differ)} differ);"
            f" remove it or give another run_dir"
        )
    return checkpoint


def _own_tensors(student: nn.Module, converted: nn.Module) -> None:
    """Copy the tensors the student still shares with the converted model: the layers it keeps whole.

    ``export_model`` copies the slices of the layers a subnet shrinks but may leave a layer it
    keeps whole (embeddings, norms) on the converted model's tensor, which the teacher
    (``export_max``) shares as well: training the student would then move the frozen teacher
    too, and in one process only, since sharded models own their shards.
    """
    shared = {t.untyped_storage().data_ptr() for t in [*converted.parameters(), *converted.buffers()] if t.numel()}
    copies: dict[int, torch.Tensor] = {}  # by the shared object's id: weights tied in the student stay tied

    def own(tensor: torch.Tensor) -> torch.Tensor:
        if id(tensor) not in copies:
            copy = tensor.detach().clone()
            copies[id(tensor)] = nn.Parameter(copy, tensor.requires_grad) if isinstance(tensor, nn.Parameter) else copy
        return copies[id(tensor)]

    for module in student.modules():
        for tensors in (module._parameters, module._buffers):
            for name, tensor in tensors.items():
                if tensor is not None and tensor.numel() and tensor.untyped_storage().data_ptr() in shared:
                    tensors[name] = own(tensor)  # a new object: the exported layer may hold the converted one's


def _finetune(
    model: nn.Module, recipe: Recipe, console: Console | None, ranks: Ranks, unfinished: dict[str, Any] | None
) -> Path:
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
        _own_tensors(student, model)
    if unfinished is not None:
        student.load_state_dict(unfinished["state_dict"])
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
            ranks=ranks,
        )  # fmt: skip
    except ValueError as exc:
        raise UserInputError(str(exc)) from exc
    if unfinished is not None:
        trainer.load_state_dict(unfinished["trainer"])
    run_dir = Path(recipe.run_dir)
    path = run_dir / "finetune.pt"
    task, val = trainer.task, trainer.val
    fields = {"stage": "finetune", "recipe": recipe.model_dump(mode="json"),
              "factory": recipe.model.model_dump(mode="json")}  # fmt: skip

    def save(state: dict[str, Any] | None) -> None:
        """An unfinished finetune.pt: the student's training weights and the trainer's state (None: finished).

        Not with adapters: their student is views of the whole model's tensors, which a checkpoint
        would write whole each time; a LoRA run is short and restarts instead.
        """
        if state is None or spec.lora is not None:
            return
        weights = full_model_state(student) if trainer.sharded else student.state_dict()
        if ranks.main:
            write_checkpoint({**build_checkpoint(model, **fields, trainer=state), "state_dict": weights,
                              "exported": True}, path)  # fmt: skip

    def log(record: dict[str, Any]) -> None:
        if not ranks.main:
            return
        append_metrics(run_dir, {"stage": "finetune", **record})
        if console is not None:
            console.print(
                f"finetune epoch {record['epoch']}: loss {record['loss']:.4f}  val {task.metric} "
                f"{record[task.metric]:.4f}  {record[f'{task.unit}_per_s']:.0f} {task.unit}/s"
            )

    trainer.fit(save, log)
    if trainer.sharded:  # the whole weights onto rank 0's CPU, into a plain copy of the subnet there
        weights = full_model_state(student)
        del trainer, student, teacher
        if not ranks.main:
            return path
        student = export_model(model)
        student.load_state_dict(weights)
        student.to(training_device(train_spec.device))
    if spec.lora is not None:
        merge_adapters(student)  # into the views: the converted model's active subnet is now the fine-tuned one
        copies = merged_copies(student, model)  # and the layers whose subnet is a copy, not a view
        del trainer, student, teacher  # the views hold the full tensors, which the export below frees layer by layer
        remember_conversion(model, model)  # ``model`` turns into the student: it keeps the record of its conversion
        student = export_in_place(model)
        load_merged(student, copies)
    student.to(dtype)  # stored, evaluated and exported in the checkpoint's own dtype
    eval_batch = recipe.data.eval_batch_size
    metrics = {
        f"val_{task.metric}": task.evaluate(student, val)[task.metric],
        f"test_{task.metric}": task.evaluate(student, DataLoader(splits.test, eval_batch))[task.metric],
    }
    append_metrics(run_dir, {"stage": "finetune", **metrics})
    if spec.lora is not None:  # ``model`` is the exported student, remembering its conversion
        checkpoint = build_checkpoint(student, **fields, metrics=metrics)
    else:
        checkpoint = exported_checkpoint(model, student, **fields, metrics=metrics)
    return write_checkpoint(checkpoint, path)
