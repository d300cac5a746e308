"""What every dynamic layer shares: its hparams per attribute and the switch back to a native layer."""

from __future__ import annotations

import torch
from torch import nn

from nascli.space.hparam import Hparam, Scaled, Segments


class DynamicModule:
    """Mixin for a native layer whose sizes follow shared hparams.

    A dynamic layer is the original object with its class swapped for a subclass of its own
    class, so ``isinstance``, parameter names and ``state_dict`` keys stay as they were. Its
    forward slices the stored full-size tensors to the active sizes; at the full size it calls the
    native forward on the full tensors, without copies.
    """

    _native: type[nn.Module]
    # attribute name -> name of the instance field holding its Hparam, in summary order
    _hparam_fields: tuple[tuple[str, str], ...] = ()

    def nas_hparams(self) -> list[tuple[str, Hparam]]:
        """(attribute, hparam) pairs in the order a search-space summary lists them."""
        found = []
        for attr, field in self._hparam_fields:
            dim = getattr(self, field, None)
            dim = dim.base if isinstance(dim, Scaled) else dim  # listed by the channels it follows
            if isinstance(dim, Segments):
                found.extend((f"{attr}[{i}]", part) for i, part in enumerate(dim.parts))
            elif dim is not None:
                found.append((attr, dim))
        return found

    def export_native(self) -> None:
        """Turn this layer, in place, into its native class at the active sizes with copied tensors."""
        self._shrink_to_active()
        for _, field in self._hparam_fields:
            self.__dict__.pop(field, None)
        self.__class__ = self._native

    def _shrink_to_active(self) -> None:
        raise NotImplementedError


def copied_parameter(tensor: torch.Tensor, like: nn.Parameter) -> nn.Parameter:
    """A new parameter owning a compact copy of a (possibly sliced) tensor."""
    data = tensor.detach().clone(memory_format=torch.contiguous_format)
    return nn.Parameter(data, requires_grad=like.requires_grad)


def dynamic_class(mixin: type, native: type[nn.Module]) -> type[nn.Module]:
    """The dynamic version of ``native``: a subclass of both, so ``isinstance(m, native)`` still holds.

    Assign it to a module-level name equal to its own (``DynamicConv2d = dynamic_class(...)``), so
    pickled models find it.
    """
    return type(f"Dynamic{native.__name__}", (mixin, native), {"_native": native, "__module__": mixin.__module__})
