"""The training loop: warmup + cosine LR, gradient clipping, per-epoch evaluation, resume.

``Trainer`` is the loop; ``SupernetTrainer`` fills it with sandwich steps and evaluates the
largest and smallest subnets, ``SubnetTrainer`` (fine-tuning) with plain steps on one model.
"""

from __future__ import annotations

import math
import random
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn
from torch.utils.data import DataLoader

from nascli.data import Splits
from nascli.recipe.schema import DataSpec, TrainSpec
from nascli.space.space import get_space, random_sampling
from nascli.train.bn import recalibrate_bn
from nascli.train.device import autocast as autocast_to
from nascli.train.device import training_device
from nascli.train.distributed import Ranks, average_gradients, broadcast_model
from nascli.train.fsdp import full_optimizer_state, load_optimizer_state, mean_across_ranks, reshard, shard
from nascli.train.memory_format import channels_last_for
from nascli.train.sandwich import distillation_loss, sandwich_step, single_subnet_step
from nascli.train.task import Classification, accuracy, logits_of, task_of

__all__ = ["SubnetTrainer", "SupernetTrainer", "Trainer", "accuracy", "build_optimizer", "subnet_metrics"]


def build_optimizer(model: nn.Module, spec: TrainSpec) -> torch.optim.Optimizer:
    """The optimizer of the parameters that train (frozen ones, under adapters, hold no state)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if spec.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=spec.lr,
            momentum=spec.momentum,
            nesterov=spec.nesterov and spec.momentum > 0,
            weight_decay=spec.weight_decay,
        )
    return torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay)


def warmup_cosine(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """LR factor: linear warmup from 0, then cosine decay to 0 over the remaining steps."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def subnet_metrics(
    model: nn.Module, how: Any, calib: DataLoader, val: DataLoader, batches: int, task: Classification
) -> dict[str, float]:
    """Validation metrics of a subnet after BN recalibration on training batches."""
    with random_sampling(model, enabled=False):
        get_space(model).sample(how)
        recalibrate_bn(model, calib, batches)
        return task.evaluate(model, val)


