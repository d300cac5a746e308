import random

import pytest
import torch

import nascli.nas as mtn
from nascli.errors import UserInputError
from nascli.models import resnet20
from nascli.space.space import get_space
from tests.helpers import assert_export_matches, hparam_of

X = torch.randn(2, 1, 8, 8)


@pytest.fixture
def model():
    return mtn.convert(resnet20(in_channels=1, width=64), dummy_input=X[:1])


def searchable(model, config):
    return {k: config[k] for k in mtn.get_subnet_config(model, configurable=True)}


def test_sample_forms(model):
    space = mtn.get_subnet_config(model, configurable=True)
    sampled = mtn.sample(model, max)
    assert sampled == mtn.get_subnet_config(model)  # the whole config, as ModelOpt returns it
    assert searchable(model, sampled) == {k: max(hparam_of(model, k).choices) for k in space}
    assert searchable(model, mtn.sample(model, "min")) == {k: min(hparam_of(model, k).choices) for k in space}
    config = searchable(model, mtn.sample(model, {"*.depth": "min", "*": max}))
    assert all(v == (1 if k.endswith("depth") else max(hparam_of(model, k).choices)) for k, v in config.items())
    random.seed(3)
    first = mtn.sample(model, random.choice)
    random.seed(3)
    assert mtn.sample(model) == first


def test_the_first_matching_pattern_wins_as_in_modelopt(model):
    """The README's example: the specific pattern first keeps layer3 at its largest, the rest at random."""
    layer3 = [k for k in mtn.get_subnet_config(model, configurable=True) if k.startswith("layer3.")]
    for seed in range(5):
        random.seed(seed)
        config = mtn.sample(model, {"layer3.*": max, "*": "random"})
        assert all(config[k] == max(hparam_of(model, k).choices) for k in layer3)
    config = mtn.sample(model, {"*": "min", "layer3.*": max})
    assert all(v == min(hparam_of(model, k).choices) for k, v in config.items())


def test_a_sample_pattern_matching_no_hparam_is_an_error(model):
    with pytest.raises(UserInputError, match="pattern 'layer4.\\*' matches no hparam"):
        mtn.sample(model, {"layer4.*": max, "*": "random"})


def test_select_refuses_a_bool_for_a_number(model):
    with pytest.raises(UserInputError, match=r"layer1.depth=True is not one of \[1, 2, 3\]"):
        mtn.select(model, {"layer1.depth": True})


def test_centroid_is_the_choice_nearest_the_mean(model):
    config = mtn.sample(model, "centroid")
    assert config["layer1.depth"] == 2
    assert config["conv1.out_channels"] == 32  # choices [32, 64]: a tie takes the smaller


def test_select_accepts_dependent_names_and_rejects_bad_values(model):
    mtn.select(model, {"layer1.0.bn1.num_features": 32})
    assert mtn.get_subnet_config(model)["layer1.0.conv1.out_channels"] == 32
    with pytest.raises(UserInputError, match=r"layer1.depth=7 is not one of \[1, 2, 3\]"):
        mtn.select(model, {"layer1.depth": 7})
    with pytest.raises(UserInputError, match="'nope' is not an hparam"):
        mtn.select(model, {"nope": 1})
    with pytest.raises(UserInputError, match="contradicts"):
        mtn.select(model, {"layer1.0.conv1.out_channels": 32, "layer1.0.bn1.num_features": 64})


def test_get_subnet_config_views(model):
    everything = mtn.get_subnet_config(model)
    configurable = mtn.get_subnet_config(model, configurable=True)
    fixed = mtn.get_subnet_config(model, configurable=False)
    assert set(configurable) < set(everything)
    assert "fc.out_features" in fixed and "fc.out_features" not in configurable


def test_depth_skips_trailing_blocks_and_export_drops_them(model):
    mtn.select(model, {"layer1.depth": 1, "layer2.depth": 2})
    model.eval()
    exported = assert_export_matches(model, X, {"layer1.depth": min, "layer2.depth": "centroid", "*": max})
    assert len(exported.layer1) == 1 and len(exported.layer2) == 2 and len(exported.layer3) == 3


def test_train_mode_samples_a_subnet_per_forward_and_sample_does_not_pin_it(model):
    """As in ModelOpt: ``sample`` sets the subnet, the next train-mode forward draws again."""
    model.train()
    seen = set()
    for _ in range(8):
        model(X)
        seen.add(tuple(mtn.get_subnet_config(model, configurable=True).values()))
    assert len(seen) > 1
    minimum = mtn.sample(model, "min")
    drawn = set()
    for _ in range(5):
        model(X)
        drawn.add(tuple(mtn.get_subnet_config(model).values()))
    assert drawn != {tuple(minimum.values())}
    mtn.sample(model, "min")
    with pytest.warns(UserWarning, match="batches are cached"):  # too few to re-estimate BN statistics
        model.eval()  # no random training since the sample: the subnet stays
    model(X)
    assert mtn.get_subnet_config(model) == minimum


