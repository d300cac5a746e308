"""The activation function as a categorical hparam: max is the model as built; export swaps modules."""

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import nascli.nas as mtn
import nascli.opt as mto
from nascli.cost.fvcore_count import count_params, fvcore_flops
from nascli.cost.model import cost_model
from nascli.errors import UserInputError
from nascli.space.kinds.activation import ActivationKind
from tests.helpers import assert_export_matches, hparam_of
from tests.space.kinds.conformance import assert_kind_conforms
from tests.topologies import Activations

X = torch.randn(2, 3, 8, 8)


def _config():
    config = mtn.config.AutoNASConfig()
    config["nn.ReLU"] = {"*": {"choices": ["relu", "hardswish", "silu"]}}
    config["nn.Hardswish"] = {"*": {"choices": ["relu", "gelu"]}}
    return config


def _converted():
    torch.manual_seed(0)
    model = Activations().eval()
    reference = model(X)
    mtn.convert(model, [("autonas", _config())], dummy_input=X[:1])
    torch.testing.assert_close(model.eval()(X), reference, atol=0, rtol=0)
    return model


def test_activation_kind_keeps_the_layer_kind_contract(tmp_path):
    assert_kind_conforms(Activations, X, ActivationKind, tmp_path, mode=[("autonas", _config())])


def test_activation_choices_keep_the_layers_own_activation_as_max():
    model = _converted()
    assert hparam_of(model, "act.activation").choices == ("hardswish", "silu", "relu")
    assert hparam_of(model, "gate.activation").choices == ("relu", "gelu", "hardswish")
    assert mtn.get_subnet_config(model, configurable=True)["act.activation"] == "relu"
    assert hparam_of(model, "act.activation").centroid == "relu"


def test_export_replaces_the_module_with_the_chosen_activation():
    model = _converted()
    exported = assert_export_matches(model, X, {"act.activation": lambda c: "silu", "*": max})
    assert type(exported.act) is torch.nn.SiLU and type(exported.gate) is torch.nn.Hardswish
    exported = assert_export_matches(model, X, "max")
    assert type(exported.act) is torch.nn.ReLU and exported.act.inplace
    costs = cost_model(model)
    for how in ("min", "random", "random", "random"):
        exported = assert_export_matches(model, X, how)
        assert costs.cost() == {"flops": fvcore_flops(exported, (X[:1],)), "params": count_params(exported)}


def test_a_categorical_choice_survives_save_and_restore(tmp_path):
    model = _converted()
    mtn.select(model, {"act.activation": "hardswish", "gate.activation": "gelu"})
    mto.save(model, tmp_path / "m.pt")
    restored = mto.restore(Activations, tmp_path / "m.pt").eval()
    assert mtn.get_subnet_config(restored) == mtn.get_subnet_config(model)
    torch.testing.assert_close(restored(X), model.eval()(X))


@pytest.mark.parametrize("algorithm", ["evolve", "random", "sensitivity"])
def test_search_handles_categorical_hparams(algorithm):
    model = _converted()
    loader = DataLoader(TensorDataset(X, torch.zeros(2, dtype=torch.long)), batch_size=2)

    def score(m):  # prefers silu in act and a narrow c1, so the search has something to find
        config = mtn.get_subnet_config(m, configurable=True)
        return (config["act.activation"] == "silu") - config["c1.out_channels"] / 1000

    config = {"data_loader": loader, "score_func": score, "max_iter_data_loader": 1, "algorithm": algorithm,
              "population": 8, "parents": 3, "iterations": 3}  # fmt: skip
    model, history = mtn.search(model, {"flops": "90%"}, config=config)
    values = {c["config"]["act.activation"] for c in history["candidates"]}
    assert values <= {"hardswish", "silu", "relu"}
    if algorithm == "sensitivity":  # pruning leaves activations as built
        assert history["best"]["config"]["act.activation"] == "relu" and "act.activation" not in history["sensitivity"]
    else:
        assert history["best"]["config"]["act.activation"] == "silu"


def test_unknown_activation_choices_are_one_clear_error():
    config = mtn.config.AutoNASConfig()
    config["nn.ReLU"] = {"*": {"choices": ["relu", "swish"]}}
    with pytest.raises(UserInputError, match=r"nn.ReLU.\*.choices: expected a list of activations from relu"):
        mtn.convert(Activations(), [("autonas", config)], dummy_input=X[:1])
