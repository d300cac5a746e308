"""One training step of the sandwich rule (BigNAS / AttentiveNAS), usable in any training loop."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nascli.space.space import get_space, random_sampling
from nascli.train.device import autocast as autocast_to
from nascli.train.task import logits_of


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """KL divergence from the teacher's softened distribution, scaled by T^2 (Hinton et al.).

    Logits of shape (..., classes): the mean is over every leading position, so a language
    model's loss is per token, as its cross entropy is.
    """
    t = temperature
    student, teacher = student.reshape(-1, student.shape[-1]).float(), teacher.reshape(-1, teacher.shape[-1]).float()
    log_student, log_teacher = F.log_softmax(student / t, -1), F.log_softmax(teacher / t, -1)
    return F.kl_div(log_student, log_teacher, reduction="batchmean", log_target=True) * t * t


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
) -> dict[str, float]:
    """Train the largest, the smallest and ``num_random`` random subnets on one batch, one optimizer step.

    Gradients of all subnets are summed. The largest subnet learns from the labels; with
    ``distill`` the others learn from its detached soft outputs (in-place distillation), so they
    need no separate teacher. ``rng`` draws the random subnets (processes sharing a seed train
    the same subnets); ``reduce_gradients`` averages gradients across processes before the step;
    ``autocast`` (e.g. ``torch.bfloat16``) runs the forward passes in that precision on the
    batch's device. The largest subnet is left active afterwards.
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
        for index, how in enumerate(["min"] + [rng.choice] * num_random):
            space.sample(how)
            with autocast_to(inputs.device, autocast):
                out = logits_of(model(inputs))
                loss = distillation_loss(out, teacher, temperature) if distill else loss_fn(out, targets)
            loss.backward()
            losses["loss_min" if index == 0 else f"loss_random{index}"] = loss.item()
        _apply_gradients(model, optimizer, grad_clip, reduce_gradients)
    return losses


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
