"""Which layer attributes share an hparam, per topology, and exactness of every subnet."""

import pytest
import torch
import torchvision

import nascli.nas as mtn
from nascli.cost.fvcore_count import fvcore_flops
from nascli.cost.model import cost_model
from nascli.errors import UserInputError
from nascli.space.space import get_space
from nascli.space.trace import TraceWarning
from tests.helpers import assert_export_matches, hparam_of
from tests.topologies import (
    MLP,
    AttentionBlock,
    ChannelsLastBlock,
    ChannelSplit,
    Concat,
    Decoder,
    DenseBlock,
    Depthwise,
    FlattenHead,
    GatedUnit,
    GroupAndInstanceNorm,
    Grouped,
    MaskedAttention,
    Residual,
    SelfConcat,
    SharedModule,
    SqueezeExcite,
    SyncNorm,
    TokenMixer,
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
    exported = assert_export_matches(model, IMAGES, {"a.*": min, "*": max})  # a gap inside the consumer
    assert exported.mid.in_channels == 32 + 64
    for how in ("min", "random", "random"):
        assert_export_matches(model, IMAGES, how)


def test_dense_blocks_concatenations_of_concatenations_and_norms_over_them():
    model = _convert(DenseBlock, IMAGES)
    assert _same(model, "stem.out_channels", "norm2.num_features[0]", "conv3.in_channels[0]")
    assert _same(model, "conv1.out_channels", "norm2.num_features[1]", "conv3.in_channels[1]")
    assert _same(model, "conv2.out_channels", "conv3.in_channels[2]")
    model.train()
    mtn.sample(model, {"stem.*": min, "*": max})
    with mtn.random_sampling(model, enabled=False):  # a train-mode forward of this subnet, not a drawn one
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
    assert hparam_of(model, "a.out_channels[0]").choices == (32,)  # one chunk is repeated: fixed
    assert hparam_of(model, "a.out_channels[1]") is hparam_of(model, "a.out_channels[0]")
    assert hparam_of(model, "c.out_channels").is_configurable
    assert_export_matches(model, IMAGES, min)


def test_chunks_of_the_channels_share_one_hparam_repeated_in_the_chunked_tensor():
    model = _convert(GatedUnit, IMAGES)
    part = hparam_of(model, "conv.out_channels[0]")
    assert part.choices == (32, 48, 64)
    assert _same(model, "conv.out_channels[0]", "conv.out_channels[1]", "bn.num_features[0]", "bn.num_features[1]",
                 "head.in_channels")  # fmt: skip
    exported = assert_export_matches(model, IMAGES, "min")
    assert exported.conv.out_channels == 64 and exported.head.in_channels == 32
    for how in ("centroid", "random", "random"):
        assert_export_matches(model, IMAGES, how)


def test_linear_features_between_inputs_and_outputs_are_searchable():
    x = torch.randn(4, 32)
    model = _convert(MLP, x)
    assert _same(model, "fc1.out_features", "bn.num_features", "fc2.in_features")
    assert hparam_of(model, "fc1.in_features").choices == (32,)
    assert hparam_of(model, "fc3.out_features").choices == (10,)
    assert hparam_of(model, "fc2.out_features").choices == (64, 96)
    for how in ("min", "centroid", "random"):
        assert_export_matches(model, x, how)


def test_transposed_convs_resize_like_convs_and_a_depthwise_one_ties_in_and_out():
    model = _convert(Decoder, IMAGES)
    assert _same(model, "down.out_channels", "up.in_channels")
    assert _same(model, "up.out_channels", "refine.in_channels", "refine.out_channels", "head.in_channels[1]")
    assert _same(model, "stem.out_channels", "down.in_channels", "head.in_channels[0]")
    assert hparam_of(model, "up.out_channels").is_configurable
    exported = assert_export_matches(model, IMAGES, min)
    assert isinstance(exported.up, torch.nn.ConvTranspose2d) and exported.up.out_channels == 32
    assert exported.refine.groups == exported.refine.in_channels == 32
    for how in ("centroid", "random", "random"):
        assert_export_matches(model, IMAGES, how)


def test_group_norm_keeps_whole_groups_and_instance_norm_its_running_stats():
    config = mtn.config.AutoNASConfig()
    config["nn.Conv2d"]["*"]["channel_divisor"] = 8
    model = _convert(GroupAndInstanceNorm, IMAGES, mode=[("autonas", config)])
    assert _same(model, "c1.out_channels", "gn.num_channels", "c2.in_channels")
    assert hparam_of(model, "gn.num_channels").choices == (24, 48)  # 32 is not a multiple of 3 groups
    assert _same(model, "c2.out_channels", "inorm.num_features", "head.in_channels")
    model.train()
    mtn.sample(model, "min")
    model(IMAGES)  # updates the active share of the instance norm's running statistics
    for how in ("min", "centroid", "random", "random"):
        exported = assert_export_matches(model, IMAGES, how)
    assert exported.inorm.running_mean.shape == (exported.inorm.num_features,)


def test_sync_batch_norm_resizes_like_batch_norm_and_exports_natively(tmp_path):
    model = _convert(SyncNorm, IMAGES)
    assert _same(model, "c1.out_channels", "bn.num_features", "c2.in_channels")
    model.train()
    mtn.sample(model, "min")
    mtn.random_sampling(model, enabled=False)  # train-mode forwards of this subnet, not drawn ones
    model(IMAGES)  # one process: statistics of the active channels, as a batch norm
    exported = assert_export_matches(model, IMAGES, "min")
    assert type(exported.bn) is torch.nn.SyncBatchNorm and exported.bn.num_features == 32
    store = tmp_path / "store"
    torch.distributed.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1)
    try:  # a group of one process synchronizes nothing
        model.train()
        model(IMAGES)
    finally:
        torch.distributed.destroy_process_group()


