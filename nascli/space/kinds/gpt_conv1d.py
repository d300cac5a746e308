"""The GPT ``Conv1D`` kind (Hugging Face ``transformers.pytorch_utils.Conv1D``): a linear layer, weight transposed.

GPT-2 and its relatives compute every projection as ``x @ weight + bias`` with ``weight`` of
shape (in, out). It is resolved lazily: transformers is imported by the user's model, never by
nascli. Its rules key is ``transformers.Conv1D`` and it takes the linear settings.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from nascli.space import settings as check
from nascli.space.hparam import Dim, Hparam, Segments, dim_index, dim_scale, take
from nascli.space.kinds.base import DynamicModule, LayerKind, ModeDefaults, copied_parameter, move_channels, register


class _DynamicGPTConv1D(DynamicModule):
    _hparam_fields = (("nf", "_hp_out"), ("nx", "_hp_in"))
    _hp_out: Hparam | Segments
    _hp_in: Dim

    def attach_hparams(self, out: Hparam | Segments, inp: Dim) -> None:
        self._hp_out, self._hp_in = out, inp

    def _active_tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        out = dim_index(self._hp_out)
        return take(take(self.weight, 1, out), 0, dim_index(self._hp_in)), take(self.bias, 0, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._hp_out.active == self.nf and self._hp_in.active == self.nx:
            return super().forward(x)
        weight, bias = self._active_tensors()
        return torch.addmm(bias, x.reshape(-1, x.size(-1)), weight).view(*x.shape[:-1], weight.shape[1])

    def _shrink_to_active(self) -> None:
        weight, bias = self._active_tensors()
        self.weight, self.bias = copied_parameter(weight, self.weight), copied_parameter(bias, self.bias)
        self.nx, self.nf = weight.shape


class GPTConv1DKind(LayerKind):
    lazy_natives = ("transformers.pytorch_utils.Conv1D",)
    mixin = _DynamicGPTConv1D
    settings = {"features_ratio": check.ratios, "feature_divisor": check.divisor}
    ratio_setting, divisor_setting = "features_ratio", "feature_divisor"
    timed = True

    def rule_key(self, native: str) -> str:
        return "transformers.Conv1D"

    def default_settings(self, mode: ModeDefaults) -> dict[str, Any]:
        return {"features_ratio": mode.ratios, "feature_divisor": mode.divisor}

    def slots(self, module: nn.Module) -> dict[str, int]:
        return {"out": module.nf, "in": module.nx}

    def slot_attr(self, module: nn.Module, slot: str) -> str:
        return "nf" if slot == "out" else "nx"

    def trace(self, walker, node, name, module) -> None:
        walker.consume(name, "in", node.args[0] if node.args else None, -1)
        shape = walker.shape(node)
        if shape is not None:
            walker.new_slot_output(node, name, len(shape) - 1)

    def attach(self, module: nn.Module, dims: dict[str, Dim], layer_hp: Hparam | None) -> None:
        module.attach_hparams(dims["out"], dims["in"])

    def params(self, terms, module, dims, layer_hp, path) -> None:
        terms.add("params", 1, [(dims["out"], 1), (dims["in"], 1)], path)
        terms.add("params", 1, [(dims["out"], 1)], path)

    def flops(self, terms, node, module, dims, layer_hp, path) -> None:
        """fvcore counts the addmm: rows times in times out."""
        in_shape = terms.shape(node.args[0] if node.args else None)
        if terms.shape(node) is None or in_shape is None:
            return
        rows = math.prod(in_shape[:-1]) // terms.batch
        out = dims["out"] if dims else module.nf
        inp = dims["in"] if dims else module.nx
        terms.add("flops", rows, [(out, 1), (inp, 1)], path)

    def latency_layer(self, module, sizes, in_shape) -> tuple[nn.Module, torch.Tensor]:
        out, inp = sizes
        return module._native(out, inp), torch.randn(*in_shape[:-1], inp)

    def output_importance(self, module: nn.Module) -> torch.Tensor:
        return module.weight.detach().abs().sum(0, dtype=torch.float32)

    def permute(self, module, slot, perm, offset) -> None:
        if slot == "out":  # an output split into heads holds a head's entries per channel
            scale = dim_scale(module._hp_out)
            move_channels(module.weight, 1, perm, offset, scale)
            move_channels(module.bias, 0, perm, offset, scale)
        else:
            move_channels(module.weight, 0, perm, offset, dim_scale(module._hp_in))


register(GPTConv1DKind())
