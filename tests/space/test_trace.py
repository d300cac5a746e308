"""Which layer attributes share an hparam, per topology, and exactness of every subnet."""

import pytest
import torch

import nascli.nas as mtn
from nascli.errors import UserInputError
from nascli.space.trace import TraceWarning
from tests.helpers import assert_export_matches, hparam_of
from tests.topologies import (
    MLP,
    ChannelSplit,
    Concat,
    DenseBlock,
    Depthwise,
    Grouped,
    Residual,
    SelfConcat,
    SharedModule,
    SqueezeExcite,
    Untraceable,
)


def _convert(net, x, mode="autonas"):
    model = net().eval()
    reference = model(x)
    mtn.convert(model, mode, dummy_input=x[:1])
    torch.testing.assert_close(model.eval()(x), reference)
    return model


def _same(model, *entries):
    first = hparam_of(model, entries[0])
    return all(hparam_of(model, e) is first for e in entries[1:])


IMAGES = torch.randn(2, 3, 8, 8)


def test_residual_adds_join_one_group():
    model = _convert(Residual, IMAGES)
    assert _same(model, "stem.out_channels", "a2.out_channels", "b2.out_channels", "a1.in_channels", "head.in_channels")
    assert not _same(model, "stem.out_channels", "a1.out_channels")
    assert hparam_of(model, "stem.out_channels").is_configurable
    assert hparam_of(model, "stem.in_channels").choices == (3,)  # model input
    assert hparam_of(model, "head.out_channels").choices == (10,)  # model output
    assert set(mtn.get_subnet_config(model, configurable=True)) == {
        "stem.out_channels",
        "a1.out_channels",
        "b1.out_channels",
    }


def test_squeeze_excite_gate_is_tied_to_the_gated_tensor():
    model = _convert(SqueezeExcite, IMAGES)
    assert _same(model, "conv.out_channels", "expand.out_channels", "reduce.in_channels", "head.in_channels")
    assert not _same(model, "conv.out_channels", "reduce.out_channels")


def test_depthwise_conv_ties_in_and_out():
    model = _convert(Depthwise, IMAGES)
    assert _same(model, "pw1.out_channels", "dw.in_channels", "dw.out_channels", "pw2.in_channels")
    exported = assert_export_matches(model, IMAGES, min)
    assert exported.dw.groups == exported.dw.in_channels == exported.dw.out_channels == 32


def test_grouped_conv_keeps_its_per_group_width():
    model = _convert(Grouped, IMAGES, mode=[("fastnas", mtn.config.FastNASConfig())])
    hp = hparam_of(model, "gc.out_channels")
    assert _same(model, "pw1.out_channels", "gc.in_channels", "gc.out_channels")
    assert all(c % 16 == 0 for c in hp.choices) and hp.choices == (32, 64)
    exported = assert_export_matches(model, IMAGES, min)
    assert exported.gc.groups == 2 and exported.gc.weight.shape == (32, 16, 3, 3)


def test_a_module_called_twice_ties_both_producers():
    model = _convert(SharedModule, IMAGES)
    assert _same(model, "a.out_channels", "b.out_channels", "shared.in_channels")
    for how in ("min", "random", "random"):
        assert_export_matches(model, IMAGES, how)


def test_concatenation_maps_each_input_to_its_range_of_the_consumer():
    model = _convert(Concat, IMAGES)
    assert _same(model, "a.out_channels", "mid.in_channels[0]")
    assert _same(model, "b.out_channels", "mid.in_channels[1]")
    assert not _same(model, "a.out_channels", "b.out_channels")
    assert hparam_of(model, "a.out_channels").is_configurable and hparam_of(model, "b.out_channels").is_configurable
    exported = assert_export_matches(model, IMAGES, {"*": max, "a.*": min})  # a gap inside the consumer
    assert exported.mid.in_channels == 32 + 64
    for how in ("min", "random", "random"):
        assert_export_matches(model, IMAGES, how)


