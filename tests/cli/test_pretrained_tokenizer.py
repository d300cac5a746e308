"""A pretrained model directory's own tokenizer: checked against the embeddings at convert, kept by the run,
and written beside the pruned model by ``export --format hf``."""

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

import nascli.nas as mtn
from nascli.cli.app import app
from nascli.data import recipe_splits
from nascli.opt.checkpoint import build_checkpoint, write_checkpoint
from nascli.stages.load import load_stage_input
from tests.helpers import error_lines, word_tokenizer

transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")
runner = CliRunner()
WORDS = "the quick brown fox jumps over the lazy dog while a cat naps in the warm sun by the river bank".split()
VOCABULARY = ["[UNK]", "<s>", "</s>", *dict.fromkeys(WORDS)]  # 21 tokens


def _model_dir(folder, vocab_size, tokenizer=True):
    """A tiny Llama saved as a from_pretrained directory, with a word-level tokenizer that adds BOS."""
    config = transformers.LlamaConfig(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, use_cache=False,
    )  # fmt: skip
    transformers.LlamaForCausalLM(config).save_pretrained(folder)
    if tokenizer:
        word_tokenizer(WORDS).save_pretrained(folder)
    return folder


def _recipe(tmp_path, model_dir):
    rng = np.random.default_rng(0)
    (tmp_path / "corpus").mkdir(exist_ok=True)
    for index in range(8):
        lines = [" ".join(rng.choice(WORDS, 10)) for _ in range(20)]
        (tmp_path / "corpus" / f"{index}.txt").write_text("\n".join(lines))
    recipe = {
        "model": {"factory": "nascli.hf:from_pretrained", "kwargs": {"path": str(model_dir)}},
        "input_shape": [8], "input_dtype": "int64", "run_dir": str(tmp_path / "run"),
        "data": {"name": "text", "files": [str(tmp_path / "corpus" / "*.txt")], "val_fraction": 0.2},
    }  # fmt: skip
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return str(path)


def test_a_tokenizer_larger_than_the_embeddings_is_refused_before_convert_writes(tmp_path):
    model_dir = _model_dir(tmp_path / "model", vocab_size=16)
    result = runner.invoke(app, ["-q", "convert", _recipe(tmp_path, model_dir)])
    assert result.exit_code == 2
    assert error_lines(result) == [
        f"error: model.kwargs.path: the tokenizer {model_dir} has 21 tokens, more than the model's 16 embedding"
        " rows; give the tokenizer the model was trained with"
    ]
    assert not (tmp_path / "run" / "convert.pt").exists() and not (tmp_path / "run" / "metrics.jsonl").exists()


def test_a_model_directory_without_a_tokenizer_is_refused_at_convert(tmp_path):
    model_dir = _model_dir(tmp_path / "model", vocab_size=32, tokenizer=False)
    result = runner.invoke(app, ["-q", "convert", _recipe(tmp_path, model_dir)])
    assert result.exit_code == 2
    assert error_lines(result) == [
        f"error: model.kwargs.path: {model_dir} holds no tokenizer (tokenizer.json or tokenizer_config.json);"
        " set data.tokenizer to the model's tokenizer"
    ]
    assert not (tmp_path / "run" / "convert.pt").exists()


def test_export_hf_writes_the_model_s_own_tokenizer_beside_the_pruned_model(tmp_path):
    model_dir = _model_dir(tmp_path / "model", vocab_size=32)
    result = runner.invoke(app, ["-q", "convert", _recipe(tmp_path, model_dir)])
    assert result.exit_code == 0, result.stderr
    model, _, checkpoint, recipe = load_stage_input(tmp_path / result.stdout.strip(), [], "train")
    recipe_splits(recipe)  # as the first stage reading the text, pins the tokenizer in the run directory
    assert (tmp_path / "run" / "tokenizer" / "tokenizer.json").is_file()
    mtn.select(model, {"model.layers.depth": 1})
    searched = build_checkpoint(model, "search", checkpoint["recipe"], checkpoint["model"], {})
    search_pt = write_checkpoint(searched, tmp_path / "run" / "search.pt")

    result = runner.invoke(app, ["-q", "export", str(search_pt), "--format", "hf", "-o", str(tmp_path / "hf")])
    assert result.exit_code == 0, result.stderr
    original = transformers.AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    exported = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf"), local_files_only=True)
    assert exported.get_vocab() == original.get_vocab() and len(exported) == len(original)
    text = "the lazy dog naps by the river"
    expected = [1, *(VOCABULARY.index(word) for word in text.split())]  # the BOS the tokenizer adds, then the words
    assert exported(text)["input_ids"] == original(text)["input_ids"] == expected
    assert (exported.bos_token, exported.eos_token) == (original.bos_token, original.eos_token) == ("<s>", "</s>")
    loaded = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf"), local_files_only=True)
    assert loaded.config.num_hidden_layers == 1
    with torch.no_grad():
        assert loaded(torch.tensor([exported(text)["input_ids"]])).logits.shape == (1, 8, 32)
