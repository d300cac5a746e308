"""The analytic cost model equals fvcore's count and sum(numel) of the exported subnet, exactly.

The torchvision models are covered by the zoo suite (tests/zoo)."""

import warnings

import pytest
import torch
import torchvision

import nascli.nas as mtn
from nascli.cost.fvcore_count import count_params, fvcore_flops
from nascli.cost.model import cost_model
from nascli.models import resnet20, small_cnn
from nascli.space.space import get_space
from nascli.space.trace import TraceWarning
from tests.topologies import (
    MLP,
    AttentionBlock,
    ChannelsLastBlock,
    Concat,
    Conv1dNet,
    Decoder,
    DenseBlock,
    Depthwise,
    FlattenHead,
    GatedUnit,
    GroupAndInstanceNorm,
    Grouped,
    Residual,
    SelfConcat,
    SharedModule,
    SqueezeExcite,
    TokenMixer,
    Untraceable,
)


def _check_every_kind_of_subnet(model, x):
    costs = cost_model(model)
    for how in ("max", "min", "centroid", "random", "random", "random"):
        mtn.sample(model, how)
        exported = mtn.export_copy(model)
        analytic = costs.cost()
        assert analytic["flops"] == fvcore_flops(exported, (x,)), how
        assert analytic["params"] == count_params(exported), how


@pytest.mark.parametrize(
    "net, shape",
    [
        (Residual, (1, 3, 8, 8)),
        (SqueezeExcite, (1, 3, 8, 8)),
        (Depthwise, (1, 3, 8, 8)),
        (Grouped, (1, 3, 8, 8)),
        (SharedModule, (1, 3, 8, 8)),
        (Concat, (1, 3, 8, 8)),
        (DenseBlock, (1, 3, 8, 8)),
        (SelfConcat, (1, 3, 8, 8)),
        (Untraceable, (1, 3, 8, 8)),
        (MLP, (1, 32)),
        (Conv1dNet, (1, 4, 16)),
        (Decoder, (1, 3, 8, 8)),
        (GroupAndInstanceNorm, (1, 3, 8, 8)),
        (ChannelsLastBlock, (1, 3, 8, 8)),
        (TokenMixer, (1, 5, 16)),
        (GatedUnit, (1, 3, 8, 8)),
        (AttentionBlock, (1, 5, 16)),
        (lambda: resnet20(in_channels=1, width=64), (1, 1, 8, 8)),
        (lambda: small_cnn(width=64), (1, 1, 8, 8)),
    ],
)
def test_topologies(net, shape):
    x = torch.randn(*shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TraceWarning)
        model = mtn.convert(net(), "fastnas", dummy_input=x)
    _check_every_kind_of_subnet(model, x)


def test_a_linear_layer_reading_flattened_maps_is_counted():
    config = mtn.config.FastNASConfig()
    config["nn.Linear"]["*"]["couple_flatten"] = True
    x = torch.randn(1, 3, 8, 8)
    _check_every_kind_of_subnet(mtn.convert(FlattenHead(), [("fastnas", config)], dummy_input=x), x)


def test_kernel_size_search_is_counted():
    config = mtn.config.AutoNASConfig()
    config["nn.Conv2d"]["*"]["kernel_size"] = (1, 3)
    x = torch.randn(1, 3, 32, 32)
    _check_every_kind_of_subnet(mtn.convert(torchvision.models.resnet18(), [("autonas", config)], dummy_input=x), x)


@pytest.mark.slow
def test_resnet50_reference_numbers():
    model = mtn.convert(torchvision.models.resnet50(), "autonas")
    mtn.sample(model, "max")
    assert cost_model(model).cost() == {"flops": 4_089_284_608, "params": 25_557_032}
    is_satisfied, stats = mtn.profile(model, torch.randn(1, 3, 224, 224), {"flops": "2G"}, verbose=False)
    assert is_satisfied
    assert stats["max"] == {"flops": 4_089_284_608, "params": 25_557_032}
    assert stats["number of configurable hparams"] == 40
    assert f"{stats['search space size']:.2e}" == "1.90e+18"


def test_batch_matrix_matches_single_configs():
    x = torch.randn(1, 1, 8, 8)
    model = mtn.convert(resnet20(in_channels=1, width=64), dummy_input=x)
    costs = cost_model(model)
    configs = [mtn.sample(model, "random") for _ in range(20)]
    batch = costs.evaluate(costs.encode(configs))
    for i, config in enumerate(configs):
        single = costs.cost(config)
        assert batch["flops"][i] == single["flops"] and batch["params"][i] == single["params"]


class _FunctionalTransposedConv(torch.nn.Module):
    """A transposed convolution called as a function on a parameter: fvcore counts it."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.up = torch.nn.Parameter(torch.randn(16, 8, 2, 2))

    def forward(self, x):
        return torch.nn.functional.conv_transpose2d(self.conv(x), self.up, stride=2)


def test_a_functional_transposed_conv_is_reported_unmodeled_never_silent():
    model = mtn.convert(_FunctionalTransposedConv(), dummy_input=torch.randn(1, 3, 8, 8))
    assert any("conv_transpose2d" in entry for entry in model._nascli_space.cost_unmodeled)


class _ZippedBlocks(torch.nn.Module):
    """Blocks zipped with a list of fixed length (Ergo's): fewer blocks fail the forward, so the forward check
    keeps the depth full."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = torch.nn.Linear(8, 64)
        self.blocks = torch.nn.ModuleList(
            torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU()) for _ in range(3)
        )
        self.scales = [1.0, 0.5, 0.25]
        self.out = torch.nn.Linear(64, 4)

    def forward(self, x):
        if x.shape[0] < 1:
            raise ValueError("empty batch")
        x = self.inp(x)
        for block, scale in zip(self.blocks, self.scales, strict=True):
            x = x + scale * block(x)
        return self.out(x)


def test_a_depth_the_forward_check_keeps_full_is_costed_as_every_block():
    rules = {"nn.ModuleList": {"*": {"min_depth": 1}}}
    model = mtn.convert(_ZippedBlocks(), ("fastnas", rules), dummy_input=torch.randn(1, 8)).eval()
    assert "blocks.depth" not in get_space(model).hparams
    mtn.sample(model, "min")
    exported = mtn.export_copy(model)
    assert cost_model(model).cost() == {
        "flops": fvcore_flops(exported, (torch.randn(1, 8),)),
        "params": count_params(exported),
    }
