"""How close two computations of the same subnet must be, in the dtype the model computes in.

A subnet computed by the dynamic (sliced) layers, by plain exported layers and by a file written
from them runs the same arithmetic in a different order or through different kernels, so its
outputs may differ in the last bits of the dtype they are computed in. The tolerance is two
units of that dtype's precision (``torch.finfo(dtype).eps``), relative and absolute, and never
below 1e-4: 1e-4 for float32, 2e-3 for float16, 1.6e-2 for bfloat16 (8 bits of mantissa). A real
error (a channel out of place, a weight left over) moves the outputs by far more than that.
"""

from __future__ import annotations

import torch


def tolerance(dtype: torch.dtype) -> float:
    """The relative and absolute tolerance for outputs computed in ``dtype``."""
    if not dtype.is_floating_point:
        return 0.0
    return max(1e-4, 2 * torch.finfo(dtype).eps)


def max_difference(got: torch.Tensor, expected: torch.Tensor) -> float:
    """The largest absolute difference, or NaN when the shapes differ."""
    if got.shape != expected.shape:
        return float("nan")
    return (got.float() - expected.float()).abs().max().item() if got.numel() else 0.0


def outputs_match(got: torch.Tensor, expected: torch.Tensor) -> bool:
    """Whether ``got`` equals ``expected`` within the tolerance of the coarser of their dtypes."""
    if got.shape != expected.shape:
        return False
    coarser = max((got.dtype, expected.dtype), key=tolerance)
    tol = tolerance(coarser)
    return torch.allclose(got.float(), expected.float(), rtol=tol, atol=tol)
