"""Weights that from_pretrained maps from a .safetensors file move into memory of their own: the same
values, tied weights still one tensor, and no tensor left in the file's mapping."""

import sys
from pathlib import Path

import pytest
import torch

from nascli.hf import from_pretrained
from nascli.mapped_weights import _file_mappings, _inside, own_mapped_weights

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")


def _saved(folder: Path, tie: bool) -> Path:
    torch.manual_seed(0)
    config = transformers.Qwen2Config(
        vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, tie_word_embeddings=tie,
    )  # fmt: skip
    transformers.Qwen2ForCausalLM(config).to(torch.bfloat16).save_pretrained(folder)
    return folder


def _tensors(model: torch.nn.Module) -> list[torch.Tensor]:
    return [*model.parameters(), *model.buffers()]


@pytest.mark.parametrize("tie", [True, False])
def test_loaded_weights_leave_the_file_mapping_with_their_values(tmp_path, tie):
    folder = _saved(tmp_path / "model", tie)
    files = [str((folder / "model.safetensors").resolve())]
    mapped = transformers.Qwen2ForCausalLM.from_pretrained(folder)
    mappings = _file_mappings(set(files))
    assert mappings and any(_inside(t, mappings) for t in _tensors(mapped))  # what transformers gives
    expected = {k: v.clone() for k, v in mapped.state_dict().items()}
    assert own_mapped_weights(mapped, [folder / "model.safetensors"]) > 0
    assert not any(_inside(t, mappings) for t in _tensors(mapped))
    assert all(torch.equal(mapped.state_dict()[k], v) for k, v in expected.items())
    assert (mapped.lm_head.weight is mapped.model.embed_tokens.weight) == tie
    del expected


def test_from_pretrained_holds_no_weight_in_the_file_mapping(tmp_path):
    folder = _saved(tmp_path / "model", tie=False)
    model = from_pretrained(str(folder))
    mappings = _file_mappings({str((folder / "model.safetensors").resolve())})
    assert not any(_inside(t, mappings) for t in _tensors(model))
    ids = torch.arange(8)[None]
    with torch.no_grad():
        reloaded = transformers.Qwen2ForCausalLM.from_pretrained(folder)
        assert torch.equal(model(ids).logits, reloaded(ids).logits)
