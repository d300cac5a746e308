"""The convolution kind (Conv1d/2d/3d): searchable output and input channels and kernel size."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _reverse_repeat_tuple

from nascli.space import settings as check
from nascli.space.hparam import Dim, Hparam, Segments, dim_index, take
from nascli.space.kinds.base import (
    DynamicModule,
    LayerKind,
    ModeDefaults,
    copied_parameter,
    dynamic_class,
    move_channels,
    register,
)

_CONV_FN = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


class _DynamicConv(DynamicModule):
    """Channels are sliced as prefixes; a grouped convolution keeps its per-group width.

    For a grouped conv the in and out channels share one hparam (the tracer ties them), and fewer
    channels means fewer groups, so each remaining group's weights are used unchanged. A smaller
    kernel is the centre crop of the full one, with the padding reduced by the same amount on each
    side so the output shape does not change.
    """

    _hparam_fields = (("out_channels", "_hp_out"), ("in_channels", "_hp_in"), ("kernel_size", "_hp_kernel"))
    _hp_out: Hparam | Segments  # Segments when the output is chunked
    _hp_in: Hparam | Segments
    _hp_kernel: Hparam | None

    def attach_hparams(self, out: Hparam | Segments, inp: Hparam | Segments, kernel: Hparam | None) -> None:
        self._hp_out, self._hp_in, self._hp_kernel = out, inp, kernel

    def _active_kernel(self) -> int:
        return self.kernel_size[0] if self._hp_kernel is None else self._hp_kernel.active

    def _is_full(self) -> bool:
        return (
            self._hp_out.active == self.out_channels
            and self._hp_in.active == self.in_channels
            and self._active_kernel() == self.kernel_size[0]
        )

    def _active_tensors(self) -> tuple[torch.Tensor, torch.Tensor | None, tuple | str, int]:
        """(weight, bias, padding, groups) of the active subnet, as views of the full tensors."""
        out, k = self._hp_out.active, self._active_kernel()
        weight, groups, padding = take(self.weight, 0, dim_index(self._hp_out)), self.groups, self.padding
        if groups == 1:
            weight = take(weight, 1, dim_index(self._hp_in))
        else:
            groups = out // (self.out_channels // self.groups)
        full_k = self.kernel_size[0]
        if k != full_k:
            start = (full_k - k) // 2
            crop = (slice(None), slice(None)) + (slice(start, start + k),) * len(self.kernel_size)
            weight = weight[crop]
            padding = tuple(p - start * d for p, d in zip(self.padding, self.dilation, strict=True))
        bias = None if self.bias is None else take(self.bias, 0, dim_index(self._hp_out))
        return weight, bias, padding, groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._is_full():
            return super().forward(x)
        weight, bias, padding, groups = self._active_tensors()
        if self.padding_mode != "zeros":
            x = F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            padding = 0
        return _CONV_FN[len(self.kernel_size)](x, weight, bias, self.stride, padding, self.dilation, groups)

    def _shrink_to_active(self) -> None:
        weight, bias, padding, groups = self._active_tensors()
        self.weight = copied_parameter(weight, self.weight)
        if bias is not None:
            self.bias = copied_parameter(bias, self.bias)
        self.out_channels = weight.shape[0]
        self.in_channels = weight.shape[1] * groups
        self.groups = groups
        self.kernel_size = tuple(weight.shape[2:])
        self.padding = padding
        if not isinstance(padding, str):
            self._reversed_padding_repeated_twice = _reverse_repeat_tuple(padding, 2)


DynamicConv1d = dynamic_class(_DynamicConv, nn.Conv1d)
DynamicConv2d = dynamic_class(_DynamicConv, nn.Conv2d)
DynamicConv3d = dynamic_class(_DynamicConv, nn.Conv3d)


def kernel_factor(module: nn.Module, kernel: Hparam | int) -> list[tuple[Hparam | int, int]]:
    """The kernel's share of a conv's weights and flops: a square kernel's side (maybe searched) to the nd."""
    if len(set(module.kernel_size)) == 1:
        return [(kernel, len(module.kernel_size))]
    return [(math.prod(module.kernel_size), 1)]