def test_channels_last_layer_norm_follows_the_permuted_channels():
    model = _convert(ChannelsLastBlock, IMAGES)
    assert _same(
        model, "stem.out_channels", "dw.out_channels", "norm.normalized_shape", "fc1.in_features",
        "fc2.out_features", "head.in_channels",
    )  # fmt: skip
    assert not _same(model, "stem.out_channels", "fc1.out_features")
    exported = assert_export_matches(model, IMAGES, min)
    assert exported.norm.normalized_shape == (exported.stem.out_channels,) != (64,)
    for how in ("centroid", "random", "random"):
        assert_export_matches(model, IMAGES, how)


def test_tokens_keep_their_features_through_transposes_and_a_mean_over_tokens():
    tokens = torch.randn(2, 5, 16)
    model = _convert(TokenMixer, tokens)
    assert _same(
        model, "embed.out_features", "norm1.normalized_shape", "mix.in_channels", "mix.out_channels",
        "norm2.normalized_shape", "fc2.out_features", "head.in_features",
    )  # fmt: skip
    assert hparam_of(model, "embed.out_features").is_configurable
    for how in ("min", "centroid", "random", "random"):
        assert_export_matches(model, tokens, how)


def test_flattened_maps_stay_fixed_unless_the_linear_layer_follows_them():
    model = _convert(FlattenHead, IMAGES)
    assert hparam_of(model, "a.out_channels").choices == (64,) and hparam_of(model, "fc1.in_features").choices == (
        1536,
    )
    config = mtn.config.AutoNASConfig()
    config["nn.Linear"]["fc1"] = {"couple_flatten": True}
    model = _convert(FlattenHead, IMAGES, mode=[("autonas", config)])
    assert _same(model, "a.out_channels", "bn.num_features", "fc1.in_features[0]")
    assert _same(model, "b.out_channels", "fc1.in_features[1]")
    assert hparam_of(model, "a.out_channels").choices == (32, 64)
    exported = assert_export_matches(model, IMAGES, {"a.*": min, "*": max})  # a gap inside fc1's input
    assert exported.fc1.in_features == (32 + 32) * 16
    for how in ("min", "centroid", "random", "random"):
        assert_export_matches(model, IMAGES, how)


def test_attention_heads_are_searchable_at_a_fixed_head_size():
    tokens = torch.randn(2, 5, 16)
    model = _convert(AttentionBlock, tokens)
    assert _same(model, "embed.out_features", "norm1.normalized_shape", "attn.embed_dim", "fc2.out_features")
    assert hparam_of(model, "attn.num_heads").choices == (4, 5, 8)
    exported = assert_export_matches(model, tokens, {"attn.num_heads": min, "*": max})
    assert (exported.attn.num_heads, exported.attn.head_dim, exported.attn.q_proj.out_features) == (4, 8, 32)
    assert isinstance(assert_export_matches(model, tokens, "max").attn, torch.nn.MultiheadAttention)
    for how in ("min", "centroid", "random", "random"):
        assert_export_matches(model, tokens, how)


def test_masked_sequence_first_attention_exports_exactly():
    tokens = torch.randn(6, 2, 16)  # (length, batch, features)
    padding = torch.zeros(2, 6, dtype=torch.bool)
    padding[1, 4:] = True
    model = MaskedAttention().eval()
    reference = model(tokens, padding)
    mtn.convert(model, dummy_input=(tokens[:, :1], padding[:1]))
    torch.testing.assert_close(model.eval()(tokens, padding), reference)
    assert hparam_of(model, "attn.num_heads").choices == (2, 3, 4)
    for how in ("min", "centroid", "random"):
        mtn.sample(model, how)
        exported = mtn.export_copy(model).eval()
        torch.testing.assert_close(exported(tokens, padding), model.eval()(tokens, padding), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    "net",
    [Residual, SqueezeExcite, Depthwise, Grouped, SharedModule, Concat, DenseBlock, SelfConcat, ChannelSplit, Decoder,
     GroupAndInstanceNorm, ChannelsLastBlock, GatedUnit],
)  # fmt: skip
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
    assert "unsupported operation Tensor.repeat" in capsys.readouterr().out


