"""The norm kind (batch, instance, layer, group norms): their features follow the channels they normalize.

Norms take no settings: they are never the producer of a channel group, only members of one.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from nascli.space.hparam import Dim, Hparam, Segments, dim_index, take
from nascli.space.kinds.base import (
    DynamicModule,
    LayerKind,
    ModeDefaults,
    copied_parameter,
    copied_tensor,
    dynamic_class,
    move_channels,
    register,
)

MaybeTensor = torch.Tensor | None  # a norm's statistics and affine parameters may be absent


class _DynamicNorm(DynamicModule):
    """A norm over one channel dim: affine parameters and running statistics are sliced as prefixes.

    In training mode the running statistics of the active channels are updated in place through
    the sliced views (or through copies, written back, when concatenated parts leave gaps), so
    each subnet keeps its share of the full buffers up to date.
    """

    _hp_features: Hparam | Segments

    def attach_hparams(self, features: Hparam | Segments) -> None:
        self._hp_features = features

    def _affine(self, index: Any) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        weight, bias = getattr(self, "weight", None), getattr(self, "bias", None)
        return (None if weight is None else take(weight, 0, index), None if bias is None else take(bias, 0, index))

    def _stats(self, index: Any, keep: bool) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if not keep or getattr(self, "running_mean", None) is None:
            return None, None
        return take(self.running_mean, 0, index), take(self.running_var, 0, index)

    def _write_back(self, index: Any, mean: torch.Tensor | None, var: torch.Tensor | None) -> None:
        if mean is not None and self.training and not isinstance(index, slice):
            with torch.no_grad():
                self.running_mean[index] = mean
                self.running_var[index] = var

    def _shrink_to_active(self) -> None:
        index = dim_index(self._hp_features)
        for name in ("weight", "bias"):
            param = getattr(self, name, None)
            if param is not None:
                setattr(self, name, copied_parameter(take(param, 0, index), param))
        for name in ("running_mean", "running_var"):
            buffer = getattr(self, name, None)
            if buffer is not None:
                setattr(self, name, copied_tensor(take(buffer, 0, index), buffer))
        setattr(self, self._hparam_fields[0][0], self._active_size())

    def _active_size(self) -> Any:
        return self._hp_features.active


#: below this many channels, PyTorch's CPU batch norm in channels-last layout trains slowly: its forward and
#: backward took 7.7 ms for 8 channels at 28 x 28 (batch 128, 2 threads) against 2.5 ms for the
#: same norm in NCHW with both layout copies; from 16 channels on the copies cost as much or more than they
#: save (docs/benchmarks.md, "Supernet training steps against ModelOpt's"). A norm at its full width keeps
#: the native layer's forward, whatever its channels.
CHANNELS_LAST_NORM_MIN_CHANNELS = 16


def _narrow_channels_last_on_cpu(x: torch.Tensor) -> bool:
    """Whether a training batch norm of ``x`` runs faster in NCHW, copied there and back (with autograd on:
    the slow kernel is the backward, so forwards alone, as in batch-norm recalibration, stay as they are)."""
    return (
        torch.is_grad_enabled()
        and x.device.type == "cpu"
        and x.dim() == 4
        and x.shape[1] < CHANNELS_LAST_NORM_MIN_CHANNELS
        and not x.is_contiguous()
        and x.is_contiguous(memory_format=torch.channels_last)
    )


class _DynamicBatchNorm(_DynamicNorm):
    _hparam_fields = (("num_features", "_hp_features"),)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._hp_features.active == self.num_features:
            return super().forward(x)
        self._check_input_dim(x)
        index = dim_index(self._hp_features)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        use_batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        mean, var = self._stats(index, keep=not self.training or self.track_running_stats)
        out = self._normalize(x, mean, var, *self._affine(index), use_batch_stats, factor)
        self._write_back(index, mean, var)
        return out

    def _normalize(
        self,
        x: torch.Tensor,
        mean: MaybeTensor,
        var: MaybeTensor,
        weight: MaybeTensor,
        bias: MaybeTensor,
        use_batch_stats: bool,
        factor: float,
    ) -> torch.Tensor:
        if use_batch_stats and _narrow_channels_last_on_cpu(x):
            x = x.contiguous()
            out = F.batch_norm(x, mean, var, weight, bias, use_batch_stats, factor, self.eps)
            return out.contiguous(memory_format=torch.channels_last)
        return F.batch_norm(x, mean, var, weight, bias, use_batch_stats, factor, self.eps)


DynamicBatchNorm1d = dynamic_class(_DynamicBatchNorm, nn.BatchNorm1d)
DynamicBatchNorm2d = dynamic_class(_DynamicBatchNorm, nn.BatchNorm2d)
DynamicBatchNorm3d = dynamic_class(_DynamicBatchNorm, nn.BatchNorm3d)


class _DynamicSyncBatchNorm(_DynamicBatchNorm):
    """Batch statistics of the active channels are synchronized across processes, as the native layer does.

    Like ``nn.SyncBatchNorm``: only while training with a process group of several ranks (on an
    accelerator); otherwise it is a batch norm.
    """

    def _normalize(
        self,
        x: torch.Tensor,
        mean: MaybeTensor,
        var: MaybeTensor,
        weight: MaybeTensor,
        bias: MaybeTensor,
        use_batch_stats: bool,
        factor: float,
    ) -> torch.Tensor:
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        if not (use_batch_stats and self.training and distributed):
            return super()._normalize(x, mean, var, weight, bias, use_batch_stats, factor)
        group = self.process_group or torch.distributed.group.WORLD
        world = torch.distributed.get_world_size(group)
        if world == 1:
            return super()._normalize(x, mean, var, weight, bias, use_batch_stats, factor)
        if x.device.type == "cpu":  # as the native layer: synchronized statistics need an accelerator
            raise ValueError("SyncBatchNorm expected input tensor to be on GPU or XPU")
        from torch.nn.modules._functions import SyncBatchNorm as sync_batch_norm

        return sync_batch_norm.apply(x, weight, bias, mean, var, self.eps, factor, group, world)


DynamicSyncBatchNorm = dynamic_class(_DynamicSyncBatchNorm, nn.SyncBatchNorm)


class _DynamicInstanceNorm(_DynamicNorm):
    _hparam_fields = (("num_features", "_hp_features"),)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._hp_features.active == self.num_features:
            return super().forward(x)
        index = dim_index(self._hp_features)
        unbatched = x.dim() == self._get_no_batch_dim()
        x = x.unsqueeze(0) if unbatched else x
        mean, var = self._stats(index, keep=True)
        momentum = self.momentum if self.momentum is not None else 0.0
        use_input_stats = self.training or not self.track_running_stats
        out = F.instance_norm(x, mean, var, *self._affine(index), use_input_stats, momentum, self.eps)
        self._write_back(index, mean, var)
        return out.squeeze(0) if unbatched else out


DynamicInstanceNorm1d = dynamic_class(_DynamicInstanceNorm, nn.InstanceNorm1d)
DynamicInstanceNorm2d = dynamic_class(_DynamicInstanceNorm, nn.InstanceNorm2d)
DynamicInstanceNorm3d = dynamic_class(_DynamicInstanceNorm, nn.InstanceNorm3d)


class DynamicLayerNorm(_DynamicNorm, nn.LayerNorm):
    """A layer norm over the last dimension only (``normalized_shape`` of length one): it is the channels."""

    _native = nn.LayerNorm
    _hparam_fields = (("normalized_shape", "_hp_features"),)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._hp_features.active == self.normalized_shape[0]:
            return super().forward(x)
        active = self._hp_features.active
        return F.layer_norm(x, (active,), *self._affine(dim_index(self._hp_features)), self.eps)

    def _active_size(self) -> Any:
        return (self._hp_features.active,)


class DynamicGroupNorm(_DynamicNorm, nn.GroupNorm):
    """The number of groups stays; the channels per group follow the hparam (choices divide evenly)."""

    _native = nn.GroupNorm
    _hparam_fields = (("num_channels", "_hp_features"),)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._hp_features.active == self.num_channels:
            return super().forward(x)
        return F.group_norm(x, self.num_groups, *self._affine(dim_index(self._hp_features)), self.eps)


class NormKind(LayerKind):
    dynamic = {
        nn.BatchNorm1d: DynamicBatchNorm1d,
        nn.BatchNorm2d: DynamicBatchNorm2d,
        nn.BatchNorm3d: DynamicBatchNorm3d,
        nn.SyncBatchNorm: DynamicSyncBatchNorm,
        nn.InstanceNorm1d: DynamicInstanceNorm1d,
        nn.InstanceNorm2d: DynamicInstanceNorm2d,
        nn.InstanceNorm3d: DynamicInstanceNorm3d,
        nn.LayerNorm: DynamicLayerNorm,
        nn.GroupNorm: DynamicGroupNorm,
    }
    settings = {}
    timed = True

    def default_settings(self, mode: ModeDefaults) -> dict[str, Any]:
        return {}

    def slots(self, module: nn.Module) -> dict[str, int]:
        if isinstance(module, nn.LayerNorm):  # only a norm over the last dim normalizes the channels
            return {"features": module.normalized_shape[0]} if len(module.normalized_shape) == 1 else {}
        return {"features": module.num_channels if isinstance(module, nn.GroupNorm) else module.num_features}

    def slot_attr(self, module: nn.Module, slot: str) -> str:
        if isinstance(module, nn.LayerNorm):
            return "normalized_shape"
        return "num_channels" if isinstance(module, nn.GroupNorm) else "num_features"

    def trace(self, walker, node, name, module) -> None:
        arg = node.args[0] if node.args else None
        layer_norm = isinstance(module, nn.LayerNorm)
        per_position = layer_norm and len(module.normalized_shape) == 1  # a norm over the last dim alone
        walker.consume(name, "features", arg, -1 if layer_norm else 1, per_position=per_position)
        walker.passthrough(node, arg)

    def channel_multiple(self, module: nn.Module) -> int:
        """A group norm keeps its number of groups, so its channels stay a multiple of it."""
        return module.num_groups if isinstance(module, nn.GroupNorm) else 1

    def attach(self, module: nn.Module, dims: dict[str, Dim], layer_hp: Hparam | None) -> None:
        module.attach_hparams(dims["features"])

    def params(self, terms, module, dims, layer_hp, path) -> None:
        affine = sum(getattr(module, p, None) is not None for p in ("weight", "bias"))
        terms.add("params", affine, [(dims["features"], 1)], path)

    def flops(self, terms, node, module, dims, layer_hp, path) -> None:
        """A batch norm folds into the layer before it at deployment: no flops of its own."""
        arg = node.args[0] if node.args else None
        in_shape = terms.shape(arg)
        if isinstance(module, _BatchNorm) or terms.shape(node) is None or in_shape is None:
            return
        terms.norm_flops(arg, in_shape, getattr(module, "weight", None) is not None, path)

    def latency_layer(self, module, sizes, in_shape) -> tuple[nn.Module, torch.Tensor]:
        (features,) = sizes
        m = module
        if isinstance(m, nn.LayerNorm):
            return nn.LayerNorm(features, m.eps, m.elementwise_affine, m.bias is not None), torch.randn(
                *in_shape[:-1], features
            )
        if isinstance(m, nn.GroupNorm):
            layer = nn.GroupNorm(m.num_groups, features, m.eps, m.affine)
        else:
            layer = m._native(features, m.eps, m.momentum, m.affine, m.track_running_stats).eval()
        return layer, torch.randn(in_shape[0], features, *in_shape[2:])

    def scale_importance(self, module: nn.Module) -> torch.Tensor | None:
        """A batch norm's |gamma|: how much each channel passes on after normalization."""
        if isinstance(module, _BatchNorm) and module.weight is not None:
            return module.weight.detach().abs().float()
        return None

    def permutation_block(self, module: nn.Module) -> int:
        """A group norm's channels move in whole groups, so each keeps its statistics."""
        return module.num_channels // module.num_groups if isinstance(module, nn.GroupNorm) else 1

    def permute(self, module, slot, perm, offset) -> None:
        for name in ("weight", "bias", "running_mean", "running_var"):
            move_channels(getattr(module, name, None), 0, perm, offset)


register(NormKind())
