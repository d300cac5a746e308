"""The linear kind: searchable output and input features; the input may follow flattened feature maps."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nascli.space import settings as check
from nascli.space.hparam import Dim, Hparam, Segments, dim_index, dim_scale, take
from nascli.space.kinds.base import DynamicModule, LayerKind, ModeDefaults, copied_parameter, move_channels, register


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


class LinearKind(LayerKind):
    dynamic = {nn.Linear: DynamicLinear}
    settings = {"features_ratio": check.ratios, "feature_divisor": check.divisor, "couple_flatten": check.flag}
    ratio_setting, divisor_setting = "features_ratio", "feature_divisor"
    timed = True

    def default_settings(self, mode: ModeDefaults) -> dict[str, Any]:
        return {"features_ratio": mode.ratios, "feature_divisor": mode.divisor}

    def slots(self, module: nn.Module) -> dict[str, int]:
        return {"out": module.out_features, "in": module.in_features}

    def slot_attr(self, module: nn.Module, slot: str) -> str:
        return f"{slot}_features"

    def trace(self, walker, node, name, module) -> None:
        walker.consume(name, "in", node.args[0] if node.args else None, -1)
        shape = walker.shape(node)
        if shape is not None:
            walker.new_slot_output(node, name, len(shape) - 1)

    def dummy_input(self, module: nn.Module) -> tuple[torch.Tensor, ...]:
        return (torch.randn(1, module.in_features),)

    def attach(self, module: nn.Module, dims: dict[str, Dim], layer_hp: Hparam | None) -> None:
        module.attach_hparams(dims["out"], dims["in"])

    def params(self, terms, module, dims, layer_hp, path) -> None:
        terms.add("params", 1, [(dims["out"], 1), (dims["in"], 1)], path)
        if module.bias is not None:
            terms.add("params", 1, [(dims["out"], 1)], path)

    def flops(self, terms, node, module, dims, layer_hp, path) -> None:
        in_shape = terms.shape(node.args[0] if node.args else None)
        if terms.shape(node) is None or in_shape is None:
            return
        rows = math.prod(in_shape[:-1]) // terms.batch  # tokens per sample, batch-first or not
        out = dims["out"] if dims else module.out_features
        inp = dims["in"] if dims else module.in_features
        terms.add("flops", rows, [(out, 1), (inp, 1)], path)

    def latency_layer(self, module, sizes, in_shape) -> tuple[nn.Module, torch.Tensor]:
        out, inp = sizes
        return nn.Linear(inp, out, module.bias is not None), torch.randn(*in_shape[:-1], inp)

    def permute(self, module, slot, perm, offset) -> None:
        if slot == "out":  # an output split into heads holds a head's entries per channel
            scale = dim_scale(module._hp_out)
            move_channels(module.weight, 0, perm, offset, scale)
            move_channels(module.bias, 0, perm, offset, scale)
        else:  # a flattened input holds several entries per channel
            move_channels(module.weight, 1, perm, offset, dim_scale(module._hp_in))


LINEAR = register(LinearKind())
