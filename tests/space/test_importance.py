import torch

import nascli.nas as mtn
from nascli.models import resnet20
from nascli.space.importance import sort_channels_by_importance
from tests.helpers import assert_export_matches
from tests.topologies import (
    AttentionBlock,
    ChannelsLastBlock,
    Decoder,
    DenseBlock,
    Depthwise,
    FlattenHead,
    GatedUnit,
    GroupAndInstanceNorm,
    Grouped,
)

X = torch.randn(4, 1, 8, 8)


def test_sorting_keeps_the_full_model_output_and_puts_important_channels_first():
    torch.manual_seed(0)
    model = mtn.convert(resnet20(in_channels=1, width=64), "fastnas", dummy_input=X[:1]).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.uniform_(-1, 1)
            m.running_mean.uniform_(-1, 1)
    mtn.sample(model, "max")
    before = model(X)
    group = [m for m in model.modules() if getattr(m, "_hp_features", None) is model.bn1._hp_features]
    assert len(group) > 1  # the stem's BN and the residual stream's BNs share the group

    def importance():
        return torch.stack([m.weight.detach().abs() for m in group]).sum(0)

    kept_before = importance().sort(descending=True).values[:16]
    orders = sort_channels_by_importance(model)
    assert "conv1.out_channels" in orders and sorted(orders["conv1.out_channels"]) == list(range(64))
    torch.testing.assert_close(model(X), before, atol=1e-5, rtol=1e-5)
    after = importance()
    assert torch.all(after[:-1] >= after[1:])
    torch.testing.assert_close(after[:16], kept_before)
    assert_export_matches(model, X, "min")


def test_depthwise_and_grouped_groups_permute_consistently():
    x = torch.randn(2, 3, 8, 8)
    for net in (Depthwise, Grouped, DenseBlock):
        model = mtn.convert(net(), "fastnas", dummy_input=x[:1]).eval()
        before = model(x)
        sort_channels_by_importance(model)
        torch.testing.assert_close(model(x), before, atol=1e-5, rtol=1e-5)
        assert_export_matches(model, x, "min")


def test_every_layer_kind_permutes_consistently():
    config = mtn.config.FastNASConfig()
    config["nn.Linear"]["*"]["couple_flatten"] = True
    cases = [(Decoder, (2, 3, 8, 8)), (GroupAndInstanceNorm, (2, 3, 8, 8)), (ChannelsLastBlock, (2, 3, 8, 8)),
             (AttentionBlock, (2, 5, 16)), (FlattenHead, (2, 3, 8, 8)), (GatedUnit, (2, 3, 8, 8))]  # fmt: skip
    for net, shape in cases:
        x = torch.randn(*shape)
        model = net().eval()
        for m in model.modules():  # non-trivial affine parameters, so a wrong permutation shows
            if isinstance(m, (torch.nn.GroupNorm, torch.nn.LayerNorm, torch.nn.InstanceNorm2d, torch.nn.BatchNorm2d)):
                m.weight.data.uniform_(-1, 1)
                m.bias.data.uniform_(-1, 1)
        model = mtn.convert(model, [("fastnas", config)], dummy_input=x[:1]).eval()
        before = model(x)
        orders = sort_channels_by_importance(model)
        assert any(order != sorted(order) for order in orders.values()), net.__name__
        torch.testing.assert_close(model(x), before, atol=1e-5, rtol=1e-5)
        assert_export_matches(model, x, "min")
