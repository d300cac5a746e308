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
from nascli.space.export import export_model
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
        """The active subnet as a plain model (a new module; the converted model stays)."""
        return export_model(self.model)

    def print_summary(self) -> None:
        print(self._space.summary())