def test_random_sampling_is_switchable(model):
    mtn.sample(model, "min")
    minimum = mtn.get_subnet_config(model)
    model.train()
    with mtn.random_sampling(model, enabled=False):
        model(X)
        assert mtn.get_subnet_config(model) == minimum
    changed = False
    for _ in range(5):
        model(X)
        changed |= mtn.get_subnet_config(model) != minimum
    assert changed
    mtn.random_sampling(model, enabled=False)
    mtn.select(model, {"layer1.depth": 1})  # select leaves the setting as it was
    chosen = mtn.get_subnet_config(model)
    model(X)
    assert mtn.get_subnet_config(model) == chosen


def test_summary_lists_hparams_and_totals(model, capsys):
    mtn.print_search_space_summary(model)
    out = capsys.readouterr().out
    assert "* conv1.out_channels" in out and "  bn1.num_features" in out
    assert "Number of configurable hparams: " in out and "Total size of the search space: " in out


def test_converting_twice_or_unconverted_use_is_a_clear_error(model):
    with pytest.raises(UserInputError, match="already converted"):
        mtn.convert(model, dummy_input=X[:1])
    plain = resnet20()
    assert mtn.sample(plain, "min") == {} == mtn.get_subnet_config(plain)  # nothing to sample, as in ModelOpt
    mtn.select(plain, {})
    with pytest.raises(UserInputError, match="not a converted model"):
        mtn.select(plain, {"layer1.depth": 1})


def test_convert_accepts_factories_and_guesses_a_dummy_input():
    model = mtn.convert("nascli.models:resnet20")
    assert mtn.get_subnet_config(model, configurable=True)
    assert get_space(model).input_shapes == [(1, 3, 224, 224)]
    with pytest.raises(UserInputError, match="has no attribute 'nope'"):
        mtn.convert("nascli.models:nope")


def test_the_searched_subnet_stays_active_in_a_training_loop(model, tmp_path):
    import nascli.opt as mto

    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    scores = iter(range(100))
    config = {"data_loader": [(x, y)], "score_func": lambda m: float(next(scores)), "iterations": 1, "population": 4}
    mtn.search_select(model, {"flops": "80%"}, config={**config, "parents": 2})
    chosen = mtn.get_subnet_config(model)
    assert chosen != {name: hp.max for name, hp in get_space(model).hparams.items()}  # a smaller subnet
    model.train()
    for _ in range(3):
        model(x)
    assert mtn.get_subnet_config(model) == chosen  # a fine-tuning loop trains the chosen subnet
    mto.save(model, tmp_path / "searched.pt")
    restored = mto.restore(lambda: resnet20(in_channels=1, width=64), tmp_path / "searched.pt").train()
    restored(x)
    assert mtn.get_subnet_config(restored) == chosen


def test_search_exports_the_model_in_place_to_the_best_subnet_as_modelopt_does(model, tmp_path):
    import nascli.opt as mto

    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    scores = iter(range(100))
    config = {"data_loader": [(x, y)], "score_func": lambda m: float(next(scores)), "iterations": 1, "population": 4,
              "parents": 2, "checkpoint": tmp_path / "searched.pt"}  # fmt: skip
    supernet_params = sum(p.numel() for p in model.parameters())
    searched, history = mtn.search(model, {"flops": "80%"}, config=config)
    assert searched is model and not mtn.is_converted(model) and not mtn.is_dynamic(model)
    assert set(history) >= {"best", "candidates", "history", "pareto", "original", "constraints"}
    assert sum(p.numel() for p in model.parameters()) == history["best"]["params"] < supernet_params
    again = mtn.convert(resnet20(in_channels=1, width=64), dummy_input=X[:1])
    mtn.select(again, history["best"]["config"])
    shapes = {name: tensor.shape for name, tensor in mtn.export_copy(again).state_dict().items()}
    assert {name: tensor.shape for name, tensor in model.state_dict().items()} == shapes
    restored = mto.restore(lambda: resnet20(in_channels=1, width=64), tmp_path / "searched.pt")  # the checkpoint
    assert {name: tensor.shape for name, tensor in restored.state_dict().items()} == shapes
    with pytest.raises(AssertionError, match="no search space to export"):
        mtn.export(model)  # exported once: nothing left to export


@pytest.mark.parametrize(
    "loader, score, message",
    [
        ([(X, torch.zeros(2, dtype=torch.long))], 0.5, "score_func must be callable"),
        ([], lambda m: 0.5, "data_loader yields no batches"),
        (iter([(X,)]), lambda m: 0.5, "data_loader is a one-shot iterator"),
        (3, lambda m: 0.5, "data_loader must be iterable"),
    ],
)
def test_search_refuses_a_score_func_or_data_loader_it_cannot_use(model, loader, score, message):
    with pytest.raises(UserInputError, match=message):
        mtn.search(model, {"flops": "60%"}, config={"data_loader": loader, "score_func": score})


