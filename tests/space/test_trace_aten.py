"""Tracing with torch.export: heads, grouped-query attention, gated MLPs, hidden width and parameters.

Each topology of tests/transformer_topologies.py is one way of writing attention that fx cannot
trace. For each: the right hparams are found, the max subnet is the model as built, every subnet
exports to native layers with the same output, costs equal fvcore's and numel's, save/restore and
importance sorting keep the output.
"""

import pytest
import torch

import nascli.nas as mtn
from nascli.errors import UserInputError
from nascli.space.kinds.linear import LinearKind
from nascli.space.space import get_space
from tests.space.kinds.conformance import assert_kind_conforms
from tests.transformer_topologies import (
    BlockResidual,
    ConstantsDecoder,
    Convolved,
    ExpandedMask,
    ExportOnly,
    FusedGroupedQKV,
    FusedQKV,
    GatedResiduals,
    HalvesSelected,
    HeldSizesViT,
    Interleaved,
    LatentDecoder,
    MaskPerHead,
    MixedCopies,
    ReducedAttentionDecoder,
    RelativeBias,
    Routed,
    ScaledQueries,
    SideBySide,
    TablePositionsDecoder,
    TinyDecoder,
    TinyViT,
    WidthWrittenOut,
)

TOKENS = torch.randint(0, 50, (2, 6), generator=torch.Generator().manual_seed(0))


def _hparams(model) -> dict[str, tuple]:
    return {name: hp.choices for name, hp in get_space(model).hparams.items()}


@pytest.mark.parametrize("style", ["sdpa", "repeat", "eager", "baddbmm"])
def test_grouped_query_attention_keeps_whole_groups(style, tmp_path):
    model = assert_kind_conforms(lambda: TinyDecoder(4, 2, style), TOKENS, LinearKind, tmp_path)
    found = _hparams(model)
    assert found["body.blocks.0.attn.num_kv_heads"] == (1, 2)
    assert "body.blocks.0.attn.num_heads" not in found
    assert found["body.embed.weight.shape[1]"] == (32, 64)
    mtn.select(model, {"body.blocks.0.attn.num_kv_heads": 1})
    assert model.body.blocks[0].attn.q(torch.zeros(1, 64)).shape[-1] == 16  # one group: 2 query heads of 8


@pytest.mark.parametrize("style", ["sdpa", "repeat", "eager"])
def test_query_heads_inside_key_value_groups_are_searched_too(style, tmp_path):
    model = assert_kind_conforms(lambda: TinyDecoder(4, 2, style), TOKENS, LinearKind, tmp_path)
    assert _hparams(model)["body.blocks.0.attn.num_heads_per_group"] == (1, 2)
    mtn.select(model, {"body.blocks.0.attn.num_heads_per_group": 1})
    attn = mtn.export_copy(model).body.blocks[0].attn
    original = model.body.blocks[0].attn
    # one query head of each group (heads 0 and 2): their q rows and o columns, the keys and values whole
    torch.testing.assert_close(attn.q.weight, torch.cat([original.q.weight[:8], original.q.weight[16:24]]))
    torch.testing.assert_close(attn.o.weight, torch.cat([original.o.weight[:, :8], original.o.weight[:, 16:24]], 1))
    assert attn.k.weight.shape == original.k.weight.shape


@pytest.mark.parametrize("style", ["sdpa", "repeat", "eager"])
def test_multi_query_attention_searches_its_query_heads(style, tmp_path):
    """One key/value head: nothing to search in the keys and values, the query heads in its one group."""
    model = assert_kind_conforms(lambda: TinyDecoder(4, 1, style), TOKENS, LinearKind, tmp_path)
    found, space = _hparams(model), get_space(model)
    assert found["body.blocks.1.attn.num_heads_per_group"] == (2, 3, 4)  # autonas: ratios 0.5 to 1
    assert "body.blocks.1.attn.num_kv_heads" not in found
    assert "rounds to 1" in space.fixed_reasons["body.blocks.1.attn.num_kv_heads"]


