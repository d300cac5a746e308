"""The attention kind: heads of a fixed size and the embedding width are searchable."""

import torch

import nascli.nas as mtn
from nascli.space.kinds.attention import AttentionKind
from tests.space.kinds.conformance import assert_kind_conforms
from tests.topologies import AttentionBlock


def test_attention_kind_keeps_the_layer_kind_contract(tmp_path):
    model = assert_kind_conforms(AttentionBlock, torch.randn(2, 6, 16), AttentionKind, tmp_path)
    assert "attn.num_heads" in mtn.get_subnet_config(model)
