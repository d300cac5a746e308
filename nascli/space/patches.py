"""What a converted model does on its own in train and eval mode, as ModelOpt's patched models do.

A model converted with ModelOpt runs a random subnet per forward in train mode, keeps detached
copies of some training batches, and on ``eval()`` switches to the max subnet after such
training and re-estimates its batch-norm statistics from those batches: the statistics that
training left were gathered over many subnets and fit none of them. Code written for ModelOpt
relies on this (``model.train(); loop(); model.eval(); evaluate(model)``), so converted models
here do the same, and one global switch turns it all off, as in ModelOpt.

The bookkeeping is the search space's ``patch_data`` dict, with ModelOpt's keys:

- ``queue``: the cached batches, each ``(*args, kwargs)`` on the CPU (at most ``QUEUE_MAXLEN``;
  once full, every 100th forward still replaces the oldest);
- ``fill``: cache eval-mode forwards too (set while a user's calibration loop runs);
- ``count``: forwards that could be cached, which spaces out the updates of a full queue;
- ``train_count_since_sample``: train-mode forwards since the subnet was last chosen; below
  ``CALIB_ITERS`` the statistics are not trusted and ``eval()`` re-estimates them;
- ``autosampled``: the active subnet was drawn by a train-mode forward, not chosen by the user.

Only a model whose subnet is left to random sampling (``sample_in_train``) caches batches: the
loops that pin a subnet (nascli's trainer, search and BN recalibration) manage their subnets
and statistics themselves and pay nothing for this.
"""

from __future__ import annotations

import functools
import random
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

#: cached batches for BN calibration, as ModelOpt keeps
QUEUE_MAXLEN = 50
#: train-mode forwards on one subnet after which its BN statistics are trusted without calibration
CALIB_ITERS = 100

_enabled = True


def patches_enabled() -> bool:
    """Whether converted models sample in train mode and calibrate BN on ``eval()`` (on by default)."""
    return _enabled


def set_patches_enabled(enabled: bool) -> None:
    """Switch the train- and eval-mode behaviour of every converted model on or off."""
    global _enabled
    _enabled = bool(enabled)


def default_patch_data() -> dict[str, Any]:
    """Fresh bookkeeping of a newly converted (or restored) model: statistics trusted, nothing cached."""
    return {
        "queue": deque(maxlen=QUEUE_MAXLEN),
        "fill": False,
        "count": 0,
        "train_count_since_sample": CALIB_ITERS,
        "autosampled": False,
    }


def reset_before_sample(patch_data: dict[str, Any]) -> None:
    """A subnet chosen by the user: its BN statistics are stale until calibrated or trained long enough."""
    patch_data["train_count_since_sample"] = 0
    patch_data["autosampled"] = False


def _map_tensors(value: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """``value`` with ``fn`` applied to every tensor in its tuples, lists and dicts."""
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, tuple | list):
        return type(value)(_map_tensors(v, fn) for v in value)
    if isinstance(value, dict):
        return {k: _map_tensors(v, fn) for k, v in value.items()}
    return value


def _detached_cpu(tensor: torch.Tensor) -> torch.Tensor:
    """A copy of a forward argument that holds no graph and no accelerator memory."""
    return tensor.detach().cpu()


def before_forward(model: nn.Module, space: Any, args: tuple, kwargs: dict[str, Any] | None) -> None:
    """Per forward of a converted model: draw a subnet in train mode and cache the batch.

    Does nothing while the switch is off. A model whose subnet is pinned only counts its
    train-mode forwards (they train that subnet's statistics).
    """
    if not _enabled:
        return
    data = space.patch_data
    if model.training:
        if space.sample_in_train:
            space.sample(random.choice)
            space.sample_in_train = True  # sample() pins the subnet it draws: drawing goes on
            data["autosampled"] = True
        data["train_count_since_sample"] += 1
        if not space.sample_in_train and not data["fill"]:
            return
    elif not data["fill"]:
        return
    queue = data["queue"]
    if queue.maxlen is None or len(queue) < queue.maxlen or data["count"] % 100 == 0 or data["fill"]:
        queue.append((*_map_tensors(tuple(args), _detached_cpu), _map_tensors(dict(kwargs or {}), _detached_cpu)))
    data["count"] += 1


def has_running_bn(model: nn.Module) -> bool:
    """Whether any batch norm of the model keeps running statistics (only those need calibration)."""
    return any(isinstance(m, _BatchNorm) and m.track_running_stats for m in model.modules())


def replay_queue(queue: deque) -> Callable[[nn.Module], None]:
    """A forward loop over cached batches, each moved to the model's device."""

    def loop(model: nn.Module) -> None:
        device = next((p.device for p in model.parameters()), None)
        for *args, kwargs in list(queue):
            model(*_map_tensors(args, lambda t: t.to(device)), **_map_tensors(kwargs, lambda t: t.to(device)))

    return loop


