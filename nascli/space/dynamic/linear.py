"""Dynamic Linear: searchable output and input features."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nascli.space.dynamic.base import DynamicModule, copied_parameter
from nascli.space.hparam import Dim, Hparam, Segments, dim_index, take


class DynamicLinear(DynamicModule, nn.Linear):
    _native = nn.Linear
    _hparam_fields = (("out_features", "_hp_out"), ("in_features", "_hp_in"))
    _hp_out: Hparam | Segments  # Segments when the output is chunked
    _hp_in: Dim  # Scaled when it reads flattened feature maps

    def attach_hparams(self, out: Hparam | Segments, inp: Dim) -> None:
        self._hp_out, self._hp_in = out, inp

    def _active_tensors(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        out = dim_index(self._hp_out)
        weight = take(take(self.weight, 0, out), 1, dim_index(self._hp_in))
        return weight, None if self.bias is None else take(self.bias, 0, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._hp_out.active == self.out_features and self._hp_in.active == self.in_features:
            return super().forward(x)
        return F.linear(x, *self._active_tensors())

    def _shrink_to_active(self) -> None:
        weight, bias = self._active_tensors()
        self.weight = copied_parameter(weight, self.weight)
        if bias is not None:
            self.bias = copied_parameter(bias, self.bias)
        self.out_features, self.in_features = weight.shape
