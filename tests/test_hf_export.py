"""``--format hf`` of a subnet with fewer query heads in each key/value group: the config says
``num_attention_heads = kv_heads * heads per group`` with the head size kept, and what
``from_pretrained`` loads computes the subnet's logits."""

import pytest
import torch

import nascli.nas as mtn
from nascli.hf_export import save_pretrained_subnet

transformers = pytest.importorskip("transformers")

IDS = torch.randint(0, 100, (2, 8), generator=torch.Generator().manual_seed(0))
SIZES = {"vocab_size": 100, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2, "use_cache": False}
# (model class, config class, query heads, key/value heads, query heads per group kept)
MODELS = {
    "llama": ("LlamaForCausalLM", "LlamaConfig", 4, 2, 1),
    "qwen2": ("Qwen2ForCausalLM", "Qwen2Config", 4, 2, 1),
    "mistral": ("MistralForCausalLM", "MistralConfig", 8, 2, 2),
    "mqa_llama": ("LlamaForCausalLM", "LlamaConfig", 4, 1, 2),
}


@pytest.mark.parametrize("name", list(MODELS))
@torch.no_grad()
def test_fewer_query_heads_per_group_load_with_from_pretrained(name, tmp_path):
    model_class, config_class, heads, kv_heads, per_group = MODELS[name]
    config = getattr(transformers, config_class)(**SIZES, num_attention_heads=heads, num_key_value_heads=kv_heads)
    torch.manual_seed(0)
    model = getattr(transformers, model_class)(config).eval()
    head_dim = 64 // heads
    mtn.convert(model, "fastnas", dummy_input=IDS[:1]).eval()
    mtn.select(model, {f"model.layers.{i}.self_attn.num_heads_per_group": per_group for i in range(2)})
    expected = model(IDS).logits
    save_pretrained_subnet(model, (IDS,), tmp_path / "hf")
    loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", local_files_only=True).eval()
    saved = loaded.config
    assert (saved.num_attention_heads, saved.num_key_value_heads) == (kv_heads * per_group, kv_heads)
    assert loaded.model.layers[0].self_attn.head_dim == head_dim
    assert loaded.model.layers[0].self_attn.q_proj.out_features == kv_heads * per_group * head_dim
    torch.testing.assert_close(loaded(IDS).logits, expected, atol=1e-5, rtol=1e-4)


@torch.no_grad()
def test_a_narrower_width_of_every_expert_loads_with_from_pretrained(tmp_path):
    """Mixtral's experts hold their weights as 3-d parameters: a subnet with every expert narrower is a
    Mixtral of a smaller ``intermediate_size``."""
    config = transformers.MixtralConfig(
        **SIZES, num_attention_heads=4, num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2
    )
    torch.manual_seed(0)
    model = transformers.MixtralForCausalLM(config).eval()
    mtn.convert(model, "autonas", dummy_input=IDS[:1]).eval()
    mtn.select(model, {f"model.layers.{i}.mlp.experts.gate_up_proj.shape[1][0]": 48 for i in range(2)})
    expected = model(IDS).logits
    save_pretrained_subnet(model, (IDS,), tmp_path / "hf")
    loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", local_files_only=True).eval()
    assert loaded.config.intermediate_size == 48
    assert loaded.model.layers[0].mlp.experts.down_proj.shape == (4, 64, 48)
    torch.testing.assert_close(loaded(IDS).logits, expected, atol=1e-5, rtol=1e-4)
