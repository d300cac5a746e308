"""Parameters the model's own code reads (an RMS norm's weight) are sliced with their channel group."""

import pytest
import torch
import torch.nn.functional as F

import nascli.nas as mtn
from nascli.space.kinds.parameters import ParametersKind
from nascli.space.space import get_space
from tests.space.kinds.conformance import assert_kind_conforms
from tests.transformer_topologies import ExportOnly, RMSNorm, TinyDecoder

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


class _NormAct(torch.nn.BatchNorm2d):
    """A batch norm subclass with its own forward (timm's BatchNormAct2d): the norm is called functionally."""

    def forward(self, x):
        momentum = self.momentum if self.training else 0.0
        x = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, self.training, momentum, 1e-5)
        return F.relu(x)


class _OneGroupNorm(torch.nn.GroupNorm):
    """timm's GroupNorm1: one group, called functionally."""

    def __init__(self, channels: int) -> None:
        super().__init__(1, channels)

    def forward(self, x):
        return F.group_norm(x, 1, self.weight, self.bias, self.eps)


def _conv_norm(norm: type) -> torch.nn.Module:
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 64, 3, padding=1), norm(64), torch.nn.Conv2d(64, 64, 3, padding=1), norm(64),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(64, 10),
    )  # fmt: skip
    for layer in (net[1], net[3]):  # statistics and affine parameters that are not all alike
        layer.weight.data.uniform_(0.5, 2)
        if isinstance(layer, _NormAct):
            layer.running_mean.uniform_(-1, 1), layer.running_var.uniform_(0.5, 2)
    return net


@pytest.mark.parametrize("norm", [_NormAct, _OneGroupNorm])
def test_the_weights_and_statistics_of_a_norm_subclass_follow_its_channels(norm, tmp_path):
    model = assert_kind_conforms(lambda: _conv_norm(norm), torch.randn(2, 3, 8, 8), ParametersKind, tmp_path, "fastnas")
    width = get_space(model).hparams["0.out_channels"]
    mtn.select(model, {"0.out_channels": width.min})
    exported = mtn.export(model)
    assert type(exported[1]) is norm and exported[1].weight.shape == (width.min,)
    if norm is _NormAct:
        assert exported[1].running_var.shape == (width.min,)


class _MixtureOfExperts(torch.nn.Module):
    """A one-layer Mixtral: its experts hold their weights as 3-d parameters used by their own code."""

    def __init__(self) -> None:
        super().__init__()
        transformers = pytest.importorskip("transformers")
        config = transformers.MixtralConfig(
            vocab_size=50, hidden_size=64, intermediate_size=96, num_hidden_layers=1, num_attention_heads=4,
            num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2, use_cache=False,
        )  # fmt: skip
        self.lm = transformers.MixtralForCausalLM(config)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.lm(ids).logits


def test_expert_weights_are_sliced_along_the_hidden_width_and_their_own(tmp_path):
    """``gate_up_proj`` (experts, 2 x width, hidden) and ``down_proj`` (experts, hidden, width): both dims of
    each follow their groups, so the experts' width is searched as an MLP's is, beside the hidden width."""
    model = assert_kind_conforms(_MixtureOfExperts, TOKENS, ParametersKind, tmp_path)
    found = get_space(model).hparams
    width = found["lm.model.layers.0.mlp.experts.gate_up_proj.shape[1][0]"]
    hidden = found["lm.model.embed_tokens.weight.shape[1]"]
    assert width.choices == (48, 64, 96) and hidden.choices == (32, 64)
    mtn.select(model, {width.name: 48, hidden.name: 32})
    experts = mtn.export(model).lm.model.layers[0].mlp.experts
    assert experts.gate_up_proj.shape == (4, 96, 32) and experts.down_proj.shape == (4, 32, 48)


class _OwnLinear(torch.nn.Linear):
    """Falcon's linear layer: a subclass computing ``x @ self.weight.T`` in its own forward."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight.T + self.bias


class _OwnLinearMLP(ExportOnly):
    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Embedding(50, 64), _OwnLinear(64, 128), torch.nn.GELU(), _OwnLinear(128, 64),
            torch.nn.LayerNorm(64), torch.nn.Linear(64, 50),
        )  # fmt: skip


def test_a_weight_applied_by_the_modules_own_matmul_is_sliced_along_both_dims(tmp_path):
    """Each weight's output dim is searched as a linear layer's output: the MLP width between the two, and
    the width the second one gives the norm and the head."""
    model = assert_kind_conforms(_OwnLinearMLP, TOKENS, ParametersKind, tmp_path)
    found = get_space(model).hparams
    width, out = found["body.1.weight.shape[0]"], found["body.3.weight.shape[0]"]
    assert width.choices == (64, 96, 128) and out.choices == (32, 64)  # autonas: ratios 0.5 to 1, divisor 32
    mtn.select(model, {width.name: 64, out.name: 32})
    body = mtn.export(model).body
    assert (body[1].weight.shape, body[1].bias.shape, body[3].weight.shape) == ((64, 64), (64,), (32, 64))
    assert (body[4].weight.shape, body[5].in_features) == ((32,), 32)


class _Scale(torch.nn.Module):
    """timm's layer scale of MetaFormers: a per-channel weight viewed to a shape the module holds."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.shape = (channels, 1, 1)
        self.scale = torch.nn.Parameter(1 + 0.1 * torch.randn(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale.view(self.shape)


def test_a_weight_viewed_to_a_shape_the_module_holds_follows_its_channels(tmp_path):
    """Traced with fx, ``self.scale.view(self.shape)`` keeps the weight's channel dim, and ``self.shape``
    follows the active width (``(64, 1, 1)`` would not fit 32 channels)."""

    def factory():
        return torch.nn.Sequential(
            torch.nn.Conv2d(3, 64, 3, padding=1), _Scale(64), torch.nn.ReLU(), torch.nn.Conv2d(64, 8, 3),
            torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 10),
        )  # fmt: skip

    model = assert_kind_conforms(factory, torch.randn(2, 3, 8, 8), ParametersKind, tmp_path, mode="fastnas")
    width = get_space(model).hparams["0.out_channels"]
    mtn.select(model, {width.name: width.min})
    scale = mtn.export(model)[1]
    assert scale.shape == (width.min, 1, 1) and scale.scale.shape == (width.min,)


class _SharedOwnLinear(ExportOnly):
    """One module registered under two names and called under both (CoaT's shared MLPs)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = _SharedBody()


class _SharedBody(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed, self.up, self.head = torch.nn.Embedding(50, 64), _OwnLinear(64, 128), torch.nn.Linear(128, 50)
        self.again = self.up

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        return self.head(torch.relu(self.up(x)) + torch.relu(self.again(x)))


def test_a_weight_of_a_module_registered_under_two_names_is_sliced():
    """The graph reads the one weight under both names; it is sliced once, under the first (CoaT)."""
    model = mtn.convert(_SharedOwnLinear(), "autonas", dummy_input=TOKENS[:1]).eval()
    width = next(hp for name, hp in get_space(model).hparams.items() if name.endswith(".weight.shape[0]"))
    mtn.select(model, {width.name: width.min})
    assert model.body.up(torch.randn(1, 64)).shape == (1, width.min)
