"""The activation kind: the activation function as a categorical hparam; export swaps in the chosen module.

Not searched unless a rule lists choices. Activations have no channels of their own: the tracer
passes their channels through, as for any element-wise operation.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from nascli.space import settings as check
from nascli.space.hparam import Dim, Hparam
from nascli.space.kinds.base import DynamicModule, LayerKind, dynamic_class, register

# name -> (native module, the function it computes with its default settings)
ACTIVATIONS: dict[str, tuple[type[nn.Module], Callable[[torch.Tensor], torch.Tensor]]] = {
    "relu": (nn.ReLU, F.relu),
    "relu6": (nn.ReLU6, F.relu6),
    "leaky_relu": (nn.LeakyReLU, F.leaky_relu),
    "elu": (nn.ELU, F.elu),
    "gelu": (nn.GELU, F.gelu),
    "silu": (nn.SiLU, F.silu),
    "hardswish": (nn.Hardswish, F.hardswish),
    "mish": (nn.Mish, F.mish),
}
ACTIVATION_TYPES = tuple(native for native, _ in ACTIVATIONS.values())
_NAME_OF = {native: name for name, (native, _) in ACTIVATIONS.items()}


def activation_name(module: nn.Module) -> str:
    """The name of a native activation module, or of the one a dynamic activation was built from."""
    return _NAME_OF[getattr(module, "_native", type(module))]


class DynamicActivation(DynamicModule):
    """Runs the active choice; the layer's own activation (with its own settings) is the max choice."""

    _hparam_fields = (("activation", "_hp_activation"),)
    _hp_activation: Hparam

    def attach_hparams(self, activation: Hparam) -> None:
        self._hp_activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._hp_activation.active == _NAME_OF[self._native]:
            return super().forward(x)
        return ACTIVATIONS[self._hp_activation.active][1](x)

    def export_native(self) -> None:
        """The chosen activation's native module (the original one, settings kept, when unchanged)."""
        chosen = self._hp_activation.active
        if chosen == _NAME_OF[self._native]:
            super().export_native()
            return
        replacement = ACTIVATIONS[chosen][0]()
        hooks = {k: v for k, v in self.__dict__.items() if "hook" in k}
        self.__dict__ = {**replacement.__dict__, **hooks, "training": self.training}
        self.__class__ = type(replacement)

    def _shrink_to_active(self) -> None:
        """Nothing to shrink: an activation has no weights."""


DYNAMIC_ACTIVATIONS: dict[type[nn.Module], type[nn.Module]] = {
    t: dynamic_class(DynamicActivation, t) for t in ACTIVATION_TYPES
}
globals().update({cls.__name__: cls for cls in DYNAMIC_ACTIVATIONS.values()})  # importable by name, for pickle


class ActivationKind(LayerKind):
    dynamic = DYNAMIC_ACTIVATIONS
    settings = {"choices": check.names_from(tuple(ACTIVATIONS))}

    def searchable(self, module: nn.Module) -> bool:
        return True

    def layer_hparam(self, name, module, settings, trace) -> Hparam:
        """The listed activations, the layer's own last (its max, so the max subnet is the model as built)."""
        own = activation_name(module)
        return Hparam(f"{name}.activation", [*(c for c in settings.get("choices", ()) if c != own), own])

    def attach(self, module: nn.Module, dims: dict[str, Dim], layer_hp: Hparam | None) -> None:
        module.attach_hparams(layer_hp)


register(ActivationKind())
