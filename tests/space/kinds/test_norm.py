"""The norm kind: batch, instance, layer and group norms follow the channels they normalize."""

import pytest
import torch
from torch import nn

import nascli.nas as mtn
from nascli.space.kinds.norm import NormKind
from tests.space.kinds.conformance import assert_kind_conforms
from tests.topologies import MLP, ChannelsLastBlock, GroupAndInstanceNorm


def _batch_norm_net():
    return nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.Conv2d(64, 10, 1))


@pytest.mark.parametrize(
    "net, shape",
    [(_batch_norm_net, (2, 3, 8, 8)), (GroupAndInstanceNorm, (2, 3, 8, 8)), (ChannelsLastBlock, (2, 3, 8, 8)),
     (MLP, (4, 32))],
)  # fmt: skip
def test_norm_kind_keeps_the_layer_kind_contract(net, shape, tmp_path):
    model = net()
    for module in model.modules():  # non-trivial statistics and affine parameters
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
            module.weight.data.uniform_(0.1, 2)
    assert_kind_conforms(lambda: model, torch.randn(*shape), NormKind, tmp_path, mode="fastnas")


def test_batchnorm_updates_running_stats_of_active_channels_only():
    model = nn.Sequential(nn.Conv2d(3, 64, 1), nn.BatchNorm2d(64), nn.Conv2d(64, 4, 1))
    mtn.convert(model, dummy_input=torch.randn(1, 3, 4, 4))
    mtn.select(model, {"0.out_channels": 32})
    model.train()
    with mtn.random_sampling(model, enabled=False):  # select() leaves drawing on, as in ModelOpt
        model(torch.randn(8, 3, 4, 4))
    bn = model[1]
    assert bn.running_mean[:32].abs().sum() > 0
    assert bn.running_mean[32:].abs().sum() == 0
    assert bn.num_batches_tracked.item() == 1


def test_a_narrow_channels_last_batch_norm_trains_in_nchw_to_the_same_outputs_gradients_and_statistics(monkeypatch):
    """8 of 16 channels in NHWC take PyTorch's slow CPU kernels; the norm runs them in NCHW instead and hands
    back NHWC, with the outputs, gradients and running statistics of the norm in NHWC."""
    torch.manual_seed(0)
    x = torch.randn(4, 3, 6, 6).contiguous(memory_format=torch.channels_last)
    model = nn.Sequential(nn.Conv2d(3, 16, 1), nn.BatchNorm2d(16), nn.Conv2d(16, 4, 1))
    model.to(memory_format=torch.channels_last)
    config = mtn.config.AutoNASConfig()
    config["nn.Conv2d"]["*"]["channel_divisor"] = 8
    mtn.convert(model, [("autonas", config)], dummy_input=x[:1])
    mtn.select(model, {"0.out_channels": 8})
    reference = mtn.export_copy(model).train()
    model.train()
    layouts = []
    real = torch.nn.functional.batch_norm

    def spy(t, *args, **kwargs):
        layouts.append(t.is_contiguous())
        return real(t, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "batch_norm", spy)
    with mtn.random_sampling(model, enabled=False):
        out = model(x)
    monkeypatch.undo()
    expected = reference(x)
    assert layouts == [True] and out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, expected)
    grad = torch.randn_like(out)
    out.backward(grad)
    expected.backward(grad)
    torch.testing.assert_close(model[1].weight.grad[:8], reference[1].weight.grad)
    torch.testing.assert_close(model[0].weight.grad[:8], reference[0].weight.grad)
    torch.testing.assert_close(model[1].running_mean[:8], reference[1].running_mean)
    torch.testing.assert_close(model[1].running_var[:8], reference[1].running_var)
    assert model[1].running_mean[8:].eq(0).all() and model[1].running_var[8:].eq(1).all()
    assert model[1].num_batches_tracked.item() == reference[1].num_batches_tracked.item()
    monkeypatch.setattr(torch.nn.functional, "batch_norm", spy)
    with mtn.random_sampling(model, enabled=False), torch.no_grad():  # recalibration: no backward to speed up
        model(x)
    assert layouts == [True, False]