class _ChunksRejoined(torch.nn.Module):
    """Chunks read as a whole tuple or by a negative index: their channels must stay as they are."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Conv2d(3, 64, 1)
        self.b = torch.nn.Conv2d(3, 64, 1)
        self.head = torch.nn.Conv2d(96, 10, 1)

    def forward(self, x):
        whole = torch.cat(self.a(x).chunk(2, 1), 1)
        last = self.b(x).chunk(2, 1)[-1]
        return self.head(torch.cat([whole, last], 1))


class _FixedView(torch.nn.Module):
    """A view to a written-out size, then a layer norm over the flattened features."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 64, 3, padding=1)
        self.norm = torch.nn.LayerNorm(64 * 64)
        self.fc = torch.nn.Linear(64 * 64, 10)

    def forward(self, x):
        return self.fc(self.norm(self.conv(x).view(-1, 64 * 64)))


def test_chunks_read_as_a_whole_or_by_negative_index_are_followed_safely():
    model = _convert(_ChunksRejoined, IMAGES)
    assert hparam_of(model, "a.out_channels[0]").choices == (32,)  # cat of the whole tuple: fixed
    assert _same(model, "b.out_channels[1]", "head.in_channels[1]")  # chunk(...)[-1] is the last part
    for how in ("min", "random", "random"):
        assert_export_matches(model, IMAGES, how)


def test_a_view_to_a_written_out_size_stays_fixed_and_is_counted():
    config = mtn.config.AutoNASConfig()
    config["nn.Linear"]["*"]["couple_flatten"] = True
    model = _convert(_FixedView, IMAGES, mode=[("autonas", config)])
    assert hparam_of(model, "conv.out_channels").choices == (64,)
    assert "view to a fixed size" in get_space(model).fixed_reasons["conv.out_channels"]
    exported = mtn.export_copy(model)
    assert cost_model(model).cost()["flops"] == fvcore_flops(exported, (IMAGES[:1],))


class _AuxHeadEvalBranches(torch.nn.Module):
    """An auxiliary head called only in training, and an eval-mode forward fx cannot trace."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.head = torch.nn.Linear(16, 10)
        self.aux = torch.nn.Linear(16, 10)

    def forward(self, x):
        features = self.conv(x).mean((2, 3))
        if self.training:
            return self.head(features) + self.aux(features)
        if features.sum() > 0:  # data-dependent control flow: fx cannot trace it
            return self.head(features)
        return -self.head(features)


def test_an_untraceable_eval_forward_is_a_warning_naming_why_not_silence():
    with pytest.warns(TraceWarning, match="cannot trace the eval-mode forward .*training-only branches included"):
        mtn.convert(_AuxHeadEvalBranches(), dummy_input=torch.randn(1, 3, 8, 8))


class _StochasticDepthBlock(torch.nn.Module):
    """torchvision's EfficientNet and ConvNeXt residuals: stochastic depth scales whole samples."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 64, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(64, 64, 3, padding=1)
        self.drop = torchvision.ops.StochasticDepth(0.2, "row")
        self.fc = torch.nn.Linear(64, 10)

    def forward(self, x):
        x = self.conv1(x)
        x = x + self.drop(self.conv2(x))
        return self.fc(x.mean((2, 3)))


def test_stochastic_depth_keeps_the_channels():
    model = _convert(_StochasticDepthBlock, IMAGES)
    assert len(hparam_of(model, "conv1.out_channels").choices) > 1


def test_a_weight_standardized_by_batch_norm_in_the_layers_forward_is_traced():
    """timm's ScaledStdConv2d normalizes its weight with ``F.batch_norm(weight, None, None, training=True)``
    in its forward: that batch norm has no running statistics and runs as written while shapes are recorded."""
    timm_layers = pytest.importorskip("timm.layers")
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        timm_layers.ScaledStdConv2d(3, 16, 3, padding=1), torch.nn.ReLU(),
        timm_layers.ScaledStdConv2d(16, 16, 3, padding=1), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
        torch.nn.Linear(16, 10),
    ).eval()  # fmt: skip
    x = torch.randn(2, 3, 8, 8)
    reference = model(x)
    mtn.convert(model, "fastnas", dummy_input=x[:1])  # failed: "running_mean must be defined in evaluation mode"
    mtn.sample(model, "max")
    torch.testing.assert_close(model.eval()(x), reference, rtol=0, atol=0)
    assert_export_matches(model, x, "min")
