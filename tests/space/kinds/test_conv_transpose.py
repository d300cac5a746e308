"""The transposed-convolution kind: channels resize like a convolution's, the weight laid out (in, out)."""

import torch

from nascli.space.kinds.conv_transpose import ConvTransposeKind
from tests.space.kinds.conformance import assert_kind_conforms
from tests.topologies import Decoder


def test_conv_transpose_kind_keeps_the_layer_kind_contract(tmp_path):
    assert_kind_conforms(Decoder, torch.randn(2, 3, 8, 8), ConvTransposeKind, tmp_path, mode="fastnas")