def test_multi_head_attention_searches_heads_mlp_and_hidden(tmp_path):
    model = assert_kind_conforms(lambda: TinyDecoder(4, 4), TOKENS, LinearKind, tmp_path)
    found = _hparams(model)
    assert found["body.blocks.1.attn.num_heads"] == (2, 3, 4)
    assert found["body.blocks.1.mlp.gate.out_features"] == (64, 96, 128)  # gate and up: one width
    assert found["body.embed.weight.shape[1]"] == (32, 64)
    assert not any("up.out_features" in name for name in found)


def test_hidden_width_runs_through_embedding_norms_and_head(tmp_path):
    model = mtn.convert(TinyDecoder(4, 4), "fastnas", dummy_input=TOKENS[:1]).eval()
    hidden = get_space(model).hparams["body.embed.weight.shape[1]"]
    assert hidden.choices == (32, 64)
    mtn.select(model, {"body.embed.weight.shape[1]": hidden.min})
    exported = mtn.export(model)
    assert exported.body.embed.weight.shape == (50, hidden.min)
    assert exported.body.norm.weight.shape == (hidden.min,)
    assert exported.body.lm_head.in_features == hidden.min


def test_tied_embedding_and_head_shrink_together(tmp_path):
    model = assert_kind_conforms(lambda: TinyDecoder(tied=True), TOKENS, LinearKind, tmp_path, mode="fastnas")
    assert len(get_space(model).hparams["body.embed.weight.shape[1]"].choices) > 1


def test_class_token_and_position_embedding_follow_the_hidden_width(tmp_path):
    images = torch.randn(2, 3, 16, 16)
    model = assert_kind_conforms(TinyViT, images, LinearKind, tmp_path, mode="fastnas")
    found = _hparams(model)
    hidden = next(name for name in found if name.endswith("shape[2]"))
    assert hidden == "body.cls_token.shape[2]"
    mtn.select(model, {hidden: found[hidden][0]})
    exported = mtn.export(model)
    assert exported.body.pos_embed.shape == (1, 17, found[hidden][0])
    assert "body.blocks.0.attn.num_heads" in found


def test_a_width_the_model_writes_out_stays_full():
    model = mtn.convert(WidthWrittenOut(), "fastnas", dummy_input=torch.randn(1, 16))
    assert not _hparams(model)
    reasons = get_space(model).fixed_reasons
    assert "forward fails" in reasons["body.branch.out_features"]
    assert "forward fails" in reasons["body.inp.out_features"]


class _Cumulative(ExportOnly):
    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Linear(16, 4))
        self.body.register_forward_hook(lambda m, i, o: o)

    def forward(self, x):
        if x.shape[0] < 1:
            raise ValueError("empty batch")
        return self.body[1](torch.cumsum(self.body[0](x), dim=-1))


def test_an_operation_the_tracer_does_not_know_freezes_its_channels():
    model = mtn.convert(_Cumulative(), "fastnas", dummy_input=torch.randn(1, 8))
    assert "aten.cumsum" in get_space(model).fixed_reasons["body.0.out_features"]


class _OneScore(ExportOnly):
    """A projection to one channel per position, reshaped away: ``score(x).reshape(b, s)``."""

    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(8, 64), torch.nn.Linear(64, 1))

    def forward(self, x):
        if x.shape[0] < 1:
            raise ValueError("empty batch")
        return self.body[1](self.body[0](x)).reshape(x.shape[0], x.shape[1]).softmax(-1)


def test_one_channel_reshaped_away_stays_fixed():
    model = mtn.convert(_OneScore(), "fastnas", dummy_input=torch.randn(1, 5, 8))
    assert "reshapes the channels" in get_space(model).fixed_reasons["body.1.out_features"]
    assert _hparams(model)["body.0.out_features"] == (32, 64)


