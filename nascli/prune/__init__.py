"""Public pruning API, call for call like ``modelopt.torch.prune``: ``import nascli.prune as mtp``.

Pruning is a search-space mode (``"fastnas"``) followed by a search for the best subnet within
the constraints, so ``prune`` is ``convert`` then ``search`` of ``nascli.nas``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from nascli.nas import convert, search
from nascli.prune import fastnas

__all__ = ["fastnas", "prune"]


def prune(
    model: nn.Module | Callable[[], nn.Module] | str | tuple,
    mode: Any,
    constraints: dict[str, Any],
    dummy_input: torch.Tensor | tuple,
    config: dict[str, Any] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Convert ``model`` with ``mode`` (``"fastnas"`` or ``[("fastnas", config)]``), search the
    subnet that scores best within ``constraints`` and return ``(model, search history)``.

    The model is exported in place and returned, a plain and smaller model ready for
    fine-tuning, as ModelOpt returns it (a module given is the module returned). ``nascli.opt.save``
    of it restores from the original model. ``config`` takes the keys of ``nascli.nas.search``,
    ModelOpt's names included (``checkpoint`` saves the exported model).
    """
    converted = convert(model, mode=mode, dummy_input=dummy_input)
    return search(converted, constraints, dummy_input, config)  # search exports in place, as ModelOpt's does
