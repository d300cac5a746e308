"""``train.channels_last``: auto trains NHWC where a copy of the model runs a training sample so, and
keeps NCHW for a model that views its feature maps or takes no images, and for odd batches on several CPU
threads."""

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import nascli.nas as mtn
from nascli.models import resnet20
from nascli.train.memory_format import channels_last_for

IMAGES = TensorDataset(torch.randn(4, 3, 8, 8), torch.zeros(4, dtype=torch.long))


class ViewsItsFeatureMap(nn.Module):
    """Flattens a feature map with ``.view``, which needs NCHW-contiguous memory."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.head = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(4 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.head(y.view(y.shape[0], -1))


def test_auto_takes_nhwc_for_a_supernet_that_runs_it_and_leaves_the_model_as_it_was():
    model = mtn.convert(resnet20(in_channels=3, width=8), dummy_input=IMAGES[0][0][None])
    assert channels_last_for(model, "auto", IMAGES, 2)
    assert not model.conv1.weight.is_contiguous(memory_format=torch.channels_last)  # only a copy was tried


def test_auto_keeps_nchw_for_a_model_that_views_a_feature_map():
    model = ViewsItsFeatureMap()
    with pytest.raises(RuntimeError, match="view"):
        model.to(memory_format=torch.channels_last)(IMAGES[:2][0].contiguous(memory_format=torch.channels_last))
    assert not channels_last_for(ViewsItsFeatureMap(), "auto", IMAGES, 2)


def test_auto_keeps_nchw_without_convolutions_or_images_and_a_setting_is_kept():
    tokens = TensorDataset(torch.zeros(4, 6, dtype=torch.long), torch.zeros(4, 6, dtype=torch.long))
    assert not channels_last_for(nn.Sequential(nn.Embedding(8, 4), nn.Linear(4, 8)), "auto", tokens, 2)
    assert not channels_last_for(resnet20(in_channels=3, width=8), "auto", tokens, 2)
    assert channels_last_for(ViewsItsFeatureMap(), True, IMAGES, 3)
    assert not channels_last_for(resnet20(in_channels=3, width=8), False, IMAGES, 2)


def test_auto_keeps_nchw_for_an_odd_batch_on_several_cpu_threads(monkeypatch):
    """oneDNN's NHWC convolutions of odd batches abort the process on several threads (memory_format.py)."""
    model = mtn.convert(resnet20(in_channels=3, width=8), dummy_input=IMAGES[0][0][None])
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert not channels_last_for(model, "auto", IMAGES, 43)
    assert channels_last_for(model, "auto", IMAGES, 42)
    assert channels_last_for(model, True, IMAGES, 43)  # a setting is kept
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert channels_last_for(model, "auto", IMAGES, 43)
