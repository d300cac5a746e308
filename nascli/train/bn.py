"""Batch-norm recalibration: running statistics that match the active subnet."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from nascli.space.space import is_converted, random_sampling
from nascli.train.device import model_device


@torch.no_grad()
def recalibrate_bn(model: nn.Module, loader: Iterable, num_batches: int = 10) -> nn.Module:
    """Reset every BN's running stats and re-estimate them as a cumulative average over batches.

    Weights do not change. A subnet shares BN statistics with the supernet, which were gathered
    over many different subnets, so they are re-estimated before each evaluation. Random subnet
    sampling is off meanwhile, and the model's train/eval mode is restored afterwards.
    """
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    if not norms:
        return model  # nothing to re-estimate (a transformer): no forward passes
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch weighs the same
    was_training = model.training
    model.train()
    sampling = random_sampling(model, enabled=False) if is_converted(model) else None
    device = model_device(model)
    try:
        for index, (inputs, *_) in enumerate(loader):
            if index >= num_batches:
                break
            model(inputs.to(device))
    finally:
        if sampling is not None:
            sampling.__exit__()
        for m, momentum in zip(norms, saved, strict=True):
            m.momentum = momentum
        model.train(was_training)
    return model
