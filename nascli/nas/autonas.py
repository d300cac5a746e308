"""The AutoNAS mode, where ModelOpt keeps it: ``mtn.autonas.AutoNASConfig`` and ``AutoNASPatchManager``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from nascli.errors import UserInputError
from nascli.nas.config import AutoNASConfig
from nascli.nas.utils import converted_module
from nascli.space.patches import calibrate_after_eval, reset_before_sample
from nascli.space.space import get_space

__all__ = ["AutoNASConfig", "AutoNASPatchManager"]


class AutoNASPatchManager:
    """The train- and eval-mode bookkeeping of a converted model, under ModelOpt's name.

    ``patch_data`` is the live dict the model reads on every forward (nascli/space/patches.py
    lists its keys): ``queue`` holds the batches cached in train mode for BN calibration and
    ``fill`` makes eval-mode forwards add theirs, so code written for ModelOpt can inspect or
    seed the cache. ``model`` may be the converted module or a model holding it.
    """

    def __init__(self, model: nn.Module) -> None:
        self._model = model
        self._found = converted_module(model)

    @classmethod
    def is_patched(cls, model: nn.Module) -> bool:
        """Whether ``model`` is or holds a converted module (only those have patch data)."""
        return converted_module(model) is not None

    def _converted(self) -> nn.Module:
        if self._found is None:
            raise UserInputError(f"{type(self._model).__name__} holds no converted module: call nascli.nas.convert")
        return self._found[1]

    @property
    def patch_data(self) -> dict[str, Any]:
        """The bookkeeping dict itself (changes to it change what the model does)."""
        return get_space(self._converted()).patch_data

    def reset_before_sample(self) -> None:
        """Mark the active subnet as chosen by the user: its BN statistics count as stale from now on."""
        reset_before_sample(self.patch_data)

    def call_post_eval(self, forward_loop: Callable[[nn.Module], Any] | None = None) -> None:
        """Run what ``eval()`` runs after switching modes: max subnet after random training, BN calibration.

        With ``forward_loop`` the statistics are re-estimated from its batches instead of the cache.
        """
        module = self._converted()
        calibrate_after_eval(module, get_space(module), forward_loop, root=self._model)
