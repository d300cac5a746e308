"""The hidden width: choices from the hidden_size rules, matched by the name of the parameter producing it."""

import pytest
import torch

import nascli.nas as mtn
from nascli.errors import UserInputError
from nascli.nas.config import FastNASConfig
from nascli.space.space import get_space
from tests.transformer_topologies import TinyDecoder

TOKENS = torch.randint(0, 50, (1, 6), generator=torch.Generator().manual_seed(0))
HIDDEN = "body.embed.weight.shape[1]"


def _space(hidden_rules, linear_ratios=(0.5, 1.0)):
    rules = {**FastNASConfig(), "hidden_size": hidden_rules}
    rules["nn.Linear"] = {"*": {"features_ratio": list(linear_ratios), "feature_divisor": 16}}
    return get_space(mtn.convert(TinyDecoder(4, 4), [("fastnas", rules)], dummy_input=TOKENS))


def test_hidden_width_takes_its_own_ratios_apart_from_the_mlp():
    space = _space({"*": {"hidden_ratio": [0.25, 0.75, 1.0], "hidden_divisor": 16}})
    assert space.hparams[HIDDEN].choices == (16, 48, 64)
    assert space.hparams["body.blocks.0.mlp.gate.out_features"].choices == (64, 128)


def test_a_pattern_excludes_the_hidden_width():
    space = _space({"*": {"hidden_ratio": [0.5]}, "body.embed.*": None})
    assert HIDDEN not in space.hparams
    assert "excluded by the hidden_size rules" in space.fixed_reasons[HIDDEN]


def test_the_default_rules_search_the_hidden_width():
    space = get_space(mtn.convert(TinyDecoder(4, 4), "fastnas", dummy_input=TOKENS))
    assert space.hparams[HIDDEN].choices == (32, 64)
    assert FastNASConfig()["hidden_size"]["*"]["hidden_ratio"]


def test_an_unknown_hidden_setting_is_one_clear_error():
    with pytest.raises(UserInputError, match="hidden_size.\\*.ratio: unknown setting"):
        _space({"*": {"ratio": [0.5]}})
