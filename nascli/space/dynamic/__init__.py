"""Dynamic layers and the map from each native layer type to its dynamic version."""

from torch import nn

from nascli.space.dynamic.activation import DYNAMIC_ACTIVATIONS
from nascli.space.dynamic.attention import DynamicMultiheadAttention
from nascli.space.dynamic.base import DynamicModule
from nascli.space.dynamic.container import DynamicSequential
from nascli.space.dynamic.conv import (
    DynamicConv1d,
    DynamicConv2d,
    DynamicConv3d,
    DynamicConvTranspose1d,
    DynamicConvTranspose2d,
    DynamicConvTranspose3d,
)
from nascli.space.dynamic.linear import DynamicLinear
from nascli.space.dynamic.norm import (
    DynamicBatchNorm1d,
    DynamicBatchNorm2d,
    DynamicBatchNorm3d,
    DynamicGroupNorm,
    DynamicInstanceNorm1d,
    DynamicInstanceNorm2d,
    DynamicInstanceNorm3d,
    DynamicLayerNorm,
    DynamicSyncBatchNorm,
)

DYNAMIC_TYPES: dict[type[nn.Module], type[nn.Module]] = {
    nn.Conv1d: DynamicConv1d,
    nn.Conv2d: DynamicConv2d,
    nn.Conv3d: DynamicConv3d,
    nn.ConvTranspose1d: DynamicConvTranspose1d,
    nn.ConvTranspose2d: DynamicConvTranspose2d,
    nn.ConvTranspose3d: DynamicConvTranspose3d,
    nn.Linear: DynamicLinear,
    nn.MultiheadAttention: DynamicMultiheadAttention,
    nn.BatchNorm1d: DynamicBatchNorm1d,
    nn.BatchNorm2d: DynamicBatchNorm2d,
    nn.BatchNorm3d: DynamicBatchNorm3d,
    nn.SyncBatchNorm: DynamicSyncBatchNorm,
    nn.InstanceNorm1d: DynamicInstanceNorm1d,
    nn.InstanceNorm2d: DynamicInstanceNorm2d,
    nn.InstanceNorm3d: DynamicInstanceNorm3d,
    nn.LayerNorm: DynamicLayerNorm,
    nn.GroupNorm: DynamicGroupNorm,
    nn.Sequential: DynamicSequential,
    **DYNAMIC_ACTIVATIONS,
}

__all__ = ["DYNAMIC_TYPES", "DynamicModule"]