class Trainer:
    """One training loop for every stage; resumable bit for bit from its state.

    Subclasses say what one step on a batch is (``_step``, returning its loss) and what is
    measured after each epoch (``evaluate``); the schedule, clipping, data order, checkpoints
    and logging are the same for all.
    """

    def __init__(
        self,
        model: nn.Module,
        splits: Splits,
        data: DataSpec,
        spec: TrainSpec,
        seed: int,
        ranks: Ranks = Ranks(),
        console: Console | None = None,
        show_progress: bool = False,
    ) -> None:
        self.model, self.splits, self.data, self.spec, self.ranks = model, splits, data, spec, ranks
        self.console = console or Console(stderr=True)
        self.show_progress = show_progress
        self.seed = seed
        self.device = training_device(spec.device)
        self.autocast = torch.bfloat16 if spec.bf16 else None
        self.channels_last = False
        self.batch = max(1, data.batch_size // ranks.world)
        self._place(model)
        self.steps_per_epoch = len(splits.train) // (self.batch * ranks.world)
        if self.steps_per_epoch == 0:
            raise ValueError(f"data.batch_size={data.batch_size} exceeds the {len(splits.train)} training samples")
        total = spec.epochs * self.steps_per_epoch
        self.optimizer = build_optimizer(model, spec)
        warmup = min(total, int(round(spec.warmup_epochs * self.steps_per_epoch)))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, warmup_cosine(total, warmup))
        self.task = task_of(splits, spec.label_smoothing)
        self.task.check_model(model)
        self.sampler = random.Random(seed)
        self.epoch = self.step_in_epoch = self.global_step = 0
        # the current epoch's summed step losses, kept in the state so a resumed epoch logs the same mean
        self.epoch_loss_sum, self.epoch_loss_steps = 0.0, 0
        torch.manual_seed(seed)
        if not self.sharded:  # a sharded model agreed before it was sharded (``SubnetTrainer._place``)
            broadcast_model(model, ranks)
        self.val = DataLoader(splits.val, batch_size=data.eval_batch_size, shuffle=False)

    #: whether ``model`` is sharded across the processes (FSDP2), which then reduce its gradients themselves
    sharded = False

    def _place(self, model: nn.Module) -> None:
        """Put the model on the training device, in the memory format it trains fastest in."""
        model.to(self.device)
        # weights and image batches NHWC, which oneDNN and cuDNN convolve fastest
        self.channels_last = channels_last_for(model, self.spec.channels_last, self.splits.train, self.batch)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)

    # -- state ---------------------------------------------------------------------------------
    def _optimizer_state(self) -> dict[str, Any]:
        return self.optimizer.state_dict()

    def _load_optimizer_state(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state)

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "epoch_loss_sum": self.epoch_loss_sum,
            "epoch_loss_steps": self.epoch_loss_steps,
            "optimizer": self._optimizer_state(),
            "scheduler": self.scheduler.state_dict(),
            "rng_torch": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
            "rng_sampler": self.sampler.getstate(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.step_in_epoch = state["epoch"], state["step_in_epoch"]
        self.global_step = state["global_step"]
        # a state written before these were kept averages only the steps after the resume
        self.epoch_loss_sum = state.get("epoch_loss_sum", 0.0)
        self.epoch_loss_steps = state.get("epoch_loss_steps", 0)
        self._load_optimizer_state(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng_torch"])
        if state.get("rng_cuda") is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng_cuda"], self.device)
        self.sampler.setstate(_as_tuples(state["rng_sampler"]))

    # -- loop ----------------------------------------------------------------------------------
    def _epoch_batches(self) -> DataLoader:
        """This rank's batches of the current epoch, from the current step on (a fixed order per epoch)."""
        order = torch.randperm(
            len(self.splits.train), generator=torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        )
        per_step = self.batch * self.ranks.world
        usable = order[: self.steps_per_epoch * per_step].view(self.steps_per_epoch, self.ranks.world, self.batch)
        mine = usable[self.step_in_epoch :, self.ranks.rank].reshape(-1).tolist()
        return DataLoader(self.splits.train, batch_size=self.batch, sampler=mine, drop_last=True)

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> float:
        """Train on one batch (already on the device) with one optimizer step; return the loss to log."""
        raise NotImplementedError

    def evaluate(self) -> dict[str, float]:
        """The metrics logged after each epoch."""
        raise NotImplementedError

    def _placed(self, tensor: torch.Tensor) -> torch.Tensor:
        """A batch tensor on the training device; an image batch NHWC where the model trains so."""
        tensor = tensor.to(self.device, non_blocking=True)
        if self.channels_last and tensor.dim() == 4:
            return tensor.contiguous(memory_format=torch.channels_last)
        return tensor

    def _reduce(self) -> Callable[[nn.Module], None] | None:
        """Gradient averaging across processes (None in one process)."""
        return (lambda m: average_gradients(m, self.ranks.world)) if self.ranks.world > 1 else None

    def fit(self, on_checkpoint: Callable[[dict[str, Any] | None], None], on_epoch: Callable[[dict], None]) -> None:
        """Train to the last epoch. ``on_checkpoint(state)`` is called every ``checkpoint_every``
        steps and at each epoch end; ``on_epoch(record)`` gets each epoch's metrics."""
        self.model.train()
        while self.epoch < self.spec.epochs:
            start, seen = time.perf_counter(), 0
            with self._progress() as progress:
                task = progress.add_task(f"epoch {self.epoch + 1}/{self.spec.epochs}", total=self.steps_per_epoch,
                                         completed=self.step_in_epoch, loss=float("nan"), lr=0.0, ips=0.0)  # fmt: skip
                for batch in self._epoch_batches():
                    loss = self._step(tuple(self._placed(t) for t in batch))
                    self.epoch_loss_sum += loss
                    self.epoch_loss_steps += 1
                    self.scheduler.step()
                    self.step_in_epoch += 1
                    self.global_step += 1
                    seen += self.task.count(batch[1]) * self.ranks.world
                    lr = self.optimizer.param_groups[0]["lr"]
                    ips = seen / (time.perf_counter() - start)
                    progress.update(task, advance=1, loss=loss, lr=lr, ips=ips)
                    every = self.spec.checkpoint_every
                    if every and self.global_step % every == 0 and self.step_in_epoch < self.steps_per_epoch:
                        on_checkpoint(self.state_dict())
            record = self._end_epoch(seen, time.perf_counter() - start)
            on_epoch(record)
            on_checkpoint(self.state_dict() if self.epoch < self.spec.epochs else None)

    def _end_epoch(self, seen: int, seconds: float) -> dict[str, Any]:
        metrics = self.evaluate()
        self.model.train()
        record = {
            "epoch": self.epoch + 1,
            "step": self.global_step,
            "loss": self.epoch_loss_sum / max(1, self.epoch_loss_steps),
            "lr": self.optimizer.param_groups[0]["lr"],
            **metrics,
            f"{self.task.unit}_per_s": seen / max(seconds, 1e-9),
            "seconds": round(seconds, 3),
        }
        self.epoch += 1
        self.step_in_epoch = 0
        self.epoch_loss_sum, self.epoch_loss_steps = 0.0, 0
        return record

    def _progress(self) -> Progress:
        return Progress(
            TextColumn("{task.description}"), BarColumn(), TextColumn("loss {task.fields[loss]:.3f}"),
            TextColumn("lr {task.fields[lr]:.4f}"), TextColumn(f"{{task.fields[ips]:.0f}} {self.task.unit}/s"),
            TimeRemainingColumn(),
            console=self.console, transient=True, disable=not (self.show_progress and self.ranks.main),
        )  # fmt: skip


class SupernetTrainer(Trainer):
    """Trains every subnet of a converted model: sandwich steps (or one random subnet per step)."""

    def __init__(self, model: nn.Module, splits: Splits, data: DataSpec, *args: Any, **kwargs: Any) -> None:
        super().__init__(model, splits, data, *args, **kwargs)
        self.calib = DataLoader(splits.train, batch_size=data.batch_size, shuffle=False, drop_last=True)
        students = 1 + self.spec.num_random
        if self.spec.sandwich and self.spec.split_students and self.batch < 2 * students:
            raise ValueError(
                f"train.split_students: {self.batch} rows per process give the {students} smaller subnets fewer"
                f" than 2 rows each; raise data.batch_size to at least {2 * students * self.ranks.world}"
            )

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> float:
        spec = self.spec
        if spec.plain:
            return single_subnet_step(
                self.model, batch, self.task.loss, self.optimizer, spec.grad_clip, None, self._reduce(), self.autocast,
                subnet="max",
            )["loss_max"]  # fmt: skip
        if spec.sandwich:
            return sandwich_step(
                self.model, batch, self.task.loss, self.optimizer, spec.num_random, spec.distill, spec.temperature,
                spec.grad_clip, self.sampler, self._reduce(), self.autocast, spec.split_students,
            )["loss_max"]  # fmt: skip
        return single_subnet_step(
            self.model, batch, self.task.loss, self.optimizer, spec.grad_clip, self.sampler, self._reduce(),
            self.autocast,
        )["loss_max"]  # fmt: skip

    def evaluate(self) -> dict[str, float]:
        """Validation metrics of the largest and (unless training plainly) smallest subnets, after BN recalibration."""
        batches, metric = self.spec.bn_calib_batches, self.task.metric
        found = {f"{metric}_max": subnet_metrics(self.model, "max", self.calib, self.val, batches, self.task)[metric]}
        if not self.spec.plain:
            found[f"{metric}_min"] = subnet_metrics(self.model, "min", self.calib, self.val, batches, self.task)[metric]
        get_space(self.model).sample("max")
        return found


class SubnetTrainer(Trainer):
    """Trains one plain model (fine-tuning a chosen subnet), from the labels or from a teacher.

    Under torchrun with more than one process the student and the teacher are sharded with FSDP2
    (``nascli.train.fsdp``): each process computes its share of the global batch, FSDP averages
    the student's gradients, and the logged loss is the mean over the processes, the global
    batch's as one process logs it. The optimizer state is kept by parameter name in both cases,
    so a run written by either resumes under the other.
    """

    def __init__(
        self,
        *args: Any,
        teacher: nn.Module | None = None,
        temperature: float = 1.0,
        distill_weight: float = 1.0,
        teacher_autocast: torch.dtype | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if self.sharded:  # the model check's forward left the root's weights gathered
            reshard(self.model)
        self.temperature, self.distill_weight = temperature, distill_weight
        self.teacher_autocast = teacher_autocast or self.autocast
        if teacher is not None and self.sharded:  # loaded alike on every rank: sharded as it is, never gathered whole
            teacher = shard(_frozen_own_parameters(teacher), self.device, self._gathered_dtype(self.teacher_autocast))
        elif teacher is not None:
            teacher = teacher.to(self.device)
        self.teacher = teacher.eval() if teacher is not None else None

    @property
    def sharded(self) -> bool:  # type: ignore[override]
        return self.ranks.world > 1

    def _gathered_dtype(self, autocast: torch.dtype | None) -> torch.dtype | None:
        """The dtype FSDP gathers weights in: bfloat16 on GPUs when the forward runs in bfloat16 autocast.

        Autocast still decides each operation's precision, as in one process; gathering in
        bfloat16 halves the all-gathers' traffic and the gathered unit's memory. On the CPU
        (gloo) weights are gathered as they are stored.
        """
        return autocast if autocast == torch.bfloat16 and self.device.type == "cuda" else None

    def _place(self, model: nn.Module) -> None:
        """Shard the student under more than one process, before its optimizer exists (it holds the shards)."""
        if not self.sharded:
            super()._place(model)
            return
        broadcast_model(model, self.ranks)  # the same weights everywhere, while still whole
        shard(model, self.device, self._gathered_dtype(self.autocast))

    def _reduce(self) -> Callable[[nn.Module], None] | None:
        """None when sharded: FSDP's reduce-scatter has averaged the gradients in backward."""
        return None if self.sharded else super()._reduce()

    def _optimizer_state(self) -> dict[str, Any]:
        return full_optimizer_state(self.model, self.optimizer)

    def _load_optimizer_state(self, state: dict[str, Any]) -> None:
        load_optimizer_state(self.model, self.optimizer, state)

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> float:
        """Labels' loss, or with a teacher ``w * KL(teacher || student) + (1 - w) * labels' loss``.

        The teacher is frozen, so its forward may run in a lower precision than the student's
        (``teacher_autocast``): it is the larger part of a distillation step's extra cost.
        """
        inputs, targets = batch
        self.optimizer.zero_grad(set_to_none=True)
        with autocast_to(inputs.device, self.autocast):
            logits = logits_of(self.model(inputs))
            weight = self.distill_weight if self.teacher is not None else 0.0
            loss = self.task.loss(logits, targets) * (1 - weight) if weight < 1 else 0.0
            if weight > 0:
                with torch.no_grad(), autocast_to(inputs.device, self.teacher_autocast):
                    soft = logits_of(self.teacher(inputs))
                loss = loss + weight * distillation_loss(logits, soft, self.temperature)
        loss.backward()
        if reduce := self._reduce():
            reduce(self.model)
        if self.spec.grad_clip:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.spec.grad_clip)
        self.optimizer.step()
        return mean_across_ranks(loss) if self.sharded else loss.item()

    def evaluate(self) -> dict[str, float]:
        metrics = self.task.evaluate(self.model, self.val)
        if self.sharded:
            reshard(self.model)
        return metrics


def _frozen_own_parameters(model: nn.Module) -> nn.Module:
    """``model`` with Parameter and buffer objects of its own (the same storage, tied ones still tied), frozen.

    The teacher shares its tensors with the converted model; FSDP moves the Parameter objects
    it shards to the GPU (``param.data = ...``), which would move the converted model's too.
    """
    own: dict[int, nn.Parameter] = {}
    for module in model.modules():
        for name, param in list(module._parameters.items()):
            if param is not None:
                if id(param) not in own:
                    own[id(param)] = nn.Parameter(param.detach(), requires_grad=False)
                module._parameters[name] = own[id(param)]
        for name, buffer in list(module._buffers.items()):
            if buffer is not None:  # FSDP moves buffers the same way (``buffer.data = ...``)
                module._buffers[name] = buffer.detach()
    return model


def _as_tuples(state: Any) -> Any:
    """random.Random.setstate needs tuples where a round trip through storage may give lists."""
    return tuple(_as_tuples(s) for s in state) if isinstance(state, (list, tuple)) else state


def stderr_is_terminal() -> bool:
    return sys.stderr.isatty()
