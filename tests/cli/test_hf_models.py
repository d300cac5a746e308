"""Hugging Face models from a recipe: convert, profile (with a memory bound) and export to a model directory."""

import json

import pytest
import torch
import yaml
from typer.testing import CliRunner

import nascli.nas as mtn
from nascli.cli.app import app
from nascli.opt.checkpoint import build_checkpoint, write_checkpoint
from nascli.stages.load import load_stage_input

transformers = pytest.importorskip("transformers")
runner = CliRunner()
LLAMA = {
    "vocab_size": 100, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "use_cache": False,
}  # fmt: skip


def _recipe(tmp_path, model: dict, **extra) -> str:
    recipe = {"model": model, "input_shape": [8], "input_dtype": "int64", "run_dir": str(tmp_path / "run"), **extra}
    path = tmp_path / "llama.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return str(path)


def _convert(tmp_path, config=LLAMA):
    model = {"factory": "nascli.hf:from_config", "kwargs": {"architecture": "LlamaForCausalLM", "config": config}}
    result = runner.invoke(app, ["-q", "convert", _recipe(tmp_path, model)])
    assert result.exit_code == 0, result.stderr
    return result.stdout.strip()


def _searched(tmp_path, convert_pt, config):
    """A search.pt holding the subnet ``config`` of the converted model."""
    model, _, checkpoint, _ = load_stage_input(tmp_path / convert_pt, [], "train")
    mtn.select(model, config)
    searched = build_checkpoint(model, "search", checkpoint["recipe"], checkpoint["model"], {})
    return write_checkpoint(searched, tmp_path / "run/search.pt"), model.eval()


def test_a_llama_from_its_config_converts_with_heads_mlp_hidden_and_depth(tmp_path):
    convert_pt = _convert(tmp_path)
    result = runner.invoke(app, ["profile", convert_pt, "--memory", "50%"])
    assert result.exit_code == 0, result.stderr
    assert "memory (bytes" in result.stderr  # the report; stdout holds the path
    assert "flops per token (at 8 tokens)" in result.stderr
    for name in ("model.layers.depth", "self_attn.num_kv_heads", "mlp.gate_proj", "embed_tokens.weight.shape[1]"):
        assert name in result.stderr
    result = runner.invoke(app, ["-q", "profile", convert_pt, "--memory", "10KB"])
    assert result.exit_code == 3 and result.stdout == ""


def test_a_uniform_subnet_exports_to_a_directory_from_pretrained_loads(tmp_path):
    convert_pt = _convert(tmp_path)
    uniform = {"model.layers.depth": 1, "model.embed_tokens.weight.shape[1]": 32}
    uniform.update({f"model.layers.{i}.self_attn.num_kv_heads": 1 for i in range(2)})
    uniform.update({f"model.layers.{i}.mlp.gate_proj.out_features": 64 for i in range(2)})
    search_pt, subnet = _searched(tmp_path, convert_pt, uniform)
    result = runner.invoke(app, ["-q", "export", str(search_pt), "--format", "hf"])
    assert result.exit_code == 0, result.stderr
    directory = result.stdout.strip()
    loaded = transformers.AutoModelForCausalLM.from_pretrained(directory).eval()
    config = loaded.config
    assert (config.num_hidden_layers, config.hidden_size, config.intermediate_size) == (1, 32, 64)
    assert (config.num_attention_heads, config.num_key_value_heads, config.head_dim) == (2, 1, 16)
    ids = torch.randint(0, 100, (2, 8))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, subnet(ids).logits, atol=1e-5, rtol=1e-4)


def test_layers_of_different_widths_export_with_their_own_modeling_file(tmp_path):
    convert_pt = _convert(tmp_path)
    search_pt, subnet = _searched(tmp_path, convert_pt, {"model.layers.0.mlp.gate_proj.out_features": 64})
    result = runner.invoke(app, ["export", str(search_pt), "--format", "hf", "--json"])
    assert result.exit_code == 0, result.stderr
    written = json.loads(result.stdout)
    assert written["trust_remote_code"] is True and "trust_remote_code=True" in result.stderr
    loaded = transformers.AutoModelForCausalLM.from_pretrained(written["checkpoint"], trust_remote_code=True).eval()
    assert [layer.mlp.up_proj.out_features for layer in loaded.model.layers] == [64, 96]
    ids = torch.randint(0, 100, (2, 8))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, subnet(ids).logits, atol=1e-5, rtol=1e-4)


def test_a_model_directory_converts(tmp_path):
    saved = tmp_path / "tiny-llama"
    transformers.LlamaForCausalLM(transformers.LlamaConfig(**LLAMA)).save_pretrained(saved)
    model = {"factory": "nascli.hf:from_pretrained", "kwargs": {"path": str(saved)}}
    result = runner.invoke(app, ["-q", "convert", _recipe(tmp_path, model)])
    assert result.exit_code == 0, result.stderr


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"architecture": "LlamaForCausalLLM"}, "model.kwargs.architecture: 'LlamaForCausalLLM' is not a Hugging Face"),
        ({"architecture": "LlamaForCausalLM", "config": {"hidden_size": 64, "num_attention_heads": 3}}, "model.kwargs"),
    ],
)
def test_a_bad_hugging_face_recipe_is_one_line(tmp_path, kwargs, message):
    result = runner.invoke(
        app, ["-q", "convert", _recipe(tmp_path, {"factory": "nascli.hf:from_config", "kwargs": kwargs})]
    )
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr, result.stderr


def test_a_missing_model_directory_is_one_line(tmp_path):
    model = {"factory": "nascli.hf:from_pretrained", "kwargs": {"path": str(tmp_path / "nothing")}}
    result = runner.invoke(app, ["-q", "convert", _recipe(tmp_path, model)])
    assert result.exit_code == 2 and "is not a Hugging Face model directory" in result.stderr


def test_sizes_the_config_class_rejects_are_one_line_naming_them(tmp_path):
    six_heads = {**LLAMA, "hidden_size": 96, "num_attention_heads": 6, "num_key_value_heads": 3}
    convert_pt = _convert(tmp_path, six_heads)
    search_pt, _ = _searched(tmp_path, convert_pt, {"model.embed_tokens.weight.shape[1]": 64})  # 64 % 6 != 0
    result = runner.invoke(app, ["-q", "export", str(search_pt), "--format", "hf"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "LlamaConfig rejects the subnet's sizes" in lines[0] and "hidden_size=64" in lines[0]
    assert "hidden_divisor" in lines[0]
    assert not [p for p in (tmp_path / "run").iterdir() if p.is_dir()]  # no directory written, not even a temp one