class _DataDependent(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(x) if x.sum() > 0 else -self.fc(x)


def test_a_model_neither_tracer_follows_is_one_clear_error():
    with pytest.raises(UserInputError, match="torch.fx.*; cannot trace _DataDependent with torch.export"):
        mtn.convert(_DataDependent(), "fastnas", dummy_input=torch.randn(1, 4))


def test_heads_of_a_fused_projection_split_by_a_held_size(tmp_path):
    model = assert_kind_conforms(FusedQKV, TOKENS, LinearKind, tmp_path)
    assert _hparams(model)["body.attn.num_heads"] == (2, 3, 4)
    mtn.select(model, {"body.attn.num_heads": 2})
    exported = mtn.export(model)
    assert exported.body.attn.split_size == 32 and exported.body.attn.qkv.out_features == 96


def test_a_gate_per_query_head_follows_the_grouped_heads(tmp_path):
    """One gate channel per query head: its projection's outputs are the grouped query heads themselves."""
    model = assert_kind_conforms(lambda: TinyDecoder(4, 2, "sdpa", gated=True), TOKENS, LinearKind, tmp_path)
    found = _hparams(model)
    assert found["body.blocks.0.attn.num_kv_heads"] == (1, 2)
    assert found["body.blocks.0.attn.num_heads_per_group"] == (1, 2)
    mtn.select(model, {"body.blocks.0.attn.num_kv_heads": 1, "body.blocks.1.attn.num_heads_per_group": 1})
    blocks = mtn.export(model).body.blocks
    assert (blocks[0].attn.g.out_features, blocks[1].attn.g.out_features) == (2, 2)


@pytest.mark.parametrize("rotary", [True, "complex"])
def test_interleaved_rotary_embeddings_keep_the_heads(rotary, tmp_path):
    """Pairs of neighbouring entries rotated by ``stack((-x2, x1), -1).flatten(-2)`` (Cohere, GLM) or as complex
    numbers (Llama 4): the stack and the complex views run along the head size, so the heads pass through."""
    model = assert_kind_conforms(lambda: TinyDecoder(4, 2, "sdpa", rotary=rotary), TOKENS, LinearKind, tmp_path)
    found = _hparams(model)
    assert found["body.blocks.0.attn.num_kv_heads"] == (1, 2)
    assert found["body.blocks.0.attn.num_heads_per_group"] == (1, 2)


def test_latent_attention_keys_assembled_in_new_empty_keep_the_heads(tmp_path):
    """DeepSeek's keys: ``new_empty`` shaped after the heads, the per-head part and one rotary key expanded
    over every head copied in. The heads are searched; the rotary key's own channels stay fixed."""
    model = assert_kind_conforms(LatentDecoder, TOKENS, LinearKind, tmp_path)
    found, space = _hparams(model), get_space(model)
    assert found["body.blocks.0.attn.num_heads"] == (2, 3, 4)
    assert "body.embed.weight.shape[1]" in found
    mtn.select(model, {"body.blocks.0.attn.num_heads": 2})
    attn = mtn.export(model).body.blocks[0].attn
    assert (attn.q.out_features, attn.kv_b.out_features, attn.o.in_features, attn.kv_a.out_features) == (24, 32, 16, 20)
    assert not space.hparams.keys() & {"body.blocks.0.attn.kv_a.out_features"}


@pytest.mark.parametrize("style", ["split", "slice"])
def test_grouped_heads_of_one_projection_split_at_unequal_sizes(style, tmp_path):
    """q of 4 heads and k and v of 2 out of one projection: split by held sizes, or sliced as Phi-3 does."""
    model = assert_kind_conforms(lambda: FusedGroupedQKV(style), TOKENS, LinearKind, tmp_path)
    found = _hparams(model)
    assert found["body.blocks.0.attn.num_kv_heads"] == (1, 2)
    assert found["body.blocks.0.attn.num_heads_per_group"] == (1, 2)
    mtn.select(model, {"body.blocks.0.attn.num_kv_heads": 1, "body.blocks.1.attn.num_heads_per_group": 1})
    blocks = mtn.export(model).body.blocks
    one_group, one_per_group = blocks[0].attn, blocks[1].attn
    assert (one_group.q_size, one_group.kv_size, one_group.qkv.out_features) == (16, 8, 32)  # a group of 2 heads
    assert (one_per_group.q_size, one_per_group.kv_size, one_per_group.o.in_features) == (16, 16, 16)


@pytest.mark.parametrize("style", ["expand", "heads"])
def test_one_key_value_head_expanded_over_the_query_heads(style, tmp_path):
    """GPT-BigCode's multi-query attention: k and v are one head's entries, never split into heads, expanded
    over the query heads; Falcon's: one projection viewed as heads, split into the query heads and one key
    and one value head. They become one key/value group, and the query heads are searched inside it."""
    model = assert_kind_conforms(lambda: FusedGroupedQKV(style), TOKENS, LinearKind, tmp_path)
    found = _hparams(model)
    assert found["body.blocks.0.attn.num_heads_per_group"] == (2, 3, 4)
    mtn.select(model, {"body.blocks.0.attn.num_heads_per_group": 2})
    attn = mtn.export(model).body.blocks[0].attn
    held = attn.num_heads if style == "heads" else attn.q_size // 8  # the size the module splits by follows
    assert (held, attn.qkv.out_features, attn.o.in_features) == (2, 32, 16)


def test_reductions_over_the_head_size_and_sequence_keep_the_heads(tmp_path):
    """A max with indices, logsumexp and a vector norm over other dims, and padding of the sequence."""
    model = assert_kind_conforms(ReducedAttentionDecoder, TOKENS, LinearKind, tmp_path)
    found = _hparams(model)
    assert found["body.1.attn.num_heads"] == (2, 3, 4) and found["body.2.attn.num_heads"] == (2, 3, 4)


def test_a_layer_norm_over_each_heads_entries_keeps_the_heads(tmp_path):
    """Persimmon normalizes each query and key head with a LayerNorm(head size) while the heads are a dim of
    their own: the norm keeps its size, the heads stay searchable."""
    model = assert_kind_conforms(lambda: TinyDecoder(4, 2, head_norm=True), TOKENS, LinearKind, tmp_path)
    found, space = _hparams(model), get_space(model)
    assert found["body.blocks.0.attn.num_kv_heads"] == (1, 2)
    assert "entries per channel" in space.fixed_reasons["body.blocks.0.attn.q_norm.normalized_shape"]


@pytest.mark.parametrize("style", ["index_select", "index"])
def test_positions_picked_from_a_table_follow_the_hidden_width(style, tmp_path):
    """A buffer's rows looked up by index are an embedding: its columns are the hidden width."""
    model = assert_kind_conforms(lambda: TablePositionsDecoder(style), TOKENS, LinearKind, tmp_path)
    hidden = get_space(model).hparams["body.weights.shape[1]"]  # named after the first producer, the table
    mtn.select(model, {hidden.name: hidden.min})
    assert mtn.export(model).body.weights.shape == (16, hidden.min)


def test_tensors_made_of_no_channels_are_constants_to_what_they_meet(tmp_path):
    """A causal mask from ``arange`` leaves the heads searchable, and picking one channel of ``zeros_like(x)``
    fixes the zeros, not x's hidden width."""
    model = assert_kind_conforms(ConstantsDecoder, TOKENS, LinearKind, tmp_path)
    found = _hparams(model)
    assert found["body.attn.num_heads"] == (2, 3, 4) and found["body.embed.weight.shape[1]"] == (32, 64)


def test_heads_reshaped_with_q_k_and_v_by_held_sizes(tmp_path):
    """fx traces this model but cannot follow its reshape into (3, heads, head size): the ATen graph can."""
    model = assert_kind_conforms(HeldSizesViT, torch.randn(2, 3, 16, 16), LinearKind, tmp_path)
    found = _hparams(model)
    assert found["attn.num_heads"] == (2, 3, 4)
    assert len(found["cls_token.shape[2]"]) > 1
    mtn.select(model, {"attn.num_heads": 2, "cls_token.shape[2]": 32})
    exported = mtn.export(model)
    assert (exported.attn.num_heads, exported.attn.attn_dim, exported.attn.qkv.out_features) == (2, 32, 96)
    assert exported.norm.normalized_shape == (32,) and exported.norm.weight.shape == (32,)


def test_parameters_meeting_the_hidden_width_in_segments_are_sliced_by_segment(tmp_path):
    model = assert_kind_conforms(SideBySide, TOKENS, LinearKind, tmp_path)
    hidden = "body.embed.weight.shape[1]"
    assert _hparams(model)[hidden] == (32, 64)
    mtn.select(model, {hidden: 32})
    exported = mtn.export(model)
    assert exported.body.norms[1].weight.shape == (64,) and exported.body.connection.shape == (4, 128)


def test_a_product_with_the_channels_on_the_rows_passes_them_through(tmp_path):
    model = assert_kind_conforms(MixedCopies, TOKENS, LinearKind, tmp_path)
    assert _hparams(model)["body.embed.weight.shape[1]"] == (32, 64)
    assert "body.router.out_features" not in get_space(model).hparams  # the coefficients keep their size


def test_a_mask_per_head_keeps_the_heads_of_its_query_heads(tmp_path):
    model = assert_kind_conforms(MaskPerHead, TOKENS, LinearKind, tmp_path)
    found = _hparams(model)
    assert found["body.num_kv_heads"] == (1, 2) and found["body.num_heads_per_group"] == (1, 2)
    assert "body.dt.out_features" not in found  # one entry per key/value head: it follows them


def test_halves_viewed_apart_and_selected_are_equal_parts_not_heads(tmp_path):
    model = assert_kind_conforms(HalvesSelected, TOKENS, LinearKind, tmp_path)
    choices = _hparams(model)["body.fc1.out_features[0]"]  # the width of each half
    assert len(choices) > 1 and max(choices) == 128


def test_parts_interleaved_entry_by_entry_keep_their_pairs(tmp_path):
    model = assert_kind_conforms(Interleaved, TOKENS, LinearKind, tmp_path)
    inner = "body.gate_up.shape[0]"
    assert _hparams(model)[inner] == (64, 96, 128)
    mtn.select(model, {inner: 64})
    exported = mtn.export(model)
    assert exported.body.gate_up.shape == (128, 64) and exported.body.down.shape == (64, 64)


def test_norms_per_head_gates_of_one_parameter_and_rows_repeated_keep_heads_and_hidden(tmp_path):
    model = assert_kind_conforms(GatedResiduals, TOKENS, LinearKind, tmp_path)
    found = _hparams(model)
    assert found["body.num_heads"] == (2, 3, 4) and found["body.gate.shape[0]"] == (32, 64)  # the hidden width


def test_a_mask_expanded_over_the_heads_leaves_them_free(tmp_path):
    model = assert_kind_conforms(ExpandedMask, TOKENS, LinearKind, tmp_path)
    assert _hparams(model)["body.num_heads"] == (2, 3, 4)


def test_a_layer_never_called_whose_weight_its_parent_applies_is_sliced_in_the_parents_forward(tmp_path):
    model = assert_kind_conforms(Routed, TOKENS, LinearKind, tmp_path)
    hidden = "body.embed.weight.shape[1]"
    assert _hparams(model)[hidden] == (32, 64)
    mtn.select(model, {hidden: 32})
    assert mtn.export(model).body.router.classifier.weight.shape == (4, 32)


def test_a_vector_viewed_per_head_keeps_whole_heads(tmp_path):
    model = assert_kind_conforms(ScaledQueries, TOKENS, LinearKind, tmp_path)
    assert _hparams(model)["body.num_heads"] == (2, 3, 4)
    mtn.select(model, {"body.num_heads": 2})
    assert mtn.export(model).body.query_scale.shape == (32,)


def test_convolutions_applied_with_a_held_weight_slice_it(tmp_path):
    model = assert_kind_conforms(Convolved, TOKENS, LinearKind, tmp_path)
    found = _hparams(model)
    hidden, inner = "body.embed.weight.shape[1]", "body.mlp.up.weight.shape[0]"
    assert found[hidden] == (32, 64) and found[inner] == (64, 96, 128)
    mtn.select(model, {hidden: 32, inner: 64})
    exported = mtn.export(model).body
    assert exported.short.conv1d.weight.shape == (32, 1, 4) and exported.short.conv1d.bias.shape == (32,)
    assert exported.mlp.up.weight.shape == (64, 32, 1)


def test_a_bias_per_head_gathered_by_distance_keeps_the_heads(tmp_path):
    model = assert_kind_conforms(RelativeBias, TOKENS, LinearKind, tmp_path)
    assert _hparams(model)["body.num_heads"] == (2, 3, 4)
    mtn.select(model, {"body.num_heads": 2})
    assert mtn.export(model).body.rel.weight.shape == (8, 64)


def test_a_learned_query_over_stacked_states_follows_the_hidden_width(tmp_path):
    model = assert_kind_conforms(BlockResidual, TOKENS, LinearKind, tmp_path)
    hidden = "body.query.shape[0]"  # the body's own parameter comes before its embedding in module order
    assert _hparams(model)[hidden] == (32, 64)
    mtn.select(model, {hidden: 32})
    exported = mtn.export(model).body
    assert exported.query.shape == (32,) and exported.embed.weight.shape == (50, 32)
