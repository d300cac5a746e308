"""Dynamic Sequential: searchable depth by skipping trailing shape-preserving blocks."""

from __future__ import annotations

from typing import Any

from torch import nn

from nascli.space.dynamic.base import DynamicModule
from nascli.space.hparam import Hparam


class DynamicSequential(DynamicModule, nn.Sequential):
    """Runs only the first ``depth`` blocks.

    Conversion gives a depth hparam only to stages whose trailing blocks keep both the tensor shape
    and the channel group of their input (residual blocks), so skipping them is always valid.
    """

    _native = nn.Sequential
    _hparam_fields = (("depth", "_hp_depth"),)
    _hp_depth: Hparam

    def attach_hparams(self, depth: Hparam) -> None:
        self._hp_depth = depth

    def forward(self, x: Any) -> Any:
        depth = self._hp_depth.active
        if depth == len(self):
            return super().forward(x)
        for block in list(self._modules.values())[:depth]:
            x = block(x)
        return x

    def _shrink_to_active(self) -> None:
        for index in range(len(self) - 1, self._hp_depth.active - 1, -1):
            del self[index]
