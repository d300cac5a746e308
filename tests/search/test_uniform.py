"""Uniform search: one value per role in every block, the subnet a Hugging Face config can hold."""

import pytest
import torch
from torch import nn

import nascli.nas as mtn
from nascli.cost.model import cost_model
from nascli.errors import UserInputError
from nascli.search.evolve import ConstrainedSearch, SearchSettings
from nascli.search.sensitivity import SensitivitySearch
from nascli.search.uniform import UniformCosts, role_of

transformers = pytest.importorskip("transformers")

WIDTH = "model.layers.*.mlp.gate_proj.out_features"
KV = "model.layers.*.self_attn.num_kv_heads"
PER_GROUP = "model.layers.*.self_attn.num_heads_per_group"


def _tiny_llama():
    from nascli.hf import from_config

    torch.manual_seed(0)
    config = {"vocab_size": 96, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 3,
              "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 32,
              "use_cache": False}  # fmt: skip
    model = from_config("LlamaForCausalLM", config)
    rules = {"nn.ModuleList": {"*": {"min_depth": 2}}}
    return mtn.convert(model, mode=[("fastnas", rules)], dummy_input=(torch.zeros(1, 16, dtype=torch.long),))


IDS = torch.randint(0, 96, (4, 16), generator=torch.Generator().manual_seed(1))


def _closeness(model: nn.Module) -> float:
    """How close the active subnet's logits stay to the full model's: a score that ranks subnets."""
    with torch.no_grad():
        return -float((model(IDS).logits - _closeness.reference).abs().mean())


def _score(model: nn.Module):
    mtn.sample(model, "max")
    with torch.no_grad():
        _closeness.reference = model(IDS).logits

    def score(config):
        mtn.select(model, config)
        return _closeness(model)

    return score


def _uniform(config: dict) -> bool:
    by_role: dict[str, set] = {}
    for name, value in config.items():
        by_role.setdefault(role_of(name), set()).add(value)
    return all(len(values) == 1 for values in by_role.values())


def test_block_indices_become_one_role():
    assert role_of("model.layers.11.mlp.gate_proj.out_features") == WIDTH
    assert role_of("0.out_channels") == "*.out_channels"
    assert role_of("model.embed_tokens.weight.shape[1]") == "model.embed_tokens.weight.shape[1]"
    assert role_of("layer2.10.conv1.out_channels") == "layer2.*.conv1.out_channels"


def test_roles_move_every_member_and_cost_what_the_model_costs():
    model = _tiny_llama()
    costs = cost_model(model)
    uniform = UniformCosts(costs)
    assert uniform.names == ["model.layers.depth", WIDTH, KV, PER_GROUP]
    row = uniform.encode({WIDTH: 32, KV: 1, "model.layers.depth": 2})[0]
    config = uniform.config_of(row)
    assert [config[f"model.layers.{i}.mlp.gate_proj.out_features"] for i in range(3)] == [32, 32, 32]
    assert config["model.layers.depth"] == 2 and len(config) == len(costs.names)
    assert uniform.cost(config) == costs.cost(config)
    mtn.select(model, config)
    exported = mtn.export_copy(model)
    assert uniform.cost(config)["params"] == sum(p.numel() for p in exported.parameters())
    assert uniform.encode(config).tolist() == [row.tolist()]  # member names encode to the same row
    with pytest.raises(ValueError, match="needs one value for its members"):
        uniform.encode({**config, "model.layers.0.mlp.gate_proj.out_features": 64})
    mtn.select(model, {"model.layers.1.mlp.gate_proj.out_features": 64})  # the active subnet is not uniform
    with pytest.raises(ValueError, match="needs one value for its members"):
        uniform.cost()


def test_members_with_other_choices_keep_a_column_each():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 16, 3), nn.ReLU(), nn.Conv2d(16, 16, 3))
    config = mtn.config.FastNASConfig()
    config["nn.Conv2d"]["*"]["channel_divisor"] = 4
    model = mtn.convert(net, [("fastnas", config)], dummy_input=torch.zeros(1, 3, 12, 12))
    uniform = UniformCosts(cost_model(model))
    assert uniform.names == cost_model(model).names  # 8 and 16 channels: other choices, nothing to tie
    assert uniform.untied == ["*.out_channels"]


@pytest.mark.parametrize("algorithm", ["sensitivity", "evolve"])
def test_a_uniform_search_meets_the_bound_with_one_value_per_role(algorithm):
    model = _tiny_llama()
    costs = cost_model(model)
    bound = {"params": 0.7 * costs.cost(costs.named("max"))["params"]}
    uniform = UniformCosts(costs)
    if algorithm == "sensitivity":
        state = SensitivitySearch(uniform, bound, _score(model)).run()
    else:
        state = ConstrainedSearch(uniform, bound, _score(model), SearchSettings(12, 4, iterations=3)).run()
    assert state.evaluated and all(_uniform(c.config) for c in state.evaluated.values())
    assert all(c.params <= bound["params"] for c in state.evaluated.values())
    assert len(state.probes) <= 1 + sum(len(hp.choices) - 1 for hp in uniform.hparams.values())


def test_mtn_search_uniform_picks_a_subnet_from_pretrained_loads(tmp_path):
    from nascli.hf_export import save_pretrained_subnet

    model = _tiny_llama()
    score = _closeness
    _score(model)  # the full model's logits as the reference
    searched, history = mtn.search_select(model, {"params": "70%"}, config={"score_func": score, "uniform": True})
    config = mtn.get_subnet_config(searched)
    assert _uniform(config) and history["uniform"] and WIDTH in history["sensitivity"]
    assert config != mtn.get_subnet_config(_tiny_llama())  # pruned, not the full model
    save_pretrained_subnet(searched, (IDS,), tmp_path / "hf")
    loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", local_files_only=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(IDS).logits, searched(IDS).logits, atol=1e-4, rtol=1e-4)
    assert sum(p.numel() for p in loaded.parameters()) == history["best"]["params"]


def test_a_latency_bounded_uniform_search_of_a_cnn_ties_the_blocks_of_each_stage():
    from nascli.cost.latency import LatencyModel
    from tests.search.common import converted_resnet20

    model = converted_resnet20("autonas")
    costs = cost_model(model)
    uniform = UniformCosts(costs)
    assert "layer1.*.conv1.out_channels" in uniform.names and len(uniform.names) < len(costs.names)
    timing = LatencyModel(model, repeats=1)
    timing.calibrate()
    bound = timing.predict(costs.named("centroid"))
    state = ConstrainedSearch(uniform, {"latency": bound}, lambda c: 0.0, SearchSettings(10, 3), latency=timing).run()
    assert state.evaluated and all(c.latency <= bound and _uniform(c.config) for c in state.evaluated.values())
    with pytest.raises(UserInputError, match="'uniform' must be True or False"):
        mtn.search(model, {"flops": "90%"}, config={"score_func": lambda m: 0.0, "uniform": "false"})


def test_a_search_resumes_only_with_the_uniform_setting_it_ran_with():
    from nascli.stages.search import _check_resumed_uniform

    _check_resumed_uniform({"uniform": True}, True)
    _check_resumed_uniform({}, False)  # a search.pt written before the setting existed
    with pytest.raises(UserInputError, match="ran with search.uniform=true; resume with that"):
        _check_resumed_uniform({"uniform": True}, False)
