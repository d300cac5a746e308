"""Activation checkpointing of a Hugging Face student: the same gradients from a fraction of the kept
activations; a model without support trains as it is."""

import pytest
import torch

from nascli.recipe.schema import LoraSpec
from nascli.train.activation_checkpointing import checkpoint_activations
from nascli.train.lora import add_adapters
from tests.transformer_topologies import TinyDecoder

transformers = pytest.importorskip("transformers")
pytest.importorskip("peft")
TOKENS = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(0))


def _student() -> torch.nn.Module:
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=32, use_cache=False,
    )  # fmt: skip
    model = transformers.LlamaForCausalLM(config)
    add_adapters(model, LoraSpec(rank=4))
    for name, param in model.named_parameters():
        if "lora_B" in name:  # as after some training: an adapter that starts at zero passes no gradient to A
            torch.nn.init.normal_(param)
    return model.train()


def _step(model: torch.nn.Module) -> tuple[dict[str, torch.Tensor], int]:
    """Adapter gradients of one step, and the bytes autograd kept for backward outside checkpointed layers."""
    kept = []

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        kept.append(tensor.numel() * tensor.element_size())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = model(TOKENS, labels=TOKENS).loss
    loss.backward()
    return {n: p.grad for n, p in model.named_parameters() if p.requires_grad}, sum(kept)


def test_a_checkpointed_student_gets_the_same_gradients_keeping_a_fraction_of_the_activations():
    plain, checkpointed = _student(), _student()
    assert checkpoint_activations(checkpointed)
    expected, kept_plain = _step(plain)
    got, kept_checkpointed = _step(checkpointed)
    assert got.keys() == expected.keys() and expected
    for name, grad in expected.items():
        torch.testing.assert_close(got[name], grad, rtol=0, atol=1e-6, msg=name)
    assert kept_checkpointed < kept_plain / 3


def test_evaluation_of_a_checkpointed_model_is_unchanged():
    plain, checkpointed = _student().eval(), _student().eval()
    checkpoint_activations(checkpointed)
    with torch.no_grad():
        torch.testing.assert_close(checkpointed(TOKENS).logits, plain(TOKENS).logits, rtol=0, atol=0)


def test_a_model_without_support_is_left_as_it_is():
    model = TinyDecoder(4, 2)
    assert not checkpoint_activations(model)
    assert not any(hasattr(m, "gradient_checkpointing") for m in model.modules())
