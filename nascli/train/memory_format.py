"""Whether training runs a convolutional model and its image batches in NHWC (channels-last) layout.

oneDNN and cuDNN convolve NHWC tensors fastest: on a 2-core CPU a ResNet-20 sandwich step took
16 to 17 % less time on one thread and 13 to 16 % less on two, and its max subnet's step 17 to 18 % less on two
(``scripts/bench_engine.py``, docs/benchmarks.md). The layout changes no result, but a model that
calls ``.view`` on a feature map fails on an NHWC tensor. ``train.channels_last: auto`` (the default)
therefore tries the layout on a copy of the model with one training sample first and keeps NCHW where
that fails.

It also keeps NCHW for an odd batch on a CPU with more than one torch thread: there oneDNN's NHWC
convolutions abort the process (``free(): invalid next size``) when a converted ResNet-20 trains
narrower subnets on batches of 33, 41, 43 or 45 images, within 60 steps; batches of 42, 64 and 96
images, one thread, NCHW and oneDNN switched off do not (docs/benchmarks.md).
"""

from __future__ import annotations

import copy
from typing import Literal

import torch
from torch import nn
from torch.utils.data import Dataset

__all__ = ["channels_last_for"]


def channels_last_for(model: nn.Module, setting: bool | Literal["auto"], train: Dataset, batch: int) -> bool:
    """The layout to train in: ``setting`` itself, or for ``"auto"`` NHWC when the model has 2-D
    convolutions, takes image batches (the training split's samples are C x H x W) and runs them in
    that layout, and ``batch`` (images per step) is even where the CPU convolves on several threads."""
    if setting != "auto":
        return bool(setting)
    if not any(isinstance(m, nn.Conv2d) for m in model.modules()) or len(train) == 0:
        return False
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    if batch % 2 and device.type == "cpu" and torch.get_num_threads() > 1:
        return False  # oneDNN's crash on odd NHWC batches (module docstring)
    sample = train[0][0]
    if not isinstance(sample, torch.Tensor) or sample.dim() != 3:
        return False
    return _runs_nhwc(model, sample)


def _runs_nhwc(model: nn.Module, sample: torch.Tensor) -> bool:
    """Whether a copy of ``model`` in eval mode runs a batch of two ``sample`` in NHWC layout."""
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    batch = torch.stack([sample, sample]).to(device).contiguous(memory_format=torch.channels_last)
    probe = copy.deepcopy(model).to(memory_format=torch.channels_last).eval()  # eval: no subnet is drawn
    try:
        with torch.no_grad():
            probe(batch)
    except RuntimeError:  # ``.view`` of an NHWC feature map: "view size is not compatible ..."
        return False
    return True
