"""The convolution kind: prefix channels, centre-cropped kernels, 1-d to 3-d."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import nascli.nas as mtn
from nascli.space.kinds.conv import ConvKind
from tests.helpers import assert_export_matches, hparam_of
from tests.space.kinds.conformance import assert_kind_conforms
from tests.topologies import Conv1dNet, Conv3dNet, Grouped, Residual


@pytest.mark.parametrize("net", [Residual, Grouped])
def test_conv_kind_keeps_the_layer_kind_contract(net, tmp_path):
    assert_kind_conforms(net, torch.randn(2, 3, 8, 8), ConvKind, tmp_path)


def test_kernel_sizes_keep_the_contract(tmp_path):
    config = mtn.config.AutoNASConfig()
    config["nn.Conv2d"]["*"]["kernel_size"] = (1,)
    assert_kind_conforms(Residual, torch.randn(2, 3, 8, 8), ConvKind, tmp_path, mode=[("autonas", config)])


def _convert_single_conv(conv, x, **rules):
    model = nn.Sequential(nn.Conv2d(x.shape[1], conv.in_channels, 1), conv, nn.Conv2d(conv.out_channels, 4, 1))
    config = mtn.config.AutoNASConfig()
    config["nn.Conv2d"]["*"].update(rules)
    return mtn.convert(model, [("autonas", config)], dummy_input=x)


def test_conv_slices_prefix_channels():
    x = torch.randn(2, 3, 9, 9)
    model = _convert_single_conv(nn.Conv2d(64, 64, 3, padding=1), x, channel_divisor=16).eval()
    mtn.select(model, {"0.out_channels": 32, "1.out_channels": 48})
    conv = model[1]
    hidden = F.conv2d(x, model[0].weight[:32], model[0].bias[:32])
    expected = F.conv2d(hidden, conv.weight[:48, :32], conv.bias[:48], padding=1)
    torch.testing.assert_close(conv(hidden), expected)


def test_kernel_size_is_a_centre_crop_and_keeps_the_output_shape():
    x = torch.randn(2, 3, 11, 11)
    conv = nn.Conv2d(64, 64, 7, padding=3, stride=2)
    model = _convert_single_conv(conv, x, kernel_size=(3, 5)).eval()
    assert hparam_of(model, "1.kernel_size").choices == (3, 5, 7)
    hidden = model[0](x)
    full = model[1](hidden)
    mtn.select(model, {"1.kernel_size": 3})
    cropped = model[1](hidden)
    assert cropped.shape == full.shape
    expected = F.conv2d(hidden, conv.weight[:, :, 2:5, 2:5], conv.bias, stride=2, padding=1)
    torch.testing.assert_close(cropped, expected)
    exported = assert_export_matches(model, x, {"1.kernel_size": min})
    assert exported[1].kernel_size == (3, 3) and exported[1].padding == (1, 1)


def test_kernel_search_skips_convs_whose_padding_does_not_preserve_shape():
    model = _convert_single_conv(nn.Conv2d(64, 64, 5, padding=0), torch.randn(1, 3, 9, 9), kernel_size=(3,))
    assert "1.kernel_size" not in mtn.get_subnet_config(model)


def test_full_size_forward_uses_the_stored_tensors_without_slicing(monkeypatch):
    x = torch.randn(1, 3, 8, 8)
    model = _convert_single_conv(nn.Conv2d(64, 64, 3, padding=1), x).eval()
    mtn.sample(model, max)

    def forbidden(self):
        raise AssertionError("sliced at the full size")

    monkeypatch.setattr(type(model[1]), "_active_tensors", forbidden)
    model(x)


@pytest.mark.parametrize("net, shape", [(Conv1dNet, (2, 4, 16)), (Conv3dNet, (2, 2, 6, 6, 6))])
def test_conv1d_and_conv3d(net, shape):
    x = torch.randn(*shape)
    model = net().eval()
    reference = model(x)
    mtn.convert(model, dummy_input=x[:1])
    torch.testing.assert_close(model.eval()(x), reference)
    assert hparam_of(model, "c1.out_channels").choices == (32, 64)
    for how in ("min", "centroid", "random"):
        assert_export_matches(model, x, how)
