"""Searching a Hugging Face language model from Python, scored by the caller's own loss."""

import pytest
import torch

import nascli.nas as mtn

transformers = pytest.importorskip("transformers")


def test_a_llama_is_searched_under_a_params_bound_by_its_language_model_loss():
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=100, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, use_cache=False,
    )  # fmt: skip
    model = transformers.LlamaForCausalLM(config)
    ids = torch.randint(0, 100, (4, 16))
    mtn.convert(model, "fastnas", dummy_input=ids[:1])

    def score(subnet):
        with torch.no_grad():
            return -float(subnet(ids, labels=ids).loss)

    exported, report = mtn.search(model, {"params": "60%"}, dummy_input=ids[:1], config={"score_func": score})
    assert report["best"]["params"] <= 0.6 * report["original"]["params"]
    assert exported is model and sum(p.numel() for p in model.parameters()) == report["best"]["params"]
    exported.eval()
    assert score(exported) == pytest.approx(report["best"]["score"], abs=1e-5)
