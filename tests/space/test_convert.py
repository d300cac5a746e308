"""Conversion's own steps: the sizes a module's code reads that follow the hparams (space/convert.py)."""

import torch
import torch.nn.functional as F
from torch import nn

import nascli.nas as mtn
import nascli.opt as mto
from nascli.space.importance import sort_channels_by_importance
from nascli.space.kinds.linear import LinearKind
from nascli.space.space import get_space
from tests.space.kinds.conformance import assert_kind_conforms
from tests.transformer_topologies import ConfigHeads, ExportOnly, TypedLayers

TOKENS = torch.randint(0, 50, (2, 6), generator=torch.Generator().manual_seed(0))


class _PartialRotary(nn.Module):
    """StableLM's attention: heads viewed by a count it holds, a rotary part of ``rotary_dims`` channels of
    each head. In a small model the rotary width (4) can equal the head count (4)."""

    def __init__(self, width: int = 64, heads: int = 4) -> None:
        super().__init__()
        self.num_heads, self.head_dim, self.rotary_dims = heads, width // heads, 4
        self.embed = nn.Embedding(50, width)
        self.q, self.k, self.v = (nn.Linear(width, width) for _ in range(3))
        self.out = nn.Linear(width, width)
        self.head = nn.Linear(width, 50)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        t = t.view(t.shape[0], t.shape[1], self.num_heads, self.head_dim).transpose(1, 2)
        return torch.cat((t[..., : self.rotary_dims].flip(-1), t[..., self.rotary_dims :]), dim=-1)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        q, k = self._heads(self.q(x)), self._heads(self.k(x))
        v = self.v(x).view(*x.shape[:2], self.num_heads, self.head_dim).transpose(1, 2)
        attended = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(*x.shape[:2], -1)
        return self.head(x + self.out(attended))


class PartialRotary(ExportOnly):
    def __init__(self) -> None:
        super().__init__()
        self.body = _PartialRotary()


def test_a_head_count_is_followed_by_the_attributes_named_for_heads_only():
    model = mtn.convert(PartialRotary(), "fastnas", dummy_input=TOKENS).eval()
    assert get_space(model).hparams["body.num_heads"].choices == (1, 2, 3, 4)
    mtn.select(model, {"body.num_heads": 2})
    expected = model(TOKENS)
    exported = mtn.export(model)
    assert (exported.body.num_heads, exported.body.rotary_dims) == (2, 4)
    torch.testing.assert_close(exported(TOKENS), expected)


