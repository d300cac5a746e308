"""The GPT Conv1D kind: Hugging Face's transposed-weight linear layer resizes like nn.Linear."""

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

import nascli.nas as mtn
from nascli.space.kinds.gpt_conv1d import GPTConv1DKind
from tests.space.kinds.conformance import assert_kind_conforms


class GPTMLP(nn.Module):
    """GPT-2's MLP on (batch, tokens, features) with a residual: c_fc widens, c_proj projects back."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(16, 64)
        self.c_fc = Conv1D(256, 64)
        self.c_proj = Conv1D(64, 256)
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        x = self.embed(x)
        x = x + self.c_proj(nn.functional.gelu(self.c_fc(x)))
        return self.head(x)


def test_gpt_conv1d_kind_keeps_the_layer_kind_contract(tmp_path):
    model = assert_kind_conforms(GPTMLP, torch.randn(2, 5, 16), GPTConv1DKind, tmp_path, mode="fastnas")
    config = mtn.get_subnet_config(model)
    assert len(mtn.config.FastNASConfig()["transformers.Conv1D"]["*"]["features_ratio"]) == 20
    assert "c_fc.nf" in config and "embed.out_features" in config  # the MLP width and the residual stream


def test_gpt_conv1d_rules_are_validated_like_linear_rules():
    config = mtn.config.AutoNASConfig()
    config["transformers.Conv1D"] = {"c_fc": {"features_ratio": [0.5, 1.0], "feature_divisor": 64}}
    model = mtn.convert(GPTMLP(), [("autonas", config)], dummy_input=torch.randn(1, 5, 16))
    assert mtn.get_subnet_config(model)["c_fc.nf"] == 256
    assert "c_proj.nf" not in mtn.get_subnet_config(model)  # excluded by the pattern