class ChannelsFirstKind(LayerKind):
    """What convolutions and transposed convolutions share: channels along dim 1, kept in whole groups."""

    ratio_setting, divisor_setting = "out_channels_ratio", "channel_divisor"
    timed = True
    input_channel_dim = 1

    def slots(self, module: nn.Module) -> dict[str, int]:
        return {"out": module.out_channels, "in": module.in_channels}

    def slot_attr(self, module: nn.Module, slot: str) -> str:
        return f"{slot}_channels"

    def trace(self, walker, node, name, module) -> None:
        walker.consume(name, "in", node.args[0] if node.args else None, 1)
        walker.new_slot_output(node, name, 1)
        if module.groups > 1:
            walker.tie_grouped(name, module)

    def channel_multiple(self, module: nn.Module) -> int:
        return module.out_channels // module.groups if module.groups > 1 else 1

    def permutation_block(self, module: nn.Module) -> int:
        return self.channel_multiple(module)


class ConvKind(ChannelsFirstKind):
    dynamic = {nn.Conv1d: DynamicConv1d, nn.Conv2d: DynamicConv2d, nn.Conv3d: DynamicConv3d}
    settings = {
        "out_channels_ratio": check.ratios,
        "channel_divisor": check.divisor,
        "kernel_size": check.odd_kernels,
    }

    def default_settings(self, mode: ModeDefaults) -> dict[str, Any]:
        return {"out_channels_ratio": mode.ratios, "kernel_size": (), "channel_divisor": mode.divisor}

    def dummy_input(self, module: nn.Module) -> tuple[torch.Tensor, ...]:
        return (torch.randn(1, module.in_channels, *(224,) * len(module.kernel_size)),)

    def layer_hparam(self, name, module, settings, trace) -> Hparam | None:
        """Smaller kernels are centre crops; only for square, odd kernels with output-preserving padding."""
        wanted = settings.get("kernel_size", ())
        full = module.kernel_size[0]
        if not wanted or len(set(module.kernel_size)) != 1 or full % 2 == 0 or module.padding_mode != "zeros":
            return None
        if isinstance(module.padding, str) or any(
            p != d * (full - 1) // 2 for p, d in zip(module.padding, module.dilation, strict=True)
        ):
            return None
        choices = {k for k in wanted if k <= full} | {full}
        return Hparam(f"{name}.kernel_size", choices) if len(choices) > 1 else None

    def attach(self, module: nn.Module, dims: dict[str, Dim], layer_hp: Hparam | None) -> None:
        module.attach_hparams(dims["out"], dims["in"], layer_hp)

    def params(self, terms, module, dims, layer_hp, path) -> None:
        kernel = kernel_factor(module, layer_hp or module.kernel_size[0])
        if module.groups == 1:
            terms.add("params", 1, [(dims["out"], 1), (dims["in"], 1), *kernel], path)
        else:
            terms.add("params", module.in_channels // module.groups, [(dims["out"], 1), *kernel], path)
        if module.bias is not None:
            terms.add("params", 1, [(dims["out"], 1)], path)

    def flops(self, terms, node, module, dims, layer_hp, path) -> None:
        out_shape = terms.shape(node)
        if out_shape is None:
            return
        spatial = math.prod(out_shape[2:])
        kernel = kernel_factor(module, (layer_hp if dims else None) or module.kernel_size[0])
        out = dims["out"] if dims else module.out_channels
        if module.groups == 1:
            inp = dims["in"] if dims else module.in_channels
            terms.add("flops", spatial, [(out, 1), (inp, 1), *kernel], path)
        else:
            terms.add("flops", spatial * (module.in_channels // module.groups), [(out, 1), *kernel], path)

    def latency_layer(self, module, sizes, in_shape) -> tuple[nn.Module, torch.Tensor]:
        out, inp, k = sizes
        k = k or module.kernel_size[0]
        start = (module.kernel_size[0] - k) // 2
        padding = (
            module.padding
            if isinstance(module.padding, str)
            else tuple(p - start * d for p, d in zip(module.padding, module.dilation, strict=True))
        )
        groups = 1 if module.groups == 1 else out // (module.out_channels // module.groups)
        kernel = module.kernel_size if k == module.kernel_size[0] else (k,) * len(module.kernel_size)
        m, bias = module, module.bias is not None
        layer = m._native(inp, out, kernel, m.stride, padding, m.dilation, groups, bias, m.padding_mode)
        return layer, torch.randn(in_shape[0], inp, *in_shape[2:])

    def permute(self, module, slot, perm, offset) -> None:
        if slot == "out":  # a grouped conv's in and out are one group: its weight's dim 0 moves once
            move_channels(module.weight, 0, perm, offset)
            move_channels(module.bias, 0, perm, offset)
        elif module.groups == 1:
            move_channels(module.weight, 1, perm, offset)


register(ConvKind())
