"""Parameters the model's own code reads (an RMS norm's weight) are sliced with their channel group."""

import torch

import nascli.nas as mtn
from nascli.space.kinds.parameters import ParametersKind
from nascli.space.space import get_space
from tests.space.kinds.conformance import assert_kind_conforms
from tests.transformer_topologies import RMSNorm, TinyDecoder

TOKENS = torch.randint(0, 50, (2, 6), generator=torch.Generator().manual_seed(0))


def test_parameters_kind_keeps_the_layer_kind_contract(tmp_path):
    model = assert_kind_conforms(TinyDecoder, TOKENS, ParametersKind, tmp_path, mode="fastnas")
    norm = model.body.blocks[0].norm1
    assert isinstance(norm, RMSNorm)  # a subclass of its own class
    keys = set(model.state_dict())
    hidden = get_space(model).hparams["body.embed.weight.shape[1]"]
    mtn.select(model, {hidden.name: hidden.min})
    assert norm(torch.randn(1, hidden.min)).shape == (1, hidden.min)
    assert norm.weight.shape == (64,)  # the stored parameter keeps its full size between forwards
    assert set(model.state_dict()) == keys
    exported = mtn.export(model)
    assert type(exported.body.blocks[0].norm1) is RMSNorm and exported.body.norm.weight.shape == (hidden.min,)
