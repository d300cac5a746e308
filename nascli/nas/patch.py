"""Evaluation of a converted model with calibrated BN statistics, where ModelOpt keeps it (``mtn.patch``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from nascli.nas.utils import converted_module
from nascli.space.patches import calibrate_after_eval, eval_guard
from nascli.space.space import get_space

__all__ = ["prep_for_eval"]


def prep_for_eval(model: nn.Module, forward_loop: Callable[[nn.Module], Any] | None = None) -> nn.Module:
    """Put ``model`` in eval mode with BN statistics that fit its active subnet; returns it, as ``eval()`` does.

    ``eval()`` of a converted model already re-estimates the statistics from batches it cached
    in train mode; right after conversion or a ``sample`` there are none, so pass
    ``forward_loop`` (a callable that runs ``model`` over real batches) to re-estimate them
    from those. Its batches are cached for later ``eval()`` calls. A model that holds no
    converted module just goes to eval mode.
    """
    found = converted_module(model)
    if found is None:
        return model.eval()
    space = get_space(found[1])
    with eval_guard(space):  # eval() must not calibrate on its own first
        result = model.eval()
    calibrate_after_eval(found[1], space, forward_loop, root=model)
    return result