def test_dense_blocks_concatenations_of_concatenations_and_norms_over_them():
    model = _convert(DenseBlock, IMAGES)
    assert _same(model, "stem.out_channels", "norm2.num_features[0]", "conv3.in_channels[0]")
    assert _same(model, "conv1.out_channels", "norm2.num_features[1]", "conv3.in_channels[1]")
    assert _same(model, "conv2.out_channels", "conv3.in_channels[2]")
    model.train()
    mtn.sample(model, {"*": max, "stem.*": min})
    model(IMAGES)  # running statistics of a non-prefix subset are written back
    for how in ("min", "centroid", "random", "random"):
        assert_export_matches(model, IMAGES, how)


def test_a_tensor_concatenated_with_itself():
    model = _convert(SelfConcat, IMAGES)
    assert _same(model, "a.out_channels", "b.in_channels[0]", "b.in_channels[1]")
    exported = assert_export_matches(model, IMAGES, "min")
    assert exported.b.in_channels == 2 * exported.a.out_channels


def test_unsupported_ops_freeze_only_what_they_touch():
    model = _convert(ChannelSplit, IMAGES)
    assert hparam_of(model, "a.out_channels").choices == (64,)
    assert hparam_of(model, "c.out_channels").is_configurable
    assert_export_matches(model, IMAGES, min)


def test_linear_features_between_inputs_and_outputs_are_searchable():
    x = torch.randn(4, 32)
    model = _convert(MLP, x)
    assert _same(model, "fc1.out_features", "bn.num_features", "fc2.in_features")
    assert hparam_of(model, "fc1.in_features").choices == (32,)
    assert hparam_of(model, "fc3.out_features").choices == (10,)
    assert hparam_of(model, "fc2.out_features").choices == (64, 96)
    for how in ("min", "centroid", "random"):
        assert_export_matches(model, x, how)


@pytest.mark.parametrize(
    "net", [Residual, SqueezeExcite, Depthwise, Grouped, SharedModule, Concat, DenseBlock, SelfConcat, ChannelSplit]
)
def test_every_subnet_exports_exactly(net):
    model = _convert(net, IMAGES, mode="fastnas")
    for how in ("min", "centroid", "random", "random", "random"):
        assert_export_matches(model, IMAGES, how)


def test_untraceable_model_is_one_clear_error():
    class Branchy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 1)

        def forward(self, x):
            if x.sum() > 0:
                return self.conv(x)
            return x

    with pytest.raises(UserInputError, match="cannot trace Branchy with torch.fx"):
        mtn.convert(Branchy(), dummy_input=IMAGES[:1])


def test_a_dummy_input_of_the_wrong_shape_is_one_clear_error():
    with pytest.raises(UserInputError, match=r"forward failed on a dummy input of shape \(1, 5, 8, 8\)"):
        mtn.convert(Residual(), dummy_input=torch.randn(1, 5, 8, 8))


def test_an_untraceable_block_becomes_a_leaf_and_only_its_channels_freeze():
    with pytest.warns(TraceWarning, match="block cannot be traced with torch.fx"):
        model = _convert(Untraceable, IMAGES)
    assert hparam_of(model, "stem.out_channels").choices == (64,)
    assert hparam_of(model, "mid.in_channels").choices == (64,)
    assert hparam_of(model, "mid.out_channels").is_configurable
    assert hparam_of(model, "block.conv.out_channels").choices == (64,)
    for how in ("min", "random"):
        assert_export_matches(model, IMAGES, how)


def test_verbose_summary_explains_every_fixed_dimension(capsys):
    with pytest.warns(TraceWarning):
        model = _convert(Untraceable, IMAGES)
    mtn.print_search_space_summary(model, verbose=True)
    out = capsys.readouterr().out
    explained = out.split("Fixed dimensions and why")[1]
    assert "stem.in_channels (1)" in explained and "model input" in explained
    assert "head.out_channels (1)" in explained and "model output" in explained
    assert "block.conv.out_channels" in explained and "inside block, which fx cannot trace" in explained
    assert "block (kept whole)" in explained
    model = _convert(ChannelSplit, IMAGES)
    mtn.print_search_space_summary(model, verbose=True)
    assert "unsupported operation Tensor.chunk" in capsys.readouterr().out
