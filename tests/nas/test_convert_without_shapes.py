"""``mtn.convert`` without a dummy input on a model no guessed shape runs: the conversion waits for its first input."""

import copy
import io

import pytest
import torch
from torch import nn

import nascli.nas as mtn
import nascli.opt as mto
from nascli.errors import UserInputError
from nascli.space.space import get_space

LENGTH = 256
X = torch.randn(4, 1, LENGTH)


def signal_model() -> nn.Module:
    """A 1-d model that runs only on inputs of 256 samples (not 224 nor 16,000, the guesses)."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv1d(1, 64, 5), nn.ReLU(), nn.Conv1d(64, 16, 5), nn.Flatten(), nn.Linear(16 * (LENGTH - 8), 10)
    )


def test_converts_on_the_first_forward_as_the_original_at_max():
    original = signal_model().eval()
    model = copy.deepcopy(original)
    assert mtn.convert(model, mode="autonas") is model  # in place, as ModelOpt
    assert mtn.is_dynamic(model)
    for needs_space in (
        lambda: dict(mtn.named_hparams(model)),
        lambda: mtn.sample(model),
        lambda: mtn.select(model, {}),
        lambda: mtn.get_subnet_config(model),
        lambda: mtn.print_search_space_summary(model),
        lambda: mto.modelopt_state(model),
        lambda: mto.save(model, io.BytesIO()),
        lambda: mtn.profile(model, verbose=False),
    ):
        with pytest.raises(UserInputError, match="run a forward on a batch, or pass dummy_input"):
            needs_space()
    params = [id(p) for p in model.parameters()]
    with torch.no_grad():
        out = model(X)
    assert [id(p) for p in model.parameters()] == params  # an optimizer made before the forward trains it
    assert torch.equal(out, original(X))  # converted at its max subnet, which is the original
    assert {n: hp.choices for n, hp in mtn.named_hparams(model, configurable=True)} == {"0.out_channels": (32, 64)}
    assert get_space(model).input_shapes == [(1, 1, LENGTH)]  # the first sample of the batch
    mtn.sample(model, "min")
    assert model(X).shape == (4, 10)


def test_profile_and_search_convert_on_their_dummy_input():
    model = mtn.convert(signal_model(), mode="autonas")
    _, stats = mtn.profile(model, dummy_input=X[:1], verbose=False)
    assert stats["min"]["flops"] < stats["max"]["flops"]

    model = mtn.convert(signal_model(), mode="fastnas")
    config = {"score_func": lambda m: -sum(p.numel() for p in m.parameters()), "iterations": 1, "population": 4}
    searched, history = mtn.search(model, {"flops": "80%"}, dummy_input=X[:1], config=config)
    assert searched is model and not mtn.is_dynamic(model)
    assert history["best"]["flops"] <= 0.8 * history["original"]["flops"]


def test_a_chain_waits_and_convert_with_an_input_applies_what_waits():
    model = mtn.convert(signal_model(), mode="autonas")
    mtn.convert(model, mode=["export_nas", "fastnas"])  # follows the autonas waiting, itself waiting
    mtn.convert(model, mode=[], dummy_input=X[:1])  # nothing new: what waits stays waiting
    with pytest.raises(UserInputError, match="pass dummy_input"):
        mtn.get_subnet_config(model)
    model(X)
    modes = [name for name, _ in mto.modelopt_state(model)["modelopt_state_dict"]]
    assert modes == ["autonas", "export_nas", "fastnas"]
    with pytest.raises(AssertionError):
        mtn.convert(signal_model(), mode=["autonas", "autonas"])  # refused before anything waits


def test_save_and_restore_round_trip(tmp_path):
    model = mtn.convert(signal_model(), mode="autonas")
    model(X)
    mtn.sample(model, "min")
    mto.save(model, tmp_path / "m.pt")
    restored = mto.restore(signal_model(), tmp_path / "m.pt")
    assert mtn.get_subnet_config(restored) == mtn.get_subnet_config(model)
    model.eval(), restored.eval()
    assert torch.equal(restored(X), model(X))


def test_a_copy_waits_for_its_own_input():
    model = mtn.convert(signal_model(), mode="autonas")
    twin = copy.deepcopy(model)
    model(X)
    with pytest.raises(UserInputError, match="pass dummy_input"):
        mtn.get_subnet_config(twin)
    twin(X)
    assert mtn.get_subnet_config(twin) == mtn.get_subnet_config(model)


def test_a_failed_first_input_leaves_the_model_waiting():
    model = mtn.convert(signal_model(), mode="autonas")
    with pytest.raises(Exception):  # noqa: B017 (the model's own error on a wrong length)
        model(torch.randn(2, 1, 100))
    model(X)
    assert mtn.get_subnet_config(model, configurable=True) == {"0.out_channels": 64}


def test_image_models_still_convert_on_a_guessed_input():
    model = mtn.convert(nn.Sequential(nn.Conv2d(3, 64, 3), nn.ReLU(), nn.Conv2d(64, 8, 3)), mode="autonas")
    assert get_space(model).input_shapes == [(1, 3, 224, 224)]
    assert "0.out_channels" in mtn.get_subnet_config(model, configurable=True)
