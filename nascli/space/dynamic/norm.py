"""Dynamic BatchNorm: its features follow the channel group of the layer before it."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nascli.space.dynamic.base import DynamicModule, copied_parameter
from nascli.space.hparam import Hparam, Segments, dim_index, take


class _DynamicBatchNorm(DynamicModule):
    """Affine parameters and running statistics are sliced as prefixes.

    In training mode the running statistics of the active channels are updated in place through
    the sliced views, so each subnet keeps its share of the full buffers up to date.
    """

    _hparam_fields = (("num_features", "_hp_features"),)
    _hp_features: Hparam | Segments

    def attach_hparams(self, features: Hparam | Segments) -> None:
        self._hp_features = features

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
        keep_stats = (not self.training or self.track_running_stats) and self.running_mean is not None
        mean = take(self.running_mean, 0, index) if keep_stats else None
        var = take(self.running_var, 0, index) if keep_stats else None
        out = F.batch_norm(
            x,
            mean,
            var,
            None if self.weight is None else take(self.weight, 0, index),
            None if self.bias is None else take(self.bias, 0, index),
            use_batch_stats,
            factor,
            self.eps,
        )
        if keep_stats and self.training and not isinstance(index, slice):  # copies were updated: write back
            with torch.no_grad():
                self.running_mean[index] = mean
                self.running_var[index] = var
        return out

    def _shrink_to_active(self) -> None:
        index = dim_index(self._hp_features)
        if self.weight is not None:
            self.weight = copied_parameter(take(self.weight, 0, index), self.weight)
            self.bias = copied_parameter(take(self.bias, 0, index), self.bias)
        if self.running_mean is not None:
            self.running_mean = take(self.running_mean, 0, index).clone()
            self.running_var = take(self.running_var, 0, index).clone()
        self.num_features = self._hp_features.active


class DynamicBatchNorm1d(_DynamicBatchNorm, nn.BatchNorm1d):
    _native = nn.BatchNorm1d


class DynamicBatchNorm2d(_DynamicBatchNorm, nn.BatchNorm2d):
    _native = nn.BatchNorm2d


class DynamicBatchNorm3d(_DynamicBatchNorm, nn.BatchNorm3d):
    _native = nn.BatchNorm3d
