"""ModelOpt's conversion-state calls and file objects in nascli.opt."""

import io

import pytest
import torch
from torch import nn

import nascli.nas as mtn
import nascli.opt as mto
from nascli.errors import CheckpointError, UserInputError
from nascli.models import resnet20
from nascli.opt import ModeloptStateManager

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
    from_path = mto.restore_from_modelopt_state((small, (), {}), modelopt_state_path=tmp_path / "state.pt")
    assert mtn.get_subnet_config(from_path) == mtn.get_subnet_config(model)


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


def test_export_is_in_place_and_export_copy_keeps_the_converted_model():
    model = mtn.convert(small(), mode="fastnas", dummy_input=X[:1])
    mtn.sample(model, "min")
    copy = mtn.export_copy(model)
    assert mtn.is_dynamic(model) and not mtn.is_dynamic(copy)
    assert mtn.export(model) is model and not mtn.is_dynamic(model)
    assert torch.equal(model.eval()(X), copy.eval()(X))
    assert [name for name, _ in mto.modelopt_state(model)["modelopt_state_dict"]] == ["fastnas", "export_nas"]
    with pytest.raises(AssertionError, match=r"Cannot add export_nas according to the current export stack: deque"):
        mtn.export(model)


def test_a_chain_of_modes_saves_and_restores():
    model = mtn.convert(small(), mode="autonas", dummy_input=X[:1])
    mtn.sample(model, "min")
    mto.apply_mode(model, "export_nas", init_state=False)
    mto.apply_mode(model, ("fastnas", None), init_state=False)
    mtn.sample(model, "min")
    state = mto.modelopt_state(model)
    assert [name for name, _ in state["modelopt_state_dict"]] == ["autonas", "export_nas", "fastnas"]
    rebuilt = mto.restore_from_modelopt_state((small, (), {}), state)
    rebuilt.load_state_dict(model.state_dict())
    assert ModeloptStateManager(rebuilt).state_dict() == ModeloptStateManager(model).state_dict()
    assert torch.equal(rebuilt.eval()(X), model.eval()(X))
    mtn.export(model)
    buffer = io.BytesIO()
    mto.save(model, buffer)
    buffer.seek(0)
    restored = mto.restore(small(), buffer)
    modes = [name for name, _, _ in ModeloptStateManager(restored).modes_with_states()]
    assert modes == ["autonas", "export_nas", "fastnas", "export_nas"] and not mtn.is_dynamic(restored)
    assert torch.equal(restored.eval()(X), model.eval()(X))


def test_a_chain_modelopt_refuses_is_its_assertion_and_changes_nothing():
    plain = small()
    with pytest.raises(AssertionError, match=r"Cannot add fastnas after autonas! Next modes of autonas are \{"):
        mtn.convert(plain, mode=["autonas", "fastnas"], dummy_input=X[:1])
    assert not mtn.is_dynamic(plain)
    with pytest.raises(AssertionError, match=r"export stack: deque\(\[\]\)"):
        mto.apply_mode(plain, "export_nas")


def test_a_state_held_by_a_submodule_is_that_module_s():
    outer = nn.Sequential(small())
    mtn.convert(outer[0], "autonas", dummy_input=X[:1])
    calls = (mto.modelopt_state, mtn.export, lambda m: mto.save(m, io.BytesIO()), ModeloptStateManager)
    for call in calls:
        with pytest.raises(AssertionError, match=r"'0' holds the conversion state, not this model"):
            call(outer)
    manager = ModeloptStateManager(outer[0])
    assert manager.has_state and manager.last_mode == "autonas" and not ModeloptStateManager().has_state
    assert ModeloptStateManager.has_state_for_mode_type("nas", model=outer[0])
    assert not ModeloptStateManager.has_state_for_mode_type("prune", state=mto.modelopt_state(outer[0]))
    assert not ModeloptStateManager.has_state_for_mode_type("quantization", model=outer[0])


def test_a_model_with_another_forward_is_refused_on_restore():
    buffer = io.BytesIO()
    mto.save(mtn.convert(small(), mode="fastnas", dummy_input=X[:1]), buffer)
    buffer.seek(0)
    other = small()
    other.forward = lambda x: x
    with pytest.raises(RuntimeError, match="forward 'forward', now '<lambda>'"):
        mto.restore(other, buffer)
