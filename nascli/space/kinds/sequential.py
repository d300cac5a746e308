"""The depth kind (nn.Sequential): searchable depth by skipping trailing shape-preserving blocks."""

from __future__ import annotations

from typing import Any

from torch import nn

from nascli.space import settings as check
from nascli.space.hparam import Dim, Hparam
from nascli.space.kinds.base import DynamicModule, LayerKind, ModeDefaults, depth_hparam, register


class DepthStack(DynamicModule):
    """Mixin of a stack of blocks that keeps ``depth`` of its blocks: the first ones, or the best ranked.

    Conversion gives a depth hparam only to stacks whose trailing blocks keep both the tensor
    shape and the channel group of their input (residual blocks), so skipping them is always
    valid. Ranking the blocks by importance (``space/importance.py`` ``rank_blocks``) may let
    a smaller depth skip any of those blocks instead of the last ones; the blocks that run keep
    their order. The ranks live in the search space (``SearchSpace.block_ranks``), where costs
    and checkpoints read them.
    """

    _hparam_fields = (("depth", "_hp_depth"),)
    _hp_depth: Hparam
    _ranks: list[int] | None = None

    def attach_hparams(self, depth: Hparam) -> None:
        self._hp_depth = depth

    def kept_indices(self) -> list[int]:
        """Indices of the blocks that run at the active depth, in order."""
        depth = self._hp_depth.active
        if self._ranks is None:
            return list(range(min(depth, len(self._modules))))
        return [index for index, rank in enumerate(self._ranks) if rank < depth]

    def _kept(self) -> list[nn.Module]:
        """The blocks that run at the active depth, in order."""
        blocks, depth = list(self._modules.values()), self._hp_depth.active
        if self._ranks is None:
            return blocks[:depth]
        return [block for block, rank in zip(blocks, self._ranks, strict=True) if rank < depth]

    def _shrink_to_active(self) -> None:
        kept = {id(block) for block in self._kept()}
        blocks = list(self._modules.values())
        for index in range(len(blocks) - 1, -1, -1):
            if id(blocks[index]) not in kept:
                del self[index]
        self.__dict__.pop("_ranks", None)


class DynamicSequential(DepthStack, nn.Sequential):
    """Runs only ``depth`` blocks."""

    _native = nn.Sequential

    def forward(self, x: Any) -> Any:
        if self._hp_depth.active == len(self):
            return super().forward(x)
        for block in self._kept():
            x = block(x)
        return x


class SequentialKind(LayerKind):
    dynamic = {nn.Sequential: DynamicSequential}
    settings = {"min_depth": check.depth}

    def default_settings(self, mode: ModeDefaults) -> dict[str, Any] | None:
        return {"min_depth": 1} if mode.depth else None

    def searchable(self, module: nn.Module) -> bool:
        return True

    def layer_hparam(self, name, module, settings, trace) -> Hparam | None:
        """Depth choices when the trailing blocks keep the shape and channel group of their input."""
        if len(trace.calls.get(name, ())) > 1:  # none recorded: fx went straight into its blocks
            return None
        return depth_hparam(name, module, settings, trace)

    def attach(self, module: nn.Module, dims: dict[str, Dim], layer_hp: Hparam | None) -> None:
        module.attach_hparams(layer_hp)

    def gates(self, name: str, module: nn.Module) -> dict[str, tuple[Hparam, int]]:
        return {f"{name}.{key}": (module._hp_depth, index) for index, key in enumerate(module._modules)}


register(SequentialKind())
