"""Attention heads found by tracing: choices from the attention_heads rules, matched by module path."""

import pytest
import torch

import nascli.nas as mtn
from nascli.errors import UserInputError
from nascli.nas.config import FastNASConfig
from nascli.space.space import get_space
from tests.transformer_topologies import TinyDecoder

TOKENS = torch.randint(0, 50, (1, 6), generator=torch.Generator().manual_seed(0))


def _convert(heads_rules, kv_heads=2):
    rules = {**FastNASConfig(), "attention_heads": heads_rules}
    return mtn.convert(TinyDecoder(4, kv_heads), [("fastnas", rules)], dummy_input=TOKENS)


def test_key_value_groups_take_their_choices_from_their_own_ratio():
    space = get_space(_convert({"*": {"num_kv_heads_ratio": [0.5], "num_heads_ratio": [0.25]}}))
    assert space.hparams["body.blocks.0.attn.num_kv_heads"].choices == (1, 2)
    space = get_space(_convert({"*": {"num_heads_ratio": [0.25]}}, kv_heads=4))
    assert space.hparams["body.blocks.0.attn.num_heads"].choices == (1, 4)


def test_a_pattern_excludes_the_heads_of_matching_attention():
    space = get_space(_convert({"*": {"num_kv_heads_ratio": [0.5]}, "body.blocks.1.*": None}))
    assert "body.blocks.0.attn.num_kv_heads" in space.hparams
    assert "body.blocks.1.attn.num_kv_heads" not in space.hparams
    assert "excluded" in space.fixed_reasons["body.blocks.1.attn.num_kv_heads"]


def test_an_unknown_heads_setting_is_one_clear_error():
    with pytest.raises(UserInputError, match="attention_heads.\\*.heads_ratio: unknown setting"):
        _convert({"*": {"heads_ratio": [0.5]}})
