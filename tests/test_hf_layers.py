"""``--format hf`` of a subnet whose decoder layers differ in width: a directory with its own modeling
file, which ``AutoModelForCausalLM.from_pretrained(..., trust_remote_code=True)`` loads and whose
logits and greedy generation are the subnet's."""

import pytest
import torch

import nascli.nas as mtn
from nascli.errors import UserInputError
from nascli.hf_export import save_pretrained_subnet
from nascli.hf_layers import MODULE_FILE, layer_sizes
from nascli.numerics import outputs_match
from nascli.space.space import get_space

transformers = pytest.importorskip("transformers")

IDS = torch.randint(0, 100, (2, 8), generator=torch.Generator().manual_seed(0))
SIZES = {"vocab_size": 100, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 3}
MODELS = {
    "llama": ("LlamaForCausalLM", "LlamaConfig", torch.float32),
    "qwen2": ("Qwen2ForCausalLM", "Qwen2Config", torch.float32),
    "mistral_bf16": ("MistralForCausalLM", "MistralConfig", torch.bfloat16),
    "phi3": ("Phi3ForCausalLM", "Phi3Config", torch.float32),  # q, k and v fused; gate and up fused
}
EXTRA = {"phi3": {"pad_token_id": 0, "eos_token_id": 0}}
MLP = {"phi3": "gate_up_proj.out_features[0]"}


def _converted(model_class: str, config_class: str, dtype: torch.dtype, **extra):
    extra = {**EXTRA.get(config_class.removesuffix("Config").lower(), {}), **extra}
    config = getattr(transformers, config_class)(**SIZES, num_attention_heads=4, num_key_value_heads=2, **extra)
    torch.manual_seed(0)
    model = getattr(transformers, model_class)(config).to(dtype).eval()
    return mtn.convert(model, "fastnas", dummy_input=IDS[:1]).eval()


@pytest.mark.parametrize("name", list(MODELS))
@torch.no_grad()
def test_layers_of_different_widths_load_with_their_own_modeling_file(name, tmp_path):
    model = _converted(*MODELS[name])
    hidden = get_space(model).hparams["model.embed_tokens.weight.shape[1]"].choices[-2]
    mlp = MLP.get(name, "gate_proj.out_features")
    mtn.select(
        model,
        {
            f"model.layers.0.mlp.{mlp}": 32,
            "model.layers.0.self_attn.num_kv_heads": 1,
            "model.layers.1.self_attn.num_heads_per_group": 1,
            f"model.layers.2.mlp.{mlp}": 64,
            "model.embed_tokens.weight.shape[1]": hidden,
        },
    )
    expected = model(IDS).logits
    directory = save_pretrained_subnet(model, (IDS,), tmp_path / "hf")  # exports the subnet in place
    generated = model.generate(IDS[:1], max_new_tokens=6, do_sample=False)

    assert (directory / MODULE_FILE).is_file()
    loaded = transformers.AutoModelForCausalLM.from_pretrained(directory, trust_remote_code=True).eval()
    assert layer_sizes(loaded) == [
        {"intermediate_size": 32, "num_attention_heads": 2, "num_key_value_heads": 1},
        {"intermediate_size": 96, "num_attention_heads": 2, "num_key_value_heads": 2},
        {"intermediate_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2},
    ]
    assert loaded.dtype == MODELS[name][2] and loaded.config.hidden_size == hidden < 64
    assert outputs_match(loaded(IDS).logits, expected)  # within the dtype's tolerance (nascli/numerics.py)
    torch.testing.assert_close(loaded.generate(IDS[:1], max_new_tokens=6, do_sample=False), generated)


def test_without_trust_remote_code_transformers_refuses_it_instead_of_building_wrong_sizes(tmp_path):
    model = _converted(*MODELS["llama"])
    mtn.select(model, {"model.layers.0.mlp.gate_proj.out_features": 32})
    directory = save_pretrained_subnet(model, (IDS,), tmp_path / "hf")
    with pytest.raises(ValueError, match="trust_remote_code"):
        transformers.AutoModelForCausalLM.from_pretrained(directory, trust_remote_code=False)


@torch.no_grad()
def test_a_uniform_subnet_keeps_the_models_own_class(tmp_path):
    model = _converted(*MODELS["llama"])
    mtn.select(model, {f"model.layers.{i}.mlp.gate_proj.out_features": 64 for i in range(3)})
    directory = save_pretrained_subnet(model, (IDS,), tmp_path / "hf")
    assert not (directory / MODULE_FILE).exists()
    assert type(transformers.AutoModelForCausalLM.from_pretrained(directory)) is transformers.LlamaForCausalLM


def test_a_decoder_off_the_convention_with_layers_of_different_widths_is_refused(tmp_path):
    config = transformers.GPT2Config(vocab_size=100, n_embd=64, n_layer=2, n_head=4, n_inner=128)
    model = mtn.convert(transformers.GPT2LMHeadModel(config).eval(), "fastnas", dummy_input=IDS[:1])
    [mlp] = [n for n in get_space(model).hparams if n.startswith("transformer.h.0.") and "mlp" in n]
    mtn.select(model, {mlp: get_space(model).hparams[mlp].choices[0]})
    with pytest.raises(UserInputError, match="--format pt2 or onnx"):
        save_pretrained_subnet(model, (IDS,), tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


def test_sizes_the_config_class_rejects_are_one_error_naming_them(tmp_path):
    config = transformers.LlamaConfig(**{**SIZES, "hidden_size": 96}, num_attention_heads=6, num_key_value_heads=3)
    model = mtn.convert(transformers.LlamaForCausalLM(config).eval(), "fastnas", dummy_input=IDS[:1])
    mtn.select(model, {"model.embed_tokens.weight.shape[1]": 64, "model.layers.0.mlp.gate_proj.out_features": 32})
    with pytest.raises(UserInputError, match=r"LlamaConfig rejects the subnet's sizes \(hidden_size=64") as error:
        save_pretrained_subnet(model, (IDS,), tmp_path / "hf")
    assert "not a multiple of the number of attention heads (6)" in str(error.value)
    assert len(str(error.value).splitlines()) == 1 and not (tmp_path / "hf").exists()
