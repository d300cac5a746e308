"""Dynamic BatchNorm: its features follow the channel group of the layer before it."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nascli.space.dynamic.base import DynamicModule, copied_parameter
from nascli.space.hparam import Hparam


class _DynamicBatchNorm(DynamicModule):
    """Affine parameters and running statistics are sliced as prefixes.

    In training mode the running statistics of the active channels are updated in place through
    the sliced views, so each subnet keeps its share of the full buffers up to date.
    """

    _hparam_fields = (("num_features", "_hp_features"),)
    _hp_features: Hparam

    def attach_hparams(self, features: Hparam) -> None:
        self._hp_features = features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self._hp_features.active
        if n == self.num_features:
            return super().forward(x)
        self._check_input_dim(x)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        use_batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        keep_stats = not self.training or self.track_running_stats
        return F.batch_norm(
            x,
            self.running_mean[:n] if keep_stats and self.running_mean is not None else None,
            self.running_var[:n] if keep_stats and self.running_var is not None else None,
            None if self.weight is None else self.weight[:n],
            None if self.bias is None else self.bias[:n],
            use_batch_stats,
            factor,
            self.eps,
        )

    def _shrink_to_active(self) -> None:
        n = self._hp_features.active
        if self.weight is not None:
            self.weight = copied_parameter(self.weight[:n], self.weight)
            self.bias = copied_parameter(self.bias[:n], self.bias)
        if self.running_mean is not None:
            self.running_mean = self.running_mean[:n].clone()
            self.running_var = self.running_var[:n].clone()
        self.num_features = n


class DynamicBatchNorm1d(_DynamicBatchNorm, nn.BatchNorm1d):
    _native = nn.BatchNorm1d


class DynamicBatchNorm2d(_DynamicBatchNorm, nn.BatchNorm2d):
    _native = nn.BatchNorm2d


class DynamicBatchNorm3d(_DynamicBatchNorm, nn.BatchNorm3d):
    _native = nn.BatchNorm3d
