"""The attention kind: heads of a fixed size and the embedding width are searchable."""

import pytest
import torch

import nascli.nas as mtn
from nascli.cost.fvcore_count import fvcore_flops
from nascli.cost.model import cost_model
from nascli.space.kinds.attention import AttentionKind
from tests.space.kinds.conformance import assert_kind_conforms
from tests.topologies import AttentionBlock, MaskedAttention


def test_attention_kind_keeps_the_layer_kind_contract(tmp_path):
    model = assert_kind_conforms(AttentionBlock, torch.randn(2, 6, 16), AttentionKind, tmp_path)
    assert "attn.num_heads" in mtn.get_subnet_config(model)


class DefaultCall(AttentionBlock):
    """The attention called as most code calls it: returning its (averaged) weights."""

    def forward(self, x):
        x = self.embed(x)
        y = self.norm1(x)
        x = x + self.attn(y, y, y)[0]
        return self.head(x.mean(1))


class PositionalNoWeights(AttentionBlock):
    """``need_weights=False`` given by position: the fused attention, as with the keyword."""

    def forward(self, x):
        x = self.embed(x)
        return self.head((x + self.attn(x, x, x, None, False)[0]).mean(1))


def _assert_flops_exact(model, inputs):
    costs = cost_model(model)
    assert not model._nascli_space.cost_unmodeled
    for how in ("max", "min", "centroid", "random"):
        mtn.sample(model, how)
        assert costs.cost()["flops"] == fvcore_flops(mtn.export_copy(model), inputs), how


@pytest.mark.parametrize("net", [DefaultCall, PositionalNoWeights, AttentionBlock])
def test_flops_are_exact_however_the_attention_is_called(net):
    x = torch.randn(1, 6, 16)
    _assert_flops_exact(mtn.convert(net().eval(), dummy_input=x), (x,))


def test_flops_are_exact_for_masked_attention_returning_its_weights():
    tokens, padding = torch.randn(6, 1, 16), torch.zeros(1, 6, dtype=torch.bool)
    model = mtn.convert(MaskedAttention().eval(), dummy_input=(tokens, padding))
    _assert_flops_exact(model, (tokens, padding))
