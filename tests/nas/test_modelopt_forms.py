"""ModelOpt's ways of calling the NAS API, accepted as ModelOpt means them."""

import pytest
import torch
from torch import nn

import nascli.nas as mtn
from nascli.errors import UserInputError
from nascli.models import resnet20

X = torch.randn(1, 1, 8, 8)


def small():
    return resnet20(in_channels=1, width=64)


def test_rules_without_patterns_and_channels_ratio():
    config = {"nn.Conv2d": {"channels_ratio": (0.5, 1.0), "channel_divisor": 16}, "nn.BatchNorm2d": {}}
    model = mtn.convert(small(), mode=[("autonas", config)], dummy_input=X)
    assert dict(mtn.named_hparams(model, configurable=True))["conv1.out_channels"].choices == (32, 64)


def test_mode_forms():
    assert not mtn.is_dynamic(mtn.convert(small(), mode=[], dummy_input=X))
    exported = mtn.convert(small(), mode=["fastnas", "export_nas"], dummy_input=X)
    assert not mtn.is_dynamic(exported) and isinstance(exported, nn.Module)
    with pytest.raises(UserInputError, match="Cannot add autonas after fastnas"):
        mtn.convert(small(), mode=["fastnas", "autonas"], dummy_input=X)
    model = mtn.convert((resnet20, (), {"in_channels": 1, "width": 64}), mode=("autonas", None), dummy_input=X)
    assert mtn.is_converted(model)


def test_profile_of_a_plain_model_and_without_centroid():
    ok, stats = mtn.profile(small(), X, constraints={"flops": "50%"}, verbose=False)
    assert not ok and set(stats) == {"full", "constraints"}
    assert 2 * stats["full"]["flops"] * X.shape[0] == mtn.inference_flops(small(), X, unit=1)  # ModelOpt's unit
    _, stats = mtn.profile(mtn.convert(small(), dummy_input=X), X, verbose=False, use_centroid=False)
    assert "centroid" not in stats and "max" in stats


def test_search_takes_modelopt_keys_and_refuses_deployment(tmp_path):
    model = mtn.convert(small(), mode="fastnas", dummy_input=X)
    config = {"score_func": lambda m: 0.0, "num_iters": 1, "checkpoint": tmp_path / "s.pt", "verbose": False}
    mtn.search(model, {"flops": "90%"}, X, config=dict(config, algorithm="random", population_size=4))
    assert (tmp_path / "s.pt").is_file()
    with pytest.raises(UserInputError, match="nascli search --latency"):
        mtn.search(model, {"flops": "90%"}, X, config=dict(config, deployment={"runtime": "TRT"}))
    with pytest.raises(UserInputError, match="same setting"):
        mtn.search(model, {"flops": "90%"}, X, config=dict(config, iterations=2))


def test_a_partial_config_keeps_the_defaults_of_what_it_leaves_out():
    x = torch.randn(1, 1, 8, 8)
    config = {"nn.Conv2d": {"*": {"out_channels_ratio": [0.5, 1.0]}}}  # nothing said of norms or depth
    model = mtn.convert(resnet20(in_channels=1, width=64), mode=[("autonas", config)], dummy_input=x)
    found = mtn.get_subnet_config(model, configurable=True)
    assert found["layer1.0.conv1.out_channels"] == 64 and "layer1.depth" in found  # norms and depth as defaults
    assert dict(mtn.named_hparams(model, configurable=True))["layer1.0.conv1.out_channels"].choices == (32, 64)
