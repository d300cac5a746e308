"""The reference count: fvcore's flops of a plain model, with batch norm left out (it folds into the conv)."""

from __future__ import annotations

import logging
import warnings

import torch
from torch import nn


def fvcore_flops(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> int:
    """Multiply-accumulates per input sample, as fvcore counts them, batch-norm handle removed.

    Traced with gradients enabled: under ``no_grad`` an eval-mode ``nn.MultiheadAttention`` takes
    a fused fast path whose projections fvcore cannot see, so the count would depend on the
    caller's grad mode. With gradients on, the projections are always counted.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
        from fvcore.nn import FlopCountAnalysis
        from fvcore.nn.flop_count import _DEFAULT_SUPPORTED_OPS

    handles = {name: handle for name, handle in _DEFAULT_SUPPORTED_OPS.items() if name != "aten::batch_norm"}
    was_training = model.training
    model.eval()
    logger = logging.getLogger("fvcore")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        analysis = FlopCountAnalysis(model, inputs).clear_op_handles().set_op_handle(**handles)
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with torch.enable_grad():
                total = analysis.total()
    finally:
        logger.setLevel(level)
        model.train(was_training)
    return total // inputs[0].shape[0]


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
