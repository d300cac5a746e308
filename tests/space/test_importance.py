import copy

import pytest
import torch

import nascli.nas as mtn
import nascli.opt as mto
from nascli.cost.model import cost_model
from nascli.models import resnet20
from nascli.space.importance import rank_blocks, sort_channels_by_importance
from nascli.space.space import get_space
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


@torch.no_grad()
def test_activations_rank_what_the_readers_receive_not_the_weights():
    """A neuron and a key/value group with large weights but silent outputs go last by activations."""
    from tests.transformer_topologies import TinyDecoder

    torch.manual_seed(0)
    ids = torch.randint(0, 50, (4, 6))
    model = mtn.convert(TinyDecoder(4, 2), "fastnas", dummy_input=ids[:1]).eval()
    block = model.body.blocks[0]
    block.mlp.gate.weight[3] *= 50  # the largest producer weights, but up's row is zero: silent
    block.mlp.up.weight[3] = 0
    block.attn.q.weight[16:] *= 50  # key/value group 1 (query heads 2 and 3): large weights, zero values
    block.attn.v.weight[8:] = 0
    before = model(ids)
    by_weights = sort_channels_by_importance(copy.deepcopy(model))
    orders = sort_channels_by_importance(model, [(ids[:2],), (ids[2:],)])
    assert by_weights["body.blocks.0.mlp.gate.out_features"][0] == 3
    assert by_weights["body.blocks.0.attn.num_kv_heads"] == [1, 0]
    assert orders["body.blocks.0.mlp.gate.out_features"][-1] == 3
    assert orders["body.blocks.0.attn.num_kv_heads"] == [0, 1]
    torch.testing.assert_close(model(ids), before, atol=1e-5, rtol=1e-5)
    assert_export_matches(model, ids, "min")
    silent = block.mlp.gate.weight.shape[0] - 1
    assert block.mlp.gate.weight.abs().sum(1).argmax() == silent
    search = {"score_func": lambda m: 0.0, "algorithm": "random", "iterations": 1, "population": 2, "parents": 1}
    mtn.search_select(model, {"params": "100%"}, ids[:1], search)  # sorts no more: the activations' order stays
    assert block.mlp.gate.weight.abs().sum(1).argmax() == silent


@pytest.mark.parametrize("by", ["weights", "activations"])
@torch.no_grad()
def test_query_heads_are_ranked_within_their_group_and_each_group_keeps_its_best(by):
    """Heads 1 and 2 (one in each key/value group) attend sharply, heads 0 and 3 not at all: each group
    keeps its own sharp head at one query head per group, and the full model computes what it did."""
    from nascli.space.importance import apply_channel_orders
    from tests.transformer_topologies import TinyDecoder

    torch.manual_seed(0)
    ids = torch.randint(0, 50, (4, 6))
    model = mtn.convert(TinyDecoder(4, 2), "fastnas", dummy_input=ids[:1]).eval()
    attn = model.body.blocks[0].attn
    attn.q.weight[0:8] = 0  # head 0 (group 0) and head 3 (group 1): uniform attention, small outputs
    attn.q.weight[24:32] = 0
    attn.q.weight[8:24] *= 20  # heads 1 and 2: sharp attention, large outputs
    original, before = copy.deepcopy(model), model(ids)
    orders = sort_channels_by_importance(model, None if by == "weights" else [(ids[:2],), (ids[2:],)])
    assert orders["body.blocks.0.attn.num_heads_per_group"] == [1, 0, 2, 3]  # within each group
    torch.testing.assert_close(model(ids), before, atol=1e-5, rtol=1e-5)

    mtn.select(model, {"body.blocks.0.attn.num_heads_per_group": 1})
    kept = mtn.export_copy(model).body.blocks[0].attn.q.weight.view(2, 8, -1)  # one head of each group
    assert (kept.abs().sum((1, 2)) > 0).all()  # the sharp ones, not the silent ones
    assert attn.q.weight.view(2, 2, 8, -1)[:, 1].abs().sum() == 0  # what each group drops
    replayed = copy.deepcopy(original)
    apply_channel_orders(replayed, get_space(model).channel_orders)  # a restore replays the sort exactly
    mtn.sample(model, "max")
    torch.testing.assert_close(replayed.body.blocks[0].attn.q.weight, attn.q.weight, atol=0, rtol=0)


