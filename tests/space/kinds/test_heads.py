"""Attention heads found by tracing: choices from the attention_heads rules, matched by module path."""

import pytest
import torch

import nascli.nas as mtn
from nascli.errors import UserInputError
from nascli.nas.config import FastNASConfig
from nascli.space.space import get_space
from tests.transformer_topologies import TinyDecoder

TOKENS = torch.randint(0, 50, (1, 6), generator=torch.Generator().manual_seed(0))


def _convert(heads_rules, kv_heads=2):
    rules = {**FastNASConfig(), "attention_heads": heads_rules}
    return mtn.convert(TinyDecoder(4, kv_heads), [("fastnas", rules)], dummy_input=TOKENS)


def test_key_value_groups_take_their_choices_from_their_own_ratio():
    space = get_space(_convert({"*": {"num_kv_heads_ratio": [0.5], "num_heads_ratio": [0.25]}}))
    assert space.hparams["body.blocks.0.attn.num_kv_heads"].choices == (1, 2)
    space = get_space(_convert({"*": {"num_heads_ratio": [0.25]}}, kv_heads=4))
    assert space.hparams["body.blocks.0.attn.num_heads"].choices == (1, 4)


def test_a_pattern_excludes_the_heads_of_matching_attention():
    space = get_space(_convert({"*": {"num_kv_heads_ratio": [0.5]}, "body.blocks.1.*": None}))
    assert "body.blocks.0.attn.num_kv_heads" in space.hparams
    assert "body.blocks.1.attn.num_kv_heads" not in space.hparams
    assert "excluded" in space.fixed_reasons["body.blocks.1.attn.num_kv_heads"]


def test_an_unknown_heads_setting_is_one_clear_error():
    with pytest.raises(UserInputError, match="attention_heads.\\*.heads_ratio: unknown setting"):
        _convert({"*": {"heads_ratio": [0.5]}})


def _hf_decoder(model_class: str, config_class: str, kv_heads: int):
    transformers = pytest.importorskip("transformers")
    config = getattr(transformers, config_class)(
        vocab_size=100, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=kv_heads, use_cache=False,
    )  # fmt: skip
    torch.manual_seed(0)
    return getattr(transformers, model_class)(config).eval()


class _Logits(torch.nn.Module):
    """fvcore counts a model returning a tensor: the logits of a Hugging Face model."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model(ids).logits


# multi-query Llama (one key/value head, four query heads) and grouped-query Qwen2 (two groups of two)
DECODERS = {"mqa_llama": ("LlamaForCausalLM", "LlamaConfig", 1), "gqa_qwen2": ("Qwen2ForCausalLM", "Qwen2Config", 2)}


@pytest.mark.parametrize("name", list(DECODERS))
@torch.no_grad()
def test_query_heads_per_group_beside_key_value_groups(name):
    """Every key/value group keeps its count of query heads: max is the model, subnets export and cost exactly."""
    from nascli.cost.fvcore_count import count_params, fvcore_flops
    from nascli.cost.model import cost_model

    ids = torch.randint(0, 100, (2, 8), generator=torch.Generator().manual_seed(0))
    model_class, config_class, kv_heads = DECODERS[name]
    model = _hf_decoder(model_class, config_class, kv_heads)
    reference = model(ids).logits
    mtn.convert(model, "fastnas", dummy_input=ids[:1]).eval()
    space = get_space(model)
    attn = "model.layers.1.self_attn"
    assert space.hparams[f"{attn}.num_heads_per_group"].choices == tuple(range(1, 4 // kv_heads + 1))
    if kv_heads > 1:
        assert space.hparams[f"{attn}.num_kv_heads"].choices == (1, 2)
    else:
        assert "rounds to 1" in space.fixed_reasons[f"{attn}.num_kv_heads"]
    torch.testing.assert_close(model(ids).logits, reference, rtol=0, atol=0)

    costs = cost_model(model)
    torch.manual_seed(1)
    for how in ("min", "random", "random", "random"):
        mtn.sample(model, how)
        exported = mtn.export_copy(model).eval()
        torch.testing.assert_close(exported(ids).logits, model(ids).logits, rtol=1e-4, atol=1e-5)
        per_group = space.hparams[f"{attn}.num_heads_per_group"].active
        assert exported.model.layers[1].self_attn.num_key_value_groups == per_group
        expected = {"flops": fvcore_flops(_Logits(exported), (ids[:1],)), "params": count_params(exported)}
        assert costs.cost() == expected, how
