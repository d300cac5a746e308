"""The depth kind: trailing shape-preserving blocks of a Sequential stage can be skipped."""

import torch

import nascli.nas as mtn
from nascli.models import resnet20
from nascli.space.kinds.sequential import SequentialKind
from tests.space.kinds.conformance import assert_kind_conforms


def test_sequential_kind_keeps_the_layer_kind_contract(tmp_path):
    model = assert_kind_conforms(
        lambda: resnet20(in_channels=1, width=16), torch.randn(2, 1, 8, 8), SequentialKind, tmp_path
    )
    assert mtn.get_subnet_config(model)["layer1.depth"] == 3
