"""``SearchSpace(model)``: a converted model's search space as one object, where ModelOpt keeps it.

ModelOpt scripts and tests build ``SearchSpace(model)`` to list and set hparams. In nascli the
space lives on the converted model (``mtn.*`` functions reach it); this class is a view of it
with ModelOpt's method names, so such code runs unchanged.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

from torch import nn

from nascli.nas.utils import named_hparams
from nascli.opt.checkpoint import export_recorded
from nascli.space.hparam import Hparam
from nascli.space.space import get_space


class SearchSpace:
    """The search space of a converted ``model`` (refused with what to do if it was not converted)."""

    def __init__(self, model: nn.Module) -> None:
        self._space = get_space(model)
        self.model = model

    def named_hparams(self, configurable: bool | None = None) -> Iterator[tuple[str, Hparam]]:
        """``(name, hparam)`` pairs; ``configurable=True`` only those with more than one choice."""
        return named_hparams(self.model, configurable)

    def config(self, configurable: bool | None = None) -> dict[str, Any]:
        """The active value of each hparam (of the configurable ones with ``configurable=True``)."""
        return self._space.config(configurable)

    def select(self, config: dict[str, Any]) -> None:
        self._space.select(config)

    def sample(self, sample_func: Callable | str | dict = random.choice) -> dict[str, Any]:
        """Select a subnet (``max``, ``min``, ``random.choice``, ...) and return its whole config."""
        self._space.sample(sample_func)
        return self._space.config(None)

    def size(self) -> int:
        """The number of subnets."""
        return self._space.size()

    def export(self) -> nn.Module:
        """Export the model to its active subnet in place and return it, as ModelOpt's ``SearchSpace.export``.

        ModelOpt's replaces the dynamic modules of ``self.model`` with plain ones, so code that
        reads the model after ``space.export()`` sees the subnet; so does this, through
        ``mtn.export`` (the model keeps the record of its conversion and saves as one exported
        so). The view has no space left to read afterwards. ``mtn.export_copy(space.model)``
        gives a new model and keeps the converted one.
        """
        self.model = export_recorded(self.model)
        return self.model

    def print_summary(self, skipped_hparams: list[str] | tuple[str, ...] = ("kernel_size",)) -> None:
        print(self._space.summary(skipped=tuple(skipped_hparams)))
