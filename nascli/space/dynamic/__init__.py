"""Dynamic layers and the map from each native layer type to its dynamic version."""

from torch import nn

from nascli.space.dynamic.base import DynamicModule
from nascli.space.dynamic.container import DynamicSequential
from nascli.space.dynamic.conv import DynamicConv1d, DynamicConv2d, DynamicConv3d
from nascli.space.dynamic.linear import DynamicLinear
from nascli.space.dynamic.norm import DynamicBatchNorm1d, DynamicBatchNorm2d, DynamicBatchNorm3d

DYNAMIC_TYPES: dict[type[nn.Module], type[nn.Module]] = {
    nn.Conv1d: DynamicConv1d,
    nn.Conv2d: DynamicConv2d,
    nn.Conv3d: DynamicConv3d,
    nn.Linear: DynamicLinear,
    nn.BatchNorm1d: DynamicBatchNorm1d,
    nn.BatchNorm2d: DynamicBatchNorm2d,
    nn.BatchNorm3d: DynamicBatchNorm3d,
    nn.Sequential: DynamicSequential,
}

__all__ = ["DYNAMIC_TYPES", "DynamicModule"]
