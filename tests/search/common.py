"""A small digits-shaped batch and the ResNet-20 search space the search tests share."""

import torch
from torch.utils.data import DataLoader, TensorDataset

import nascli.nas as mtn
from nascli.models import resnet20

X, Y = torch.randn(64, 1, 8, 8), torch.randint(0, 10, (64,))
LOADER = DataLoader(TensorDataset(X, Y), batch_size=16)


def converted_resnet20(mode: str):
    """resnet20 (width 16) converted in ``mode`` with channels in steps of 8."""
    torch.manual_seed(0)
    config = mtn.config.AutoNASConfig() if mode == "autonas" else mtn.config.FastNASConfig()
    config["nn.Conv2d"]["*"]["channel_divisor"] = 8
    return mtn.convert(resnet20(in_channels=1, width=16), [(mode, config)], dummy_input=X[:1])
