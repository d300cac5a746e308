"""The ModuleList depth kind: a transformer's loop over its blocks runs only the first ``depth``."""

import torch
from torch import nn

import nascli.nas as mtn
from nascli.space.kinds.module_list import ModuleListKind
from nascli.space.space import get_space
from tests.space.kinds.conformance import assert_kind_conforms
from tests.transformer_topologies import TinyDecoder

TOKENS = torch.randint(0, 50, (2, 6), generator=torch.Generator().manual_seed(0))


class _Residuals(nn.Module):
    """A ModuleList looped over by the model's own forward, traced with fx."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Linear(8, 32)
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(32, 32), nn.ReLU()) for _ in range(3))
        self.head = nn.Linear(32, 4)

    def forward(self, x):
        x = self.stem(x)
        for block in self.blocks:
            x = x + block(x)
        return self.head(x)


def test_module_list_kind_keeps_the_layer_kind_contract(tmp_path):
    model = assert_kind_conforms(_Residuals, torch.randn(4, 8), ModuleListKind, tmp_path)
    assert get_space(model).hparams["blocks.depth"].choices == (1, 2, 3)


def test_a_transformer_loop_skips_its_last_blocks(tmp_path):
    model = assert_kind_conforms(TinyDecoder, TOKENS, ModuleListKind, tmp_path)
    mtn.select(model, {"body.blocks.depth": 1})
    assert len(list(model.body.blocks)) == 1 and len(model.body.blocks[:5]) == 1
    assert model.body.blocks[1] is not None  # indexing still finds every block
    exported = mtn.export(model)
    assert type(exported.body.blocks) is nn.ModuleList and len(exported.body.blocks) == 1


class _Indexed(nn.Module):
    """A ModuleList the model's code indexes block by block (LongCat-Flash's two MLPs per layer)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Linear(8, 32)
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(32, 32), nn.ReLU()) for _ in range(2))
        self.head = nn.Linear(32, 4)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.blocks[0](x)
        x = x + self.blocks[1](x)
        return self.head(x)


def test_a_list_indexed_block_by_block_keeps_its_depth():
    """Its export at a smaller depth would index a block it dropped, so the depth stays full."""
    model = mtn.convert(_Indexed(), "autonas", dummy_input=torch.randn(4, 8))
    space = get_space(model)
    assert "blocks.depth" not in space.hparams
    assert "blocks.depth" in space.fixed_reasons and "dropped" in space.fixed_reasons["blocks.depth"]
    looped = mtn.convert(_Residuals(), "autonas", dummy_input=torch.randn(4, 8))
    assert get_space(looped).hparams["blocks.depth"].choices == (1, 2, 3)
