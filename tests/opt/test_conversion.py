"""ModelOpt's conversion-state calls and file objects in nascli.opt."""

import io

import pytest
import torch

import nascli.nas as mtn
import nascli.opt as mto
from nascli.errors import CheckpointError, UserInputError
from nascli.models import resnet20

X = torch.randn(2, 1, 8, 8)


def small():
    return resnet20(in_channels=1, width=64)


def test_modelopt_state_round_trip(tmp_path):
    model = mtn.convert(small(), mode="fastnas", dummy_input=X[:1])
    mtn.sample(model, "min")
    torch.save(mto.modelopt_state(model), tmp_path / "state.pt")
    rebuilt = mto.restore_from_modelopt_state(small(), mto.load_modelopt_state(tmp_path / "state.pt"))
    rebuilt.load_state_dict(model.state_dict())
    assert mtn.get_subnet_config(rebuilt) == mtn.get_subnet_config(model)
    assert torch.equal(rebuilt.eval()(X), model.eval()(X))


def test_load_modelopt_state_errors(tmp_path):
    torch.save([1], tmp_path / "list.pt")
    with pytest.raises(TypeError, match="expected a dict"):
        mto.load_modelopt_state(tmp_path / "list.pt")
    mto.save(mtn.convert(small(), dummy_input=X[:1]), tmp_path / "full.pt")
    with pytest.raises(CheckpointError, match="full checkpoint"):
        mto.load_modelopt_state(tmp_path / "full.pt")


def test_exported_model_saves_to_a_file_object_and_restores():
    model = mtn.convert(small(), mode="fastnas", dummy_input=X[:1])
    mtn.sample(model, "min")
    exported = mtn.export(model)
    buffer = io.BytesIO()
    mto.save(exported, buffer)
    buffer.seek(0)
    restored = mto.restore(small(), buffer)
    assert not mtn.is_dynamic(restored)
    assert torch.equal(restored.eval()(X), exported.eval()(X))


def test_apply_mode_converts_and_exports():
    model = mto.apply_mode(small(), mode=[("autonas", {})])
    assert mtn.is_converted(model)
    assert not mtn.is_dynamic(mto.apply_mode(model, mode="export_nas"))


def test_apply_mode_takes_modelopt_s_arguments_and_checks_init_state():
    model = mto.apply_mode((small, (), {}), mode="autonas", registry=None, init_state=True, mode_kwargs={})
    assert mtn.is_converted(model)
    with pytest.raises(UserInputError, match="apply_mode: ResNet already holds a conversion state"):
        mto.apply_mode(model, mode="autonas", init_state=True)
    with pytest.raises(UserInputError, match="apply_mode: ResNet holds no conversion state to extend"):
        mto.apply_mode(small(), mode="autonas", init_state=False)
    with pytest.raises(UserInputError, match="apply_mode: registry must be None"):
        mto.apply_mode(small(), mode="autonas", registry=object())
    with pytest.raises(UserInputError, match="apply_mode: mode_kwargs must be empty"):
        mto.apply_mode(small(), mode="autonas", mode_kwargs=[{"dummy_input": X}])