class _CheckedNorm(nn.Module):
    """CPM-Ant's RMS norm: refuses an input whose width is not the ``dim_norm`` it holds."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.dim_norm, self.steps = width, width  # ``steps`` equals the width by chance only
        self.weight = nn.Parameter(1 + 0.1 * torch.randn(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.size(-1) != self.dim_norm:
            raise AssertionError("x.size(-1) != self.dim_norm")
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.weight


class _NormChecked(nn.Module):
    def __init__(self, width: int = 64) -> None:
        super().__init__()
        self.embed, self.norm = nn.Embedding(50, width), _CheckedNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 128), nn.GELU(), nn.Linear(128, width))
        self.head = nn.Linear(width, 50)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        return self.head(self.norm(x + self.mlp(x)))


class NormChecked(ExportOnly):
    def __init__(self) -> None:
        super().__init__()
        self.body = _NormChecked()


def test_a_norm_checking_its_width_by_a_size_it_holds_follows_the_hidden_width():
    model = mtn.convert(NormChecked(), "fastnas", dummy_input=TOKENS).eval()
    hidden = "body.embed.weight.shape[1]"
    assert get_space(model).hparams[hidden].choices == (32, 64)
    mtn.select(model, {hidden: 32})
    expected = model(TOKENS)
    exported = mtn.export(model)
    assert (exported.body.norm.dim_norm, exported.body.norm.steps) == (32, 64)
    torch.testing.assert_close(exported(TOKENS), expected)


class _WidthChecked(nn.Module):
    """Code that refuses any width but the one it was built with, checked in Python (export keeps no trace
    of it): the forward check fixes the hidden width after its scale was attached."""

    def __init__(self, width: int = 64) -> None:
        super().__init__()
        self.width = width
        self.embed = nn.Embedding(50, width)
        self.scale = nn.Parameter(1 + 0.1 * torch.randn(width))
        self.mlp = nn.Sequential(nn.Linear(width, 128), nn.GELU(), nn.Linear(128, width))
        self.head = nn.Linear(width, 50)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        if x.shape[-1] != 64:
            raise ValueError("this model runs at width 64 only")
        return self.head(x + self.mlp(x) * self.scale.sigmoid())


class WidthChecked(ExportOnly):
    def __init__(self) -> None:
        super().__init__()
        self.body = _WidthChecked()


def test_a_parameter_the_forward_check_fixes_whole_is_no_longer_sliced(tmp_path):
    model = mtn.convert(WidthChecked(), "fastnas", dummy_input=TOKENS)
    space = get_space(model)
    assert "the model's forward fails" in space.fixed_reasons["body.scale.shape[0]"]
    assert type(model.body) is _WidthChecked  # its scale kept whole: nothing of it is dynamic
    assert not any("scale" in name for name in mtn.get_subnet_config(model))
    assert "body.mlp.0.out_features" in space.hparams
    mto.save(model, tmp_path / "model.pt")
    restored = mto.restore(WidthChecked(), tmp_path / "model.pt")
    assert mtn.get_subnet_config(restored) == mtn.get_subnet_config(model)


def test_per_layer_lists_zipped_with_the_layers_and_a_childs_width_follow_the_space(tmp_path):
    model = assert_kind_conforms(TypedLayers, TOKENS, LinearKind, tmp_path)
    found = {name: hp.choices for name, hp in get_space(model).hparams.items()}
    assert found["body.layers.depth"] == (1, 2, 3, 4) and found["body.embed.weight.shape[1]"] == (32, 64)
    mtn.select(model, {"body.layers.depth": 2, "body.embed.weight.shape[1]": 32})
    model.eval()
    expected = model(TOKENS)
    assert model.body.config.layer_types == ["sliding", "full", "sliding", "full"]  # cut only in the forward
    exported = mtn.export(model)
    assert exported.body.config.layer_types == ["sliding", "full"] and len(exported.body.layers) == 2
    assert exported.body.layers[0].router.linear.in_features == 32
    torch.testing.assert_close(exported(TOKENS), expected)


class _RowPicked(nn.Module):
    """A weight applied to the hidden state whose first row the code also adds (``self.proj[0]``): the rows
    the product reads are the hidden channels, and picking one by index keeps them whole."""

    def __init__(self, width: int = 64) -> None:
        super().__init__()
        self.config = {"layers": 2}  # a config held as a dict
        self.embed = nn.Embedding(50, width)
        self.proj = nn.Parameter(0.1 * torch.randn(width, width))
        self.layers = nn.ModuleList(
            nn.Sequential(nn.Linear(width, 128), nn.GELU(), nn.Linear(128, width)) for _ in range(2)
        )
        self.head = nn.Linear(width, 50)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        x = x @ self.proj + self.proj[0]
        for layer in self.layers:
            x = x + layer(x)
        return self.head(x)


class RowPicked(ExportOnly):
    def __init__(self) -> None:
        super().__init__()
        self.body = _RowPicked()


def test_a_parameter_axis_the_code_indexes_keeps_its_size_and_a_dict_config_is_no_layer_config():
    model = mtn.convert(RowPicked(), "autonas", dummy_input=TOKENS).eval()
    space = get_space(model)
    assert space.hparams["body.proj.shape[1]"].choices == (32, 64)  # the width the product makes
    assert not any(name.startswith("body.embed") for name in space.hparams)  # the rows it reads stay whole
    assert any("aten.select picks entries of parameter body.proj" in why for why in space.fixed_reasons.values())
    expected = model(TOKENS)
    sort_channels_by_importance(model)
    torch.testing.assert_close(model(TOKENS), expected)


def test_heads_viewed_by_a_shared_configs_count_and_a_merged_width_follow_each_layers_heads(tmp_path):
    model = assert_kind_conforms(ConfigHeads, TOKENS, LinearKind, tmp_path)
    space = get_space(model)
    assert {n: hp.choices for n, hp in space.hparams.items() if "heads" in n} == {
        "body.layers.0.num_heads": (2, 3, 4),
        "body.layers.1.num_heads": (2, 3, 4),
    }
    mtn.select(model, {"body.layers.0.num_heads": 2, "body.layers.1.num_heads": 3})
    expected = model(TOKENS)
    exported = mtn.export(model)
    first, second = exported.body.layers
    assert (first.config.num_heads, first.v_dim, first.qk_dim, first.norm.num_heads) == (2, 32, 16, 2)
    assert (second.config.num_heads, second.v_dim, second.qk_dim) == (3, 48, 24)
    torch.testing.assert_close(exported(TOKENS), expected)