def test_profile_and_search_at_another_input_shape_give_that_shapes_costs():
    from nascli.cost.fvcore_count import count_params, fvcore_flops

    model = mtn.convert(resnet20(in_channels=1, width=64), dummy_input=torch.randn(1, 1, 8, 8))
    _, small = mtn.profile(model, verbose=False)
    bigger = torch.randn(1, 1, 16, 16)
    _, large = mtn.profile(model, bigger, verbose=False)
    assert large["max"]["params"] == small["max"]["params"]
    assert large["max"]["flops"] == fvcore_flops(resnet20(in_channels=1, width=64).eval(), (bigger,))
    mtn.sample(model, "min")
    exported = mtn.export_copy(model).eval()
    assert large["min"] == {"flops": fvcore_flops(exported, (bigger,)), "params": count_params(exported)}
    x, y = torch.randn(4, 1, 12, 12), torch.randint(0, 10, (4,))
    config = {"data_loader": [(x, y)], "score_func": lambda m: 0.5, "iterations": 1, "population": 4, "parents": 2}
    _, report = mtn.search(model, {"flops": "50%"}, dummy_input=x[:1], config=config)
    assert report["original"]["flops"] == fvcore_flops(resnet20(in_channels=1, width=64).eval(), (x[:1],))


def test_signatures_take_modelopts_parameter_names():
    """Code written for ModelOpt 0.47 passes its parameters by these names and in this order."""
    import inspect

    expected = {
        mtn.convert: ["model", "mode", "registry"],
        mtn.export: ["model", "strict", "calib"],
        mtn.select: ["model", "config", "strict"],
        mtn.print_search_space_summary: ["model", "skipped_hparams"],
        mtn.profile: ["model", "dummy_input", "constraints", "deployment", "strict", "verbose", "use_centroid"],
        mtn.replace_forward: ["model", "new_forward"],
    }
    for func, names in expected.items():
        assert list(inspect.signature(func).parameters)[: len(names)] == names, func.__name__


def test_select_strict_as_in_modelopt(model):
    full = mtn.get_subnet_config(model)
    searched = mtn.get_subnet_config(model, configurable=True)
    mtn.select(model, full, strict=True)  # get_subnet_config's own config passes
    mtn.select(model, searched, strict=True)
    partial = dict(list(searched.items())[:1])
    with pytest.raises(RuntimeError, match="Missing keys"):
        mtn.select(model, partial, strict=True)
    name, value = next(iter(partial.items()))
    other = min(hparam_of(model, name).choices)
    mtn.select(model, {name: other, "not.an.hparam": 3}, strict=False)  # ignored, as ModelOpt's strict=False
    assert mtn.get_subnet_config(model)[name] == other
    with pytest.raises(UserInputError):
        mtn.select(model, {"not.an.hparam": 3})  # nascli's default: a typo is an error
    fixed = next(k for k in full if k not in searched)
    with pytest.raises(RuntimeError, match="Missing keys"):  # a fixed name given asks for all of them
        mtn.select(model, {**searched, fixed: full[fixed]}, strict=True)


def test_summary_skips_hparams_as_in_modelopt(model, capsys):
    mtn.print_search_space_summary(model, ["out_channels"])
    listed = [line.split()[1] for line in capsys.readouterr().out.splitlines() if line.startswith(("*", " "))]
    assert listed and not any(name.endswith("out_channels") for name in listed)
    mtn.print_search_space_summary(model, skipped_hparams=[])
    assert "out_channels" in capsys.readouterr().out


def test_export_and_profile_take_modelopts_flags(model):
    with pytest.raises(ValueError, match="NOT all constraints"):
        mtn.profile(model, X[:1], {"params": 10}, strict=True, verbose=False)
    with pytest.raises(UserInputError, match="latency is predicted"):
        mtn.profile(model, X[:1], {"params": "90%"}, deployment={"runtime": "ORT"}, verbose=False)
    assert mtn.profile(model, X[:1], {"params": "90%"}, None, True, verbose=False)[0]
    exported = mtn.export(model, strict=True, calib=False)
    assert not mtn.is_dynamic(exported)
    with pytest.raises(UserInputError, match="registry"):
        mtn.convert(resnet20(in_channels=1, width=64), "autonas", registry=object())


def test_export_nas_takes_its_config_as_in_modelopt():
    def net():
        return torch.nn.Sequential(torch.nn.Conv2d(1, 64, 3), torch.nn.ReLU(), torch.nn.Conv2d(64, 8, 3))

    for export_mode in (
        ("export_nas", mtn.ExportConfig()),
        ("export_nas", {"calib": False}),
        mtn.ExportNASModeDescriptor(),
    ):
        plain = mtn.convert(net(), ["autonas", export_mode], dummy_input=X[:1])
        assert not mtn.is_dynamic(plain)
    assert mtn.ExportConfig(calib=True)["calib"] and mtn.ExportNASModeDescriptor().config_class is mtn.ExportConfig
    with pytest.raises(UserInputError, match="keys: strict, calib"):
        mtn.convert(net(), ["autonas", ("export_nas", {"calibrate": True})], dummy_input=X[:1])


def test_replace_forward_as_in_modelopt(model):
    model.eval()  # one subnet, not one drawn per forward
    original = model(X)
    with mtn.replace_forward(model, lambda self, x: None):
        assert model(X) is None
        assert torch.equal(model.forward_original(X), original)
    assert torch.equal(model(X), original)
    assert not hasattr(model, "forward_original")
