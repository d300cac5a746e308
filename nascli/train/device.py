"""Where training runs: the device a recipe asks for, and the device a model's weights are on."""

from __future__ import annotations

import os

import torch
from torch import nn

from nascli.errors import UserInputError


def training_device(wanted: str) -> torch.device:
    """``auto``: this process's GPU under torchrun (LOCAL_RANK), or the first GPU, else the CPU."""
    if wanted == "cpu" or (wanted == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UserInputError("train.device: cuda was asked for, but no CUDA device is available")
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    torch.cuda.set_device(device)
    return device


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (the CPU for a model without any)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def autocast(device: torch.device, dtype: torch.dtype | None) -> torch.autocast:
    """Autocast to ``dtype`` on ``device``'s type; a no-op context for None (full precision)."""
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


#: dtypes a model is stored in but not trained in: their updates are too coarse (mixed precision instead)
HALF_DTYPES = (torch.bfloat16, torch.float16)


def weights_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of the model's first floating-point parameter (float32 for a model without any)."""
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
