"""The depth kind of ``nn.ModuleList``: a loop over blocks runs only the first ``depth`` of them.

Transformers keep their blocks in a ModuleList and loop over it in their own forward
(``for layer in self.layers[: n]``), so the list cannot run the blocks itself as
``nn.Sequential`` does. Its dynamic version hands the loop only the active blocks: iterating it,
or slicing it, gives the ``depth`` blocks kept (the first ones, or the best ranked). Indexing
one block (``layers[3]``) still finds any block, except inside ``indexing_as_exported``: the
forward check of conversion (space/shrink_check.py) runs in it, so a list the model's code
indexes block by block (``self.mlps[1]``) instead of looping over fails at a depth that drops the
block, as its export would, and keeps its full depth. Lists a loop indexes together by layer number
(XLM's ``self.attentions[i]``, ``self.ffns[i]``, ..., ``space/parallel_stacks.py``) are indexed by
position among the kept blocks instead, the numbering their export gives them. Depth choices follow
the same rule as for ``nn.Sequential`` (kinds/base.py ``depth_hparam``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from torch import nn

from nascli.space.hparam import Hparam
from nascli.space.kinds.base import depth_hparam, register
from nascli.space.kinds.sequential import DepthStack, SequentialKind


class DynamicModuleList(DepthStack, nn.ModuleList):
    _native = nn.ModuleList
    _index_as_exported = False
    # one of parallel lists a loop indexes together (space/parallel_stacks.py): ``layers[i]`` is the i-th kept block
    _by_position = False

    def __iter__(self) -> Iterator[nn.Module]:
        return iter(self._kept())

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return nn.ModuleList(self._kept()[index])
        if self._by_position:
            return self._kept()[index]
        block = super().__getitem__(index)
        if DynamicModuleList._index_as_exported and not any(block is kept for kept in self._kept()):
            raise IndexError(f"block {index} is dropped at depth {self._hp_depth.active}")
        return block

    def _shrink_to_active(self) -> None:
        super()._shrink_to_active()
        self.__dict__.pop("_by_position", None)


@contextmanager
def indexing_as_exported() -> Iterator[None]:
    """Within it, indexing a dynamic ModuleList for a block its active depth drops raises IndexError."""
    DynamicModuleList._index_as_exported = True
    try:
        yield
    finally:
        DynamicModuleList._index_as_exported = False


class ModuleListKind(SequentialKind):
    """Depth as for ``nn.Sequential``; the list is never called itself, only its blocks."""

    dynamic = {nn.ModuleList: DynamicModuleList}

    def layer_hparam(self, name, module, settings, trace) -> Hparam | None:
        return depth_hparam(name, module, settings, trace)


register(ModuleListKind())
