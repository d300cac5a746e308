"""The depth kind (nn.Sequential): searchable depth by skipping trailing shape-preserving blocks."""

from __future__ import annotations

from typing import Any

from torch import nn

from nascli.space import settings as check
from nascli.space.hparam import Dim, Hparam
from nascli.space.kinds.base import DynamicModule, LayerKind, ModeDefaults, register


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


class SequentialKind(LayerKind):
    dynamic = {nn.Sequential: DynamicSequential}
    settings = {"min_depth": check.depth}

    def default_settings(self, mode: ModeDefaults) -> dict[str, Any] | None:
        return {"min_depth": 1} if mode.depth else None

    def searchable(self, module: nn.Module) -> bool:
        return True

    def layer_hparam(self, name, module, settings, trace) -> Hparam | None:
        """Depth choices when the trailing blocks keep the shape and channel group of their input."""
        if len(trace.calls.get(name, ())) != 1:
            return None
        skippable = [_is_skippable(f"{name}.{key}", block, trace) for key, block in module._modules.items()]
        first = len(skippable)
        while first > 0 and skippable[first - 1]:
            first -= 1
        low = max(first, settings.get("min_depth", 1))
        return Hparam(f"{name}.depth", range(low, len(module) + 1)) if low < len(module) else None

    def attach(self, module: nn.Module, dims: dict[str, Dim], layer_hp: Hparam | None) -> None:
        module.attach_hparams(layer_hp)

    def gates(self, name: str, module: nn.Module) -> dict[str, tuple[Hparam, int]]:
        return {f"{name}.{key}": (module._hp_depth, index) for index, key in enumerate(module._modules)}


def _is_skippable(name: str, block: nn.Module | None, trace) -> bool:
    calls = trace.calls.get(name, [])
    if block is None or not any(True for _ in block.children()) or len(calls) != 1:
        return False
    node_in, node_out = calls[0]
    if node_in not in trace.channels or node_out not in trace.channels:
        return False
    if trace.node_shape(node_in) != trace.node_shape(node_out):
        return False
    groups = trace.groups
    roots_in = [groups.find(e) for e in trace.channels[node_in][0]]
    return roots_in == [groups.find(e) for e in trace.channels[node_out][0]]


register(SequentialKind())