@contextmanager
def eval_guard(space: Any) -> Iterator[bool]:
    """Mark a calibration in progress; yields whether one already was (its own ``train(False)`` must not recurse)."""
    outer = getattr(space, "calibrating", False)
    space.calibrating = True
    try:
        yield outer
    finally:
        space.calibrating = outer


@torch.no_grad()
def reset_bn(model: nn.Module, forward_loop: Callable[[nn.Module], Any]) -> None:
    """Re-estimate every batch norm's running statistics as an equal-weight average over ``forward_loop``.

    The rest of the model runs in eval mode, so dropout and the like run as in evaluation and a
    converted model keeps its active subnet (train mode would draw one per forward); the model's
    mode and each norm's momentum are restored afterwards.
    """
    if not has_running_bn(model):
        return
    was_training = model.training
    model.eval()
    momentum = {}
    for name, module in model.named_modules():
        if isinstance(module, _BatchNorm):
            module.reset_running_stats()
            module.train()
            momentum[name] = module.momentum
            module.momentum = None
    try:
        forward_loop(model)
    finally:
        model.train(was_training)
        for name, module in model.named_modules():
            if name in momentum:
                module.momentum = momentum[name]


def calibrate_after_eval(
    model: nn.Module,
    space: Any,
    forward_loop: Callable[[nn.Module], Any] | None = None,
    root: nn.Module | None = None,
) -> None:
    """Prepare a converted model that just went to eval mode, as ModelOpt does.

    After random-subnet training the max subnet becomes active. Then, if the subnet's BN
    statistics are not trusted (chosen or drawn fewer than ``CALIB_ITERS`` train-mode forwards
    ago), they are re-estimated from the cached batches, or a warning says the cache is too
    short to do so. With nothing cached (no random-subnet training since conversion or restore)
    the statistics are left as the weights brought them, without a warning: ModelOpt warns
    here too, but a subnet selected on a freshly restored model is the common case, and
    ``prep_for_eval(model, forward_loop)`` is the way to calibrate it. A ``forward_loop`` given
    by the caller is used instead, and the batches it runs are cached for later calibrations.
    ``model`` is the converted module, whose inputs the cache holds; ``root`` is the model
    holding it that the caller's loop runs (default: ``model``), and all of whose batch norms
    are re-estimated.
    """
    root = model if root is None else root
    data = space.patch_data
    fill = data["fill"]
    if space.hparams:
        if data["autosampled"]:
            sampling = space.sample_in_train
            space.sample("max")
            space.sample_in_train = sampling
            reset_before_sample(data)
        queue = data["queue"]
        if forward_loop is None and data["train_count_since_sample"] < CALIB_ITERS:
            if not queue:
                pass  # nothing ran in train mode since conversion: the statistics are the weights' own
            elif queue.maxlen is not None and len(queue) < queue.maxlen and has_running_bn(root):
                warnings.warn(
                    f"BN statistics of the active subnet are stale and only {len(queue)} of {queue.maxlen}"
                    " batches are cached to re-estimate them; inference results can be inaccurate (pass a"
                    " forward loop to nascli.nas.patch.prep_for_eval, or train longer)",
                    stacklevel=4,
                )
            else:
                replay = replay_queue(queue)
                forward_loop = lambda _: replay(model)  # noqa: E731 (the cache holds the converted module's inputs)
        elif forward_loop is not None:
            data["fill"] = True
    try:
        if forward_loop is not None:
            with eval_guard(space):
                reset_bn(root, forward_loop)
            data["train_count_since_sample"] = CALIB_ITERS
    finally:
        data["fill"] = fill


def _train_with_calibration(model: nn.Module, mode: bool = True) -> nn.Module:
    """``model.train(mode)`` of a converted model: going to eval mode calibrates (``calibrate_after_eval``).

    Once the model is exported (no search space left) it is a plain model again: the patch
    removes itself and the class's ``train`` runs.
    """
    from nascli.space.space import SPACE_ATTR

    space = getattr(model, SPACE_ATTR, None)
    if space is None:
        model.__dict__.pop("train", None)
        return model.train(mode)
    type(model).train(model, mode)
    if not mode and _enabled:
        with eval_guard(space) as nested:
            if not nested:
                calibrate_after_eval(model, space)
    return model


def patch_train(model: nn.Module) -> None:
    """Make ``model.train()``/``model.eval()`` of a converted model run ``_train_with_calibration``.

    A ``functools.partial`` rather than a bound method, so copies (``copy.deepcopy``) rebind to
    the copy and pickling finds the function by name.
    """
    model.__dict__["train"] = functools.partial(_train_with_calibration, model)


def unpatch_train(model: nn.Module) -> None:
    """Give an exported model its class's ``train`` back."""
    patched = model.__dict__.get("train")
    if isinstance(patched, functools.partial) and patched.func is _train_with_calibration:
        del model.__dict__["train"]
