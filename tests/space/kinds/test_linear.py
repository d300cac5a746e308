"""The linear kind: searchable features, between fixed model inputs and outputs."""

import torch

from nascli.space.kinds.linear import LinearKind
from tests.space.kinds.conformance import assert_kind_conforms
from tests.topologies import MLP


def test_linear_kind_keeps_the_layer_kind_contract(tmp_path):
    model = assert_kind_conforms(MLP, torch.randn(4, 32), LinearKind, tmp_path)
    assert model.fc1.in_features == 32 and model.fc3.out_features == 10  # the model's own interface stays
