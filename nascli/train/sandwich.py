"""One training step of the sandwich rule (BigNAS / AttentiveNAS), usable in any training loop."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from nascli.space.space import get_space, random_sampling
from nascli.train.device import autocast as autocast_to
from nascli.train.task import logits_of

#: logits per chunk of the distillation loss (rows x classes): above it the loss is computed chunk by
#: chunk, each recomputed in backward, so its float32 temporaries (softmaxes, the pointwise KL) take the
#: memory of one chunk. A language model's logits are tokens x vocabulary: 8 x 2048 tokens of a
#: 128,256-token vocabulary would otherwise need 8.4 GB per temporary.
KL_CHUNK_ELEMENTS = 1 << 22


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """KL divergence from the teacher's softened distribution, scaled by T^2 (Hinton et al.).

    Logits of shape (..., classes): the mean is over every leading position, so a language
    model's loss is per token, as its cross entropy is. Large logits are reduced in chunks of
    rows (``KL_CHUNK_ELEMENTS``) with activation checkpointing: the same loss and gradient
    without the float32 temporaries of the whole.
    """
    classes = student.shape[-1]
    student, teacher = student.reshape(-1, classes), teacher.reshape(-1, classes)
    rows = student.shape[0]
    step = max(1, KL_CHUNK_ELEMENTS // classes)
    if rows <= step:
        total = _kl_sum(student, teacher, temperature)
    else:
        total = sum(
            checkpoint(_kl_sum, student[i : i + step], teacher[i : i + step], temperature, use_reentrant=False)
            for i in range(0, rows, step)
        )
    return total / rows * temperature * temperature


def _kl_sum(student: torch.Tensor, teacher: torch.Tensor, t: float) -> torch.Tensor:
    """Summed KL(teacher || student) of rows of logits at temperature ``t``, in float32."""
    log_student, log_teacher = F.log_softmax(student.float() / t, -1), F.log_softmax(teacher.float() / t, -1)
    return F.kl_div(log_student, log_teacher, reduction="sum", log_target=True)


def sandwich_step(
    model: nn.Module,
    batch: tuple[torch.Tensor, torch.Tensor],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    num_random: int = 2,
    distill: bool = True,
    temperature: float = 1.0,
    grad_clip: float | None = None,
    rng: random.Random | None = None,
    reduce_gradients: Callable[[nn.Module], None] | None = None,
    autocast: torch.dtype | None = None,
    split_students: bool = False,
) -> dict[str, float]:
    """Train the largest, the smallest and ``num_random`` random subnets on one batch, one optimizer step.

    Gradients of all subnets are summed. The largest subnet learns from the labels; with
    ``distill`` the others learn from its detached soft outputs (in-place distillation), so they
    need no separate teacher. ``rng`` draws the random subnets (processes sharing a seed train
    the same subnets); ``reduce_gradients`` averages gradients across processes before the step;
    ``autocast`` (e.g. ``torch.bfloat16``) runs the forward passes in that precision on the
    batch's device. ``split_students``: the smaller subnets share the batch, each training on its
    own slice of rows against the largest one's outputs on them, so together they cost about one
    of them on the whole batch while the largest still learns from every row. The largest subnet
    is left active afterwards.
    """
    inputs, targets = batch
    space = get_space(model)
    rng = rng or random.Random()
    losses: dict[str, float] = {}
    with random_sampling(model, enabled=False):
        optimizer.zero_grad(set_to_none=True)
        space.sample("max")
        with autocast_to(inputs.device, autocast):
            logits = logits_of(model(inputs))
            loss = loss_fn(logits, targets)
        loss.backward()
        losses["loss_max"] = loss.item()
        teacher = logits.detach()
        if split_students and teacher.shape[0] != len(inputs):
            raise ValueError(
                f"split_students needs the model's outputs batch-first: {len(inputs)} inputs gave {teacher.shape[0]}"
                " rows of logits"
            )
        students = ["min"] + [rng.choice] * num_random
        rows = student_rows(len(inputs), len(students)) if split_students else [slice(None)] * len(students)
        for index, (how, share) in enumerate(zip(students, rows, strict=True)):
            space.sample(how)
            with autocast_to(inputs.device, autocast):
                out = logits_of(model(inputs[share]))
                loss = distillation_loss(out, teacher[share], temperature) if distill else loss_fn(out, targets[share])
            loss.backward()
            losses["loss_min" if index == 0 else f"loss_random{index}"] = loss.item()
        _apply_gradients(model, optimizer, grad_clip, reduce_gradients)
    return losses


def student_rows(rows: int, students: int) -> list[slice]:
    """``students`` consecutive slices of ``rows`` rows, as equal as they come in even sizes.

    Even sizes: oneDNN's NHWC convolutions on several CPU threads abort on odd batches
    (``nascli/train/memory_format.py``), and the trainer's batches are even wherever it trains NHWC.
    A batch with fewer than two rows per student is shared out row by row, and a batch with fewer
    rows than students gives some of them the same row.
    """
    pairs = rows // 2
    if pairs >= students:
        bounds = [2 * (i * pairs // students) for i in range(students)] + [rows]
    else:
        bounds = [min(rows - 1, i * rows // students) for i in range(students)] + [rows]
    return [slice(start, max(end, start + 1)) for start, end in itertools.pairwise(bounds)]


def _apply_gradients(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    grad_clip: float | None,
    reduce_gradients: Callable[[nn.Module], None] | None,
) -> None:
    """Average across processes, clip, take the one optimizer step; leave the largest subnet active."""
    if reduce_gradients is not None:
        reduce_gradients(model)
    if grad_clip:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    get_space(model).sample("max")


def single_subnet_step(
    model: nn.Module,
    batch: tuple[torch.Tensor, torch.Tensor],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    grad_clip: float | None = None,
    rng: random.Random | None = None,
    reduce_gradients: Callable[[nn.Module], None] | None = None,
    autocast: torch.dtype | None = None,
    subnet: str | None = None,
) -> dict[str, Any]:
    """ModelOpt's AutoNAS step: one random subnet per step, trained on the labels (the baseline).

    ``subnet="max"`` trains only the largest subnet: the model as built, trained plainly.
    """
    inputs, targets = batch
    space = get_space(model)
    with random_sampling(model, enabled=False):
        optimizer.zero_grad(set_to_none=True)
        space.sample(subnet or (rng or random.Random()).choice)
        with autocast_to(inputs.device, autocast):
            loss = loss_fn(logits_of(model(inputs)), targets)
        loss.backward()
        _apply_gradients(model, optimizer, grad_clip, reduce_gradients)
    return {"loss_max": loss.item()}