class _ResidualStack(torch.nn.Module):
    """Four residual blocks in a ModuleList, looped over in the model's own forward."""

    def __init__(self):
        super().__init__()
        self.inp, self.out = torch.nn.Linear(8, 32), torch.nn.Linear(32, 3)
        self.blocks = torch.nn.ModuleList(
            torch.nn.Sequential(torch.nn.Linear(32, 32), torch.nn.Tanh()) for _ in range(4)
        )

    def forward(self, x):
        h = self.inp(x)
        for block in self.blocks:
            h = h + block(h)
        return self.out(h)


@torch.no_grad()
def test_blocks_ranked_by_the_score_without_each_skip_the_least_needed_first(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(16, 8)
    model = _ResidualStack().eval()
    model.blocks[2][0].weight.zero_()  # block 2 adds nothing: the model does not need it
    model.blocks[2][0].bias.zero_()
    reference = model(x)
    rules = {**mtn.config.FastNASConfig(), "nn.ModuleList": {"*": {"min_depth": 1}}}
    model = mtn.convert(model, [("fastnas", rules)], dummy_input=x[:1]).eval()
    scores = rank_blocks(model, lambda m: -float(((m(x) - reference) ** 2).mean()))
    assert list(scores) == ["blocks.depth"] and len(scores["blocks.depth"]) == 3  # blocks 1, 2 and 3 may go
    assert max(scores["blocks.depth"]) == scores["blocks.depth"][1] == 0.0
    mtn.select(model, {"blocks.depth": 3})
    torch.testing.assert_close(model(x), reference)  # blocks 0, 1 and 3 run: the same output
    exported = mtn.export_copy(model).eval()
    torch.testing.assert_close(exported(x), reference)
    assert len(exported.blocks) == 3
    assert cost_model(model).cost()["params"] == sum(p.numel() for p in exported.parameters())
    mtn.select(model, {"blocks.depth": 2})
    assert cost_model(model).cost()["params"] == sum(p.numel() for p in mtn.export_copy(model).parameters())
    mto.save(model, tmp_path / "ranked.pt")
    restored = mto.restore(_ResidualStack, tmp_path / "ranked.pt").eval()
    torch.testing.assert_close(restored(x), model(x))


@torch.no_grad()
def test_ranking_restores_sampling_and_a_failed_score_leaves_the_ranks():
    x = torch.randn(4, 8)
    rules = {**mtn.config.FastNASConfig(), "nn.ModuleList": {"*": {"min_depth": 1}}}
    model = mtn.convert(_ResidualStack(), [("fastnas", rules)], dummy_input=x[:1]).eval()
    space = get_space(model)
    assert space.sample_in_train
    rank_blocks(model, lambda m: 0.0)
    assert space.sample_in_train and sorted(space.block_ranks["blocks.depth"]) == [0, 1, 2, 3]
    before = list(space.block_ranks["blocks.depth"])

    def failing(m):
        raise RuntimeError("score failed")

    with pytest.raises(RuntimeError, match="score failed"):
        rank_blocks(model, failing)
    assert space.block_ranks["blocks.depth"] == before and model.blocks._ranks == before


def test_layers_typed_by_position_keep_dropping_the_last_blocks():
    transformers = pytest.importorskip("transformers")
    config = transformers.Qwen2Config(
        vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=2,
        num_key_value_heads=1, use_sliding_window=True, sliding_window=4, max_window_layers=2, use_cache=False,
    )  # fmt: skip
    assert len(set(config.layer_types)) > 1  # full attention first, then sliding windows
    ids = torch.randint(0, 50, (1, 6))
    rules = {**mtn.config.FastNASConfig(), "nn.ModuleList": {"*": {"min_depth": 1}}}
    model = mtn.convert(transformers.Qwen2ForCausalLM(config).eval(), [("fastnas", rules)], dummy_input=ids)
    assert "model.layers.depth" in get_space(model).hparams
    assert rank_blocks(model, lambda m: 0.0) == {} and get_space(model).block_ranks == {}
