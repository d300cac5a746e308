"""Dynamic Conv1d/2d/3d: searchable output and input channels and kernel size."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _reverse_repeat_tuple

from nascli.space.dynamic.base import DynamicModule, copied_parameter, dynamic_class
from nascli.space.hparam import Hparam, Segments, dim_index, take

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
