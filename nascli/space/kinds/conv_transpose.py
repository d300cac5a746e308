"""The transposed-convolution kind (ConvTranspose1d/2d/3d): searchable output and input channels."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nascli.space import settings as check
from nascli.space.hparam import Dim, Hparam, Segments, dim_index, take
from nascli.space.kinds.base import (
    DynamicModule,
    ModeDefaults,
    copied_parameter,
    dynamic_class,
    move_channels,
    register,
)
from nascli.space.kinds.conv import ChannelsFirstKind

_CONV_TRANSPOSE_FN = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


class _DynamicConvTranspose(DynamicModule):
    """Channels are sliced as prefixes; the weight is laid out (in, out / groups, *kernel).

    A grouped transposed conv keeps its per-group width like a grouped conv: fewer channels means
    fewer groups. The kernel is not searched (a smaller kernel would change the output size).
    """

    _hparam_fields = (("out_channels", "_hp_out"), ("in_channels", "_hp_in"))
    _hp_out: Hparam | Segments  # Segments when the output is chunked
    _hp_in: Hparam | Segments

    def attach_hparams(self, out: Hparam | Segments, inp: Hparam | Segments) -> None:
        self._hp_out, self._hp_in = out, inp

    def _active_tensors(self) -> tuple[torch.Tensor, torch.Tensor | None, int]:
        out, out_index = self._hp_out.active, dim_index(self._hp_out)
        weight = take(self.weight, 0, dim_index(self._hp_in))
        if self.groups == 1:
            weight, groups = take(weight, 1, out_index), 1
        else:  # in and out are one group: the rows already hold whole groups
            groups = out // (self.out_channels // self.groups)
        return weight, None if self.bias is None else take(self.bias, 0, out_index), groups

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        if self._hp_out.active == self.out_channels and self._hp_in.active == self.in_channels:
            return super().forward(x, output_size)
        weight, bias, groups = self._active_tensors()
        nd = len(self.kernel_size)
        output_padding = self._output_padding(
            x, output_size, self.stride, self.padding, self.kernel_size, nd, self.dilation
        )
        fn = _CONV_TRANSPOSE_FN[nd]
        return fn(x, weight, bias, self.stride, self.padding, output_padding, groups, self.dilation)

    def _shrink_to_active(self) -> None:
        weight, bias, groups = self._active_tensors()
        self.weight = copied_parameter(weight, self.weight)
        if bias is not None:
            self.bias = copied_parameter(bias, self.bias)
        self.in_channels, self.groups = weight.shape[0], groups
        self.out_channels = weight.shape[1] * groups


DynamicConvTranspose1d = dynamic_class(_DynamicConvTranspose, nn.ConvTranspose1d)
DynamicConvTranspose2d = dynamic_class(_DynamicConvTranspose, nn.ConvTranspose2d)
DynamicConvTranspose3d = dynamic_class(_DynamicConvTranspose, nn.ConvTranspose3d)


class ConvTransposeKind(ChannelsFirstKind):
    dynamic = {
        nn.ConvTranspose1d: DynamicConvTranspose1d,
        nn.ConvTranspose2d: DynamicConvTranspose2d,
        nn.ConvTranspose3d: DynamicConvTranspose3d,
    }
    settings = {"out_channels_ratio": check.ratios, "channel_divisor": check.divisor}

    def default_settings(self, mode: ModeDefaults) -> dict[str, Any]:
        return {"out_channels_ratio": mode.ratios, "channel_divisor": mode.divisor}

    def attach(self, module: nn.Module, dims: dict[str, Dim], layer_hp: Hparam | None) -> None:
        module.attach_hparams(dims["out"], dims["in"])

    def params(self, terms, module, dims, layer_hp, path) -> None:
        kernel = math.prod(module.kernel_size)
        if module.groups == 1:
            terms.add("params", kernel, [(dims["in"], 1), (dims["out"], 1)], path)
        else:
            terms.add("params", kernel * (module.out_channels // module.groups), [(dims["in"], 1)], path)
        if module.bias is not None:
            terms.add("params", 1, [(dims["out"], 1)], path)

    def flops(self, terms, node, module, dims, layer_hp, path) -> None:
        """fvcore counts input positions times the weight."""
        in_shape = terms.shape(node.args[0] if node.args else None)
        if terms.shape(node) is None or in_shape is None:
            return
        coef = math.prod(in_shape[2:]) * math.prod(module.kernel_size)
        per_group = module.out_channels // module.groups
        if not dims:
            terms.add("flops", coef * module.in_channels * per_group, [], path)
        elif module.groups == 1:
            terms.add("flops", coef, [(dims["in"], 1), (dims["out"], 1)], path)
        else:
            terms.add("flops", coef * per_group, [(dims["in"], 1)], path)

    def latency_layer(self, module, sizes, in_shape) -> tuple[nn.Module, torch.Tensor]:
        out, inp = sizes
        groups = 1 if module.groups == 1 else out // (module.out_channels // module.groups)
        bias = module.bias is not None
        m = module
        layer = m._native(inp, out, m.kernel_size, m.stride, m.padding, m.output_padding, groups, bias, m.dilation)
        return layer, torch.randn(in_shape[0], inp, *in_shape[2:])

    def output_importance(self, module: nn.Module) -> torch.Tensor:
        weight, groups = module.weight.detach().abs(), module.groups  # (in, out / groups, *kernel)
        per_group = weight.reshape(groups, weight.shape[0] // groups, weight.shape[1], -1)
        return per_group.sum((1, 3), dtype=torch.float32).flatten()

    def permute(self, module, slot, perm, offset) -> None:
        """The weight is laid out (in, out / groups, ...); a grouped one's in and out are one group."""
        grouped = module.groups > 1
        if slot == "out":
            move_channels(module.weight, 0 if grouped else 1, perm, offset)
            move_channels(module.bias, 0, perm, offset)
        elif not grouped:
            move_channels(module.weight, 0, perm, offset)


register(ConvTransposeKind())
