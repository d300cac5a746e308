"""ModelOpt's patched train/eval behaviour of converted models: the switch, BN calibration, the patch data."""

import copy
import warnings

import pytest
import torch
from torch import nn

import nascli.nas as mtn
from nascli.errors import UserInputError
from nascli.nas.autonas import AutoNASPatchManager
from nascli.nas.patch import prep_for_eval
from nascli.space.patches import CALIB_ITERS, QUEUE_MAXLEN

X = torch.randn(2, 1, 8, 8)


def small() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.Conv2d(64, 4, 3, padding=1))


@pytest.fixture
def model():
    return mtn.convert(small(), dummy_input=X[:1])


@pytest.fixture(autouse=True)
def patches_on():
    """A test that fails inside a switched-off block must not leave the switch off for the next one."""
    yield
    mtn.set_modelopt_patches_enabled(True)


def running_mean(model):
    return model[1].running_mean.clone()


def test_the_switch_stops_sampling_and_caching(model):
    data = AutoNASPatchManager(model).patch_data
    model.train()
    with mtn.no_modelopt_patches():
        assert not mtn.is_modelopt_patches_enabled()
        mtn.sample(model, min)
        for _ in range(4):
            model(X)
        assert mtn.get_subnet_config(model, configurable=True) == {"0.out_channels": 32}
        assert len(data["queue"]) == 0
        with mtn.enable_modelopt_patches():
            model(X)
            assert len(data["queue"]) == 1
    assert mtn.is_modelopt_patches_enabled()

    @mtn.no_modelopt_patches()
    def forward():
        assert not mtn.is_modelopt_patches_enabled()
        return model(X)

    forward()
    forward()
    assert mtn.is_modelopt_patches_enabled() and len(data["queue"]) == 1


def test_set_modelopt_patches_enabled_is_global_or_scoped():
    mtn.set_modelopt_patches_enabled(False)
    assert not mtn.is_modelopt_patches_enabled()
    with mtn.set_modelopt_patches_enabled(True):
        assert mtn.is_modelopt_patches_enabled()
    assert not mtn.is_modelopt_patches_enabled()
    mtn.set_modelopt_patches_enabled(True)
    assert mtn.is_modelopt_patches_enabled()


def test_eval_after_random_training_takes_the_max_subnet_and_calibrates_bn(model):
    data = AutoNASPatchManager(model).patch_data
    model.train()
    mtn.sample(model, min)
    for _ in range(QUEUE_MAXLEN):
        model(torch.randn(2, 1, 8, 8) * 3 + 5)
    assert len(data["queue"]) == QUEUE_MAXLEN and data["autosampled"]
    before = running_mean(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.eval()
    assert mtn.get_subnet_config(model, configurable=True) == {"0.out_channels": 64}
    assert not torch.allclose(before, running_mean(model))
    assert data["train_count_since_sample"] == CALIB_ITERS  # calibrated: the next eval() leaves them
    calibrated = running_mean(model)
    model.train(False)
    assert torch.equal(calibrated, running_mean(model))


def test_eval_warns_when_too_few_batches_are_cached(model):
    model.train()
    model(X)
    with pytest.warns(UserWarning, match="only 1 of 50 batches are cached"):
        model.eval()


def test_prep_for_eval_calibrates_from_a_forward_loop_and_caches_its_batches(model):
    data = AutoNASPatchManager(model).patch_data
    mtn.sample(model, min)
    before = running_mean(model)
    batches = [torch.randn(2, 1, 8, 8) * 2 + 3 for _ in range(3)]

    def loop(m):
        for batch in batches:
            m(batch)

    assert prep_for_eval(model, loop) is model and not model.training
    assert not torch.allclose(before, running_mean(model))
    assert len(data["queue"]) == 3 and not data["fill"]
    assert mtn.get_subnet_config(model, configurable=True) == {"0.out_channels": 32}


def test_patch_data_of_a_model_holding_the_converted_module():
    outer = nn.Sequential(small(), nn.ReLU())
    with pytest.raises(UserInputError, match="holds no converted module"):
        AutoNASPatchManager(outer).reset_before_sample()
    mtn.convert(outer[0], dummy_input=X[:1])
    assert AutoNASPatchManager.is_patched(outer)
    assert AutoNASPatchManager(outer).patch_data is AutoNASPatchManager(outer[0]).patch_data
    assert mtn.sample(outer, min)["0.0.out_channels"] == 32  # names from the outer model, as in ModelOpt
    mtn.select(outer, {"0.0.out_channels": 64})
    assert mtn.get_subnet_config(outer[0], configurable=True) == {"0.out_channels": 64}
    with pytest.raises(UserInputError, match="'1.0.out_channels' is not an hparam of '0'"):
        mtn.select(outer, {"1.0.out_channels": 64})


def test_export_with_calib_calibrates_first_and_leaves_a_plain_train(model):
    data = AutoNASPatchManager(model).patch_data
    mtn.sample(model, min)
    data["queue"].extend((torch.randn(2, 1, 8, 8) * 4 + 2, {}) for _ in range(QUEUE_MAXLEN))
    plain = mtn.export(copy.deepcopy(model))
    calibrated = mtn.export(model, calib=True)
    assert not torch.allclose(plain[1].running_mean, calibrated[1].running_mean)
    assert "train" not in vars(calibrated) and calibrated.eval() is calibrated
