"""The memory metric: bf16 weights plus exactly the keys and values a Hugging Face cache holds."""

import pytest
import torch

import nascli.nas as mtn
from nascli.cost.model import cost_model
from tests.transformer_topologies import TinyDecoder

transformers = pytest.importorskip("transformers")


def _cached_entries(model, ids) -> int:
    """Entries of the keys and values the model's own cache holds after one forward."""
    with torch.no_grad():
        cache = model(ids, use_cache=True).past_key_values
    return sum(layer.keys.numel() + layer.values.numel() for layer in cache.layers if layer.keys is not None)


def test_the_kv_cache_of_every_subnet_is_the_cache_the_model_fills():
    config = transformers.LlamaConfig(
        vocab_size=100, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2,
    )  # fmt: skip
    torch.manual_seed(0)
    ids = torch.randint(0, 100, (1, 8))
    model = mtn.convert(transformers.LlamaForCausalLM(config), "autonas", dummy_input=ids)
    costs = cost_model(model)
    costs.memory_batch = 3
    for how in ("max", "min", "random", "random", "random"):
        mtn.sample(model, how)
        exported = mtn.export_copy(model).eval()
        found = costs.evaluate(costs.encode({}))
        entries = _cached_entries(exported, ids)
        assert found["kv_cache"][0] == entries, how
        weights = sum(p.numel() for p in exported.parameters())
        assert found["memory"][0] == 2 * (weights + 3 * entries), how


def test_a_model_without_attention_counts_its_weights_only():
    model = mtn.convert(torch.nn.Sequential(torch.nn.Linear(8, 64), torch.nn.Linear(64, 4)), "fastnas",
                        dummy_input=torch.randn(1, 8))  # fmt: skip
    costs = cost_model(model)
    assert not costs.has_kv_cache
    found = costs.evaluate(costs.encode(costs.named("min")))
    assert found["memory"][0] == 2 * found["params"][0]


def test_grouped_queries_cache_their_key_value_heads_once():
    model = mtn.convert(TinyDecoder(4, 2, "repeat"), "autonas", dummy_input=torch.randint(0, 50, (1, 6)))
    costs = cost_model(model)
    # 2 blocks x (keys + values) x 2 key/value heads x 6 positions x head size 8, not the 4 repeated heads
    assert costs.cost(metrics=("kv_cache",)) == {"kv_cache": 2 * 2 * 2 * 6 * 8}
