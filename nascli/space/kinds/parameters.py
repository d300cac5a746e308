"""Parameters and buffers a model's own code reads directly: an RMS norm's weight, a class token, a
position embedding, the statistics of a library's batch-norm-and-activation layer.

A model traced with ``torch.export`` (``space/trace_aten.py``) can use its parameters in plain
tensor code instead of through a layer of a registered kind. The tracer gives such a parameter
the channel group of what it meets; when that group is searchable, the module owning the
parameter becomes a dynamic subclass of its own class whose forward runs with the parameter
sliced to the active channels, so the model's code runs unchanged on the smaller tensors. The
owner can be any class (a Hugging Face ``LlamaRMSNorm``, a timm ``VisionTransformer``), so no
hand-written code per model class is needed. See docs/architecture.md.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
from torch import nn

from nascli.space.hparam import Dim, Grouped, Scaled, Segments, dim_index, dim_parts, dim_scale, take
from nascli.space.kinds.base import (
    DynamicModule,
    LayerKind,
    copied_parameter,
    copied_tensor,
    dynamic_class,
    move_channels,
)

_ROLE = "param:"  # channel-dim role of a sliced parameter's dim: "param:weight:1"


class SlicedParameters(DynamicModule):
    """Mixin: the owner's forward sees each sliced parameter at its active size.

    The stored full-size parameter is swapped for a view of its active channels for the length of
    one forward, so gradients reach the full parameter and ``state_dict`` keys never change.
    """

    # parameter name -> {its channel dim: the dim sizing it}; an expert's 3-d weight has two such dims
    _sliced: dict[str, dict[int, Dim]]
    # int (or a tuple of 1s and one size) the module's code sizes a split or view with -> the dim it follows;
    # a dotted name is an attribute of an object the module holds (``config.num_attention_heads`` of its own
    # copy of the config)
    _following: dict[str, Dim]
    # submodules never called themselves whose sliced tensors this module's code reads (a router's
    # ``F.linear(x, self.classifier.weight)``): this module's forward swaps their slices in too
    _carried: tuple[str, ...] = ()
    # a per-layer list the module's code pairs with a stack of blocks it holds (Ergo zips ``config.layer_types``
    # with its layers, strictly) -> that stack's path: the list holds the kept blocks' entries
    _per_block: dict[str, str] = {}
    # an argument of the forward (a keyword's name or a position) running along the heads at their full size
    # -> (that dim, the heads' dim): ALiBi's bias of each head, which Bloom and MPT build outside the attention
    # and hand it (space/sliced_inputs.py); the forward sees the rows of the kept heads only
    _inputs: dict[str | int, tuple[int, Dim]] = {}

    def attach_inputs(self, inputs: dict[str | int, tuple[int, Dim]]) -> None:
        """Slice these arguments of the forward (a keyword's name or a position) along their dim with the heads."""
        self._inputs = {**self._inputs, **inputs}

    def attach_carried(self, names: tuple[str, ...]) -> None:
        self._carried = tuple(dict.fromkeys((*self._carried, *names)))

    def attach_per_block(self, lists: dict[str, str]) -> None:
        self._per_block = {**self._per_block, **lists}

    def attach_sliced(self, sliced: dict[str, dict[int, Dim]], following: dict[str, Dim]) -> None:
        self._sliced = {**getattr(self, "_sliced", {}), **sliced}
        self._following = {**getattr(self, "_following", {}), **following}

    def release_fixed(self) -> bool:
        """Stop slicing what every dim of which is fixed, at its full size (conversion's forward check or a
        record fixed it after it was attached); True when nothing is left, and the module is native again.

        A conversion then lists the same hparams whether a dim was fixed by the tracer, before
        attaching, or by the check after it: a model converted after a forward that cached state
        (ConViT's relative indices) and the same model restored from scratch agree.
        """
        self._sliced = {
            name: dims for name, dims in self._sliced.items() if any(_configurable(dim) for dim in dims.values())
        }
        self._following = {name: dim for name, dim in self._following.items() if _configurable(dim)}
        self._carried = tuple(name for name in self._carried if isinstance(self.get_submodule(name), SlicedParameters))
        self._per_block = {
            name: path for name, path in self._per_block.items() if self.get_submodule(path)._hp_depth.is_configurable
        }
        self._inputs = {key: (axis, dim) for key, (axis, dim) in self._inputs.items() if _configurable(dim)}
        if self._sliced or self._following or self._carried or self._per_block or self._inputs:
            return False
        for attr in ("_sliced", "_following", "_carried", "_per_block", "_inputs"):
            self.__dict__.pop(attr, None)
        self.__class__ = self._native
        return True

    def nas_hparams(self) -> list[tuple[str, Any]]:
        found = []
        for name, dims in self._sliced.items():
            for axis, dim in dims.items():
                base = dim.base if isinstance(dim, Scaled) else dim
                if isinstance(base, (Grouped, Segments)):
                    # one entry per query head (attention sinks): groups, then heads; an expert's gate and up
                    # halves: their one width
                    parts = list({id(part): part for part in dim_parts(base)}.values())
                    found.extend((f"{name}.shape[{axis}][{i}]", part) for i, part in enumerate(parts))
                else:
                    found.append((f"{name}.shape[{axis}]", base))
        return found

    def _store(self, name: str) -> dict[str, Any]:
        """The dict holding ``name``: the module's parameters, or its buffers (a norm's running statistics)."""
        return self._parameters if name in self._parameters else self._buffers

    def _active(self, name: str) -> torch.Tensor:
        tensor = self._store(name)[name]
        for axis, dim in self._sliced[name].items():
            if dim.active != dim.max:
                tensor = take(tensor, axis, dim_index(dim))
        return tensor

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        swapped = []
        try:  # whatever was swapped in goes back out, even when a later swap or the forward raises
            for holder in [self, *(self.get_submodule(name) for name in self._carried)]:
                swapped.append((holder, holder._swap_in()))
            if self._inputs and (rows := self._kept_rows()):  # none while every head is kept
                args, kwargs = keep_rows(rows, args, kwargs)
            return super().forward(*args, **kwargs)
        finally:
            for holder, (full, sizes) in reversed(swapped):
                holder._swap_out(full, sizes)

    def _swap_in(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """Put the active slices and sizes in place; returns the full tensors and sizes to put back."""
        lists = self._kept_entries()  # computed before anything is set: a failure here leaves nothing swapped
        full = {}
        for name, dims in self._sliced.items():
            if any(dim.active != dim.max for dim in dims.values()):
                full[name] = self._store(name)[name]
                self._store(name)[name] = self._active(name)  # a view: updates reach the full tensor
        sizes = {name: self._size(name) for name, dim in self._following.items() if dim.active != dim.max}
        for name, value in sizes.items():
            self._set_size(name, _sized(value, self._following[name].active))
        for name, kept in lists.items():
            sizes[name] = self._size(name)
            self._set_size(name, kept)
        return full, sizes

    def _kept_rows(self) -> list[tuple[str | int, int, int, Any]]:
        """(argument, dim, rows per entry of the full tensor, kept rows) of each sliced input at a smaller size."""
        return [
            (key, axis, dim.max, dim_index(dim)) for key, (axis, dim) in self._inputs.items() if dim.active != dim.max
        ]

    def _kept_entries(self) -> dict[str, list | tuple]:
        """Each per-block list cut to the entries of the blocks its stack keeps, where the stack drops any."""
        found = {}
        for name, path in self._per_block.items():
            stack, value = self.get_submodule(path), self._size(name)
            kept = stack.kept_indices()
            if len(kept) < len(value):
                found[name] = type(value)(value[i] for i in kept)
        return found

    def _swap_out(self, full: dict[str, Any], sizes: dict[str, Any]) -> None:
        for name, tensor in full.items():
            self._store(name)[name] = tensor
        for name, value in sizes.items():
            self._set_size(name, value)

    def _size(self, name: str) -> Any:
        """A followed size: an attribute of the module, or of an object it holds (``config.num_attention_heads``)."""
        owner, _, attr = name.rpartition(".")
        return vars(getattr(self, owner) if owner else self)[attr]

    def _set_size(self, name: str, value: Any) -> None:
        owner, _, attr = name.rpartition(".")
        vars(getattr(self, owner) if owner else self)[attr] = value  # no validation: a size mid-forward

    def export_native(self) -> None:
        self._shrink_to_active()
        for name, dim in self._following.items():
            self._set_size(name, _sized(self._size(name), dim.active))
        for name, kept in self._kept_entries().items():  # before the stack below drops its blocks
            self._set_size(name, kept)
        self.__dict__.pop("_per_block", None)
        self.__dict__.pop("_sliced", None)
        self.__dict__.pop("_following", None)
        self.__dict__.pop("_carried", None)
        rows = [(key, axis, full, torch.arange(full)[index].tolist()) for key, axis, full, index in self._kept_rows()]
        self.__dict__.pop("_inputs", None)
        self.__class__ = self._native
        if rows:  # a plain model with fewer heads would build other rows: keep picking these
            self.register_forward_pre_hook(functools.partial(_keep_rows_hook, rows), with_kwargs=True)

    def _shrink_to_active(self) -> None:
        for name in self._sliced:
            store, active = self._store(name), self._active(name)
            if name in self._parameters:
                store[name] = copied_parameter(active, store[name])
            else:
                store[name] = copied_tensor(active, store[name])


_DYNAMIC: dict[type, type] = {}


class ParametersKind(LayerKind):
    """Costs, importance order and export of the sliced parameters of any module (no rules of its own)."""

    mixin = SlicedParameters

    def attach_parameters(
        self, module: nn.Module, sliced: dict[str, dict[int, Dim]], following: dict[str, Dim] | None = None
    ) -> None:
        """Make ``module`` (or keep it) its dynamic subclass, slicing ``sliced`` and setting ``following``.

        ``following``: int attributes the module's code splits its channels by (GPT-2's
        ``split_size``), set to the active size for each forward and for good on export.
        """
        native = type(module)
        if not isinstance(module, SlicedParameters):
            if native not in _DYNAMIC:
                _DYNAMIC[native] = dynamic_class(SlicedParameters, native)
                _DYNAMIC[native].nas_kind = self
            module.__class__ = _DYNAMIC[native]
        module.attach_sliced(sliced, following or {})

    def params(self, terms, module, dims, layer_hp, path) -> None:
        for name, param in module.named_parameters(recurse=False):
            if name in module._sliced:
                dims = module._sliced[name]
                rest = param.numel() // math.prod(param.shape[axis] for axis in dims)
                terms.add("params", rest, [(dim, 1) for dim in dims.values()], path)
            else:
                terms.add("params", param.numel(), [], path)

    def roles(self, module: nn.Module) -> dict[str, Dim]:
        """Each sliced dim of ``module``'s parameters by its role, ``param:<name>:<dim>``."""
        return {f"{_ROLE}{name}:{axis}": dim for name, dims in module._sliced.items() for axis, dim in dims.items()}

    def channel_dims(self, module: nn.Module) -> list[tuple[str, Dim]]:
        return list(self.roles(module).items())

    def slice_importance(self, module: nn.Module, slot: str) -> torch.Tensor:
        """The L1 norm of each slice of a parameter along its sliced dim ``slot`` names."""
        name, _, axis = slot[len(_ROLE) :].rpartition(":")
        tensor = module._store(name)[name].detach().float()
        moved = tensor.abs().movedim(int(axis), 0)
        return moved.reshape(len(moved), -1).sum(1)

    def ordered_dims(self, module: nn.Module) -> list[Dim]:
        """The heads an input is sliced with (an ALiBi bias): its rows follow the heads' positions."""
        return [dim for _, dim in module._inputs.values()]

    def permute(self, module, slot, perm, offset) -> None:
        name, _, axis = slot[len(_ROLE) :].rpartition(":")
        dim = module._sliced[name][int(axis)]
        move_channels(module._store(name)[name], int(axis), perm, offset, dim_scale(dim))


PARAMETERS = ParametersKind()


def keep_rows(rows: list[tuple[str | int, int, int, Any]], args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """``args`` and ``kwargs`` with each listed input cut to its kept rows along its dim (batch times the full
    count of rows there, Bloom's ``batch * heads``: each batch's rows are cut alike)."""
    args, kwargs = list(args), dict(kwargs)
    for key, axis, full, index in rows:
        store = args if isinstance(key, int) else kwargs
        tensor = (args[key] if key < len(args) else None) if isinstance(key, int) else kwargs.get(key)
        if isinstance(tensor, torch.Tensor):
            index = torch.as_tensor(index, device=tensor.device) if isinstance(index, list) else index
            store[key] = take(tensor.unflatten(axis, (-1, full)), axis + 1, index).flatten(axis, axis + 1)
    return tuple(args), kwargs


def _keep_rows_hook(
    rows: list[tuple[str | int, int, int, list[int]]], module: nn.Module, args: tuple, kwargs: dict
) -> tuple[tuple, dict]:
    """The exported attention's forward pre-hook: its inputs cut to the rows of the heads it kept."""
    return keep_rows(rows, args, kwargs)


def _configurable(dim: Dim) -> bool:
    return any(part.is_configurable for part in dim_parts(dim))


def _sized(value: int | tuple[int, ...], size: int) -> int | tuple[int, ...]:
    """``size`` in the form of ``value``: an int, a one-int tuple (a layer norm's ``normalized_shape``), or a
    tuple of 1s and one size (timm's ``Scale.shape``, ``(dim, 1, 1)``), that entry replaced."""
    if not isinstance(value, tuple):
        return size
    return (size,) if len(value) == 1 else tuple(1 if v == 1 else size for v in value)
