"""The transformer zoo: Hugging Face and timm models with random weights and tiny configs.

For each model: conversion finds the expected search dimensions (heads or key/value groups, MLP
width, hidden width where the model's code allows it); the max subnet computes exactly what the
model as built did; min, centroid and random subnets export to native layers with the same
output, and their analytic flops and params equal fvcore's and ``numel``'s on the export;
save -> restore from the factory gives the same subnet and output. The hparam count and the
conversion time are printed beside the model's name.
"""

import time

import pytest
import torch

import nascli.nas as mtn
import nascli.opt as mto
from nascli.cost.fvcore_count import count_params, fvcore_flops
from nascli.cost.model import cost_model
from nascli.space.space import get_space
from tests.helpers import assert_export_matches

transformers = pytest.importorskip("transformers")
timm = pytest.importorskip("timm")

TOKENS = torch.randint(0, 100, (2, 8), generator=torch.Generator().manual_seed(0))
IMAGES = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def _hf(model: str, config: str, **settings):
    """A Hugging Face model class built from a tiny config."""
    return lambda: getattr(transformers, model)(getattr(transformers, config)(**settings))


TEXT = {"vocab_size": 100, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4}
GQA = {**TEXT, "num_key_value_heads": 2, "use_cache": False}  # 4 query heads in 2 key/value groups
GPT2 = {"vocab_size": 100, "n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 32, "use_cache": False,
        "bos_token_id": 0, "eos_token_id": 0}  # fmt: skip
VIT = {**TEXT, "image_size": 32, "patch_size": 8, "num_labels": 10}


def _timm(name, **kwargs):
    return lambda: timm.create_model(name, num_classes=10, **kwargs)


GROUPED = ["self_attn.num_kv_heads", "self_attn.num_heads_per_group", "mlp.gate_proj", "embed_tokens.weight"]
# name: (factory, input, hparam name fragments that must be searchable, the same for autonas only, slow)
ZOO = {
    "llama": (_hf("LlamaForCausalLM", "LlamaConfig", **GQA), TOKENS, GROUPED, ["layers.depth"], False),
    "qwen2": (_hf("Qwen2ForCausalLM", "Qwen2Config", **GQA), TOKENS, GROUPED, ["layers.depth"], False),
    "phi3": (_hf("Phi3ForCausalLM", "Phi3Config", **GQA, pad_token_id=0, eos_token_id=0), TOKENS,
             ["self_attn.num_kv_heads", "self_attn.num_heads_per_group", "mlp.gate_up_proj", "embed_tokens.weight"],
             ["layers.depth"], False),  # q, k and v sliced out of one projection by head counts it holds
    "mixtral": (_hf("MixtralForCausalLM", "MixtralConfig", **GQA, num_local_experts=4, num_experts_per_tok=2), TOKENS,
                ["self_attn.num_kv_heads", "self_attn.num_heads_per_group", "embed_tokens.weight",
                 "experts.gate_up_proj.shape[1]"],
                ["layers.depth"], False),  # the experts' 3-d weights follow the hidden width and their own
    "gpt2": (_hf("GPT2LMHeadModel", "GPT2Config", **GPT2), TOKENS, ["attn.num_heads", "mlp.c_fc", "wte.weight"],
             ["transformer.h.depth"], False),
    "bert": (_hf("BertForSequenceClassification", "BertConfig", **TEXT, max_position_embeddings=32), TOKENS,
             ["attention.self.num_heads", "intermediate.dense", "word_embeddings.weight"], ["encoder.layer.depth"],
             False),
    "hf_vit": (_hf("ViTForImageClassification", "ViTConfig", **VIT), IMAGES,
               ["attention.num_heads", "mlp.fc1", "cls_token"], ["layers.depth"], False),
    "timm_vit": (_timm("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2), IMAGES,
                 ["attn.num_heads", "mlp.fc1", "cls_token"], ["blocks.depth"], False),
    # windowed attention: shifted windows rolled, partitioned and reversed, a relative-position bias per head,
    # patch merging of 2 x 2 neighbours between stages
    "timm_swin": (_timm("swin_tiny_patch4_window7_224", img_size=32, patch_size=2, window_size=4, embed_dim=64,
                        depths=(2, 2), num_heads=(2, 4)), IMAGES,
                  ["attn.num_heads", "mlp.fc1", "patch_embed.proj", "downsample.reduction"], ["blocks.depth"], False),
    "timm_convnext": (_timm("convnext_atto"), IMAGES, ["stages.0"], [], True),
    "timm_efficientnet": (_timm("efficientnet_b0"), IMAGES, ["blocks"], [], True),
    "timm_mobilevit": (_timm("mobilevitv2_050"), IMAGES, ["stages", "attn.qkv_proj.out_channels[2]"], [], True),
}  # fmt: skip
CASES = [
    pytest.param(name, mode, marks=[pytest.mark.slow] if zoo[4] or mode == "autonas" else [], id=f"{name}-{mode}")
    for name, zoo in ZOO.items()
    for mode in ("fastnas", "autonas")
]


def _output(out):
    """The tensor of a model output (Hugging Face returns a ModelOutput)."""
    return out if isinstance(out, torch.Tensor) else out[0]


class _FirstOutput(torch.nn.Module):
    """fvcore traces tensors only: count the model that returns its first output."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _output(self.model(x))


@pytest.mark.parametrize("name, mode", CASES)
@torch.no_grad()
def test_transformer_zoo_model(name, mode, tmp_path, capsys):
    factory, x, expected, with_depth, _ = ZOO[name]
    expected = expected + with_depth if mode == "autonas" else expected

    def build():
        torch.manual_seed(0)
        return factory().eval()

    model = build()
    reference = _output(model(x))
    start = time.perf_counter()
    mtn.convert(model, mode, dummy_input=x[:1])
    seconds = time.perf_counter() - start
    model.eval()
    torch.testing.assert_close(_output(model(x)), reference, atol=0, rtol=0)
    hparams = get_space(model).hparams
    for fragment in expected:
        assert any(fragment in hp for hp in hparams), (fragment, list(hparams))
    with capsys.disabled():
        print(f"\n  {name} {mode}: {len(hparams)} hparams, convert {seconds:.2f} s", end="")

    costs = cost_model(model)
    for how in ("min", "centroid", "random", "random"):
        exported = assert_export_matches(model, x, how)
        assert costs.cost() == {
            "flops": fvcore_flops(_FirstOutput(exported), (x[:1],)),
            "params": count_params(exported),
        }, how

    mtn.sample(model, "random")
    mto.save(model, tmp_path / "model.pt")
    restored = mto.restore(build, tmp_path / "model.pt").eval()
    assert mtn.get_subnet_config(restored) == mtn.get_subnet_config(model)
    model.eval()
    torch.testing.assert_close(_output(restored(x)), _output(model(x)), atol=0, rtol=0)
