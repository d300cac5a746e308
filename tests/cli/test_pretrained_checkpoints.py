"""A user's own pretrained Hugging Face checkpoint, saved in bfloat16 with its own tokenizer: pruned by
``nascli convert R | nascli search | nascli finetune``, written by ``nascli export --format hf``, and the
weights' dtype kept through conversion and every form of export."""

import itertools
import json
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

import nascli.nas as mtn
from nascli.cli.app import app
from nascli.errors import CheckpointError
from nascli.hf_export import save_pretrained_subnet
from nascli.numerics import max_difference, outputs_match
from nascli.opt.checkpoint import apply_checkpoint, read_checkpoint
from nascli.recipe.load import validate_recipe
from nascli.space.export import export_in_place, export_max, export_model
from nascli.space.space import get_space
from nascli.stages.convert import converted_model, recipe_model
from nascli.stages.load import load_stage_input
from tests.helpers import error_lines, n_params, word_tokenizer

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")
runner = CliRunner()

SIZES = {
    "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "max_position_embeddings": 64, "use_cache": False,
}  # fmt: skip
LETTERS = "abcdefghij"
WORDS = ["".join(letters) for letters in itertools.product(LETTERS, repeat=3)]  # 1,000 words: "abc", "hij", ...
SAMPLE = "bad ace fig hid jab"
ONE_KV_GROUP = {f"model.layers.{i}.self_attn.num_kv_heads": 1 for i in range(SIZES["num_hidden_layers"])}


def _save_model(folder: Path, architecture: str, rows: int, seed: int = 0) -> None:
    """A randomly initialized ``architecture`` with ``rows`` embedding rows, saved in bfloat16."""
    torch.manual_seed(seed)
    model_class = getattr(transformers, architecture)
    model_class(model_class.config_class(vocab_size=rows, **SIZES)).to(torch.bfloat16).save_pretrained(folder)


def _llama_dir(folder: Path) -> Path:
    """A Llama (grouped-query attention) with a word-level tokenizer of 1,003 tokens that puts BOS first."""
    tokenizer = word_tokenizer(WORDS)
    _save_model(folder, "LlamaForCausalLM", rows=len(tokenizer))
    tokenizer.save_pretrained(folder)
    return folder


def _byte_pair_tokenizer():
    """A byte-level BPE (Qwen2's kind of tokenizer) of 65,794 tokens, built without training: ``<s>``, ``</s>``,
    the 256 byte symbols and every pair of them, the pairs of LETTERS last, so the corpus's words take ids past
    65,535. (transformers loads any tokenizer of a Qwen2 directory as its Qwen2Tokenizer, a byte-level BPE: a
    word-level vocabulary would lose its words.)"""
    alphabet = sorted(tokenizers.pre_tokenizers.ByteLevel.alphabet())
    pairs = sorted(((a, b) for a in alphabet for b in alphabet), key=lambda pair: set(pair) <= set(LETTERS))
    vocabulary = ["<s>", "</s>", *alphabet, *(a + b for a, b in pairs)]
    backend = tokenizers.Tokenizer(tokenizers.models.BPE({t: i for i, t in enumerate(vocabulary)}, pairs))
    backend.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = tokenizers.decoders.ByteLevel()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>")


def _qwen2_dir(folder: Path) -> Path:
    """A Qwen2 (grouped-query attention, q/k/v biases) with a byte-level BPE of more than 65,536 tokens; its
    embedding rows are padded to a multiple of 64 past the tokenizer, as Qwen2's own checkpoints are (with room
    for the ``<|endoftext|>`` that transformers' Qwen2Tokenizer adds)."""
    tokenizer = _byte_pair_tokenizer()
    _save_model(folder, "Qwen2ForCausalLM", rows=64 * (len(tokenizer) // 64 + 1))
    tokenizer.save_pretrained(folder)
    return folder


def _auto_tokenizer(path: Path):
    return transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)


def _auto_model(path: Path):
    return transformers.AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True).eval()


def _dtypes(model: torch.nn.Module) -> set[torch.dtype]:
    return {p.dtype for p in model.parameters()}


def _pipe(*commands: list[str], env: dict[str, str] | None = None) -> str:
    """``nascli A | nascli B | ...``: each command reads the path the previous one printed, as in a shell pipe."""
    printed = ""
    for command in commands:
        result = runner.invoke(app, ["-q", *command], input=printed, env=env)
        assert result.exit_code == 0, f"nascli {command[0]}: {result.stderr[-3000:]}"
        printed = result.stdout
    return printed.strip()


def _corpus(folder: Path) -> Path:
    """Eight UTF-8 text files of random WORDS: a few documents each for train, validation and test."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    for index in range(8):
        lines = [" ".join(rng.choice(WORDS, 10)) for _ in range(5)]
        (folder / f"{index}.txt").write_text("\n".join(lines))
    return folder


def _text_recipe(folder: Path, model_dir: Path, corpus: Path) -> Path:
    recipe = {
        "model": {"factory": "nascli.hf:from_pretrained", "kwargs": {"path": str(model_dir)}},
        "input_shape": [16],
        "input_dtype": "int64",
        "mode": "fastnas",
        # hidden widths of multiples of 16, which every head count (4, or 2 with one key/value group) divides,
        # as LlamaConfig and Qwen2Config require
        "rules": {"hidden_size": {"*": {"hidden_divisor": 16}}},
        "data": {"name": "text", "files": [str(corpus / "*.txt")], "batch_size": 8, "eval_batch_size": 32},
        "search": {
            "uniform": True,
            "importance": "activations",
            "importance_samples": 8,
            "score_samples": 8,
            "constraints": {"params": "60%"},
        },
        "finetune": {"epochs": 1, "distill": True},
        "train": {"epochs": 1, "optimizer": "adamw", "lr": 1e-3},
        "run_dir": str(folder / "run"),
    }
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


class Run(NamedTuple):
    model_dir: Path
    corpus: Path
    run_dir: Path
    cache: Path
    finetune_pt: Path
    token_dtype: type


@pytest.fixture(
    scope="module",
    params=[pytest.param((_llama_dir, np.uint16), id="llama"), pytest.param((_qwen2_dir, np.uint32), id="qwen2")],
)
def run(request, tmp_path_factory) -> Run:
    """``nascli convert R | nascli search | nascli finetune`` on a bfloat16 checkpoint directory with its own
    tokenizer, the token arrays cached in a folder of their own."""
    save_model_dir, token_dtype = request.param
    folder = tmp_path_factory.mktemp("checkpoint")
    model_dir, corpus, cache = save_model_dir(folder / "model"), _corpus(folder / "corpus"), folder / "cache"
    recipe = _text_recipe(folder, model_dir, corpus)
    finetune_pt = _pipe(["convert", str(recipe)], ["search"], ["finetune"], env={"NASCLI_CACHE_DIR": str(cache)})
    return Run(model_dir, corpus, folder / "run", cache, Path(finetune_pt), token_dtype)


@pytest.fixture(scope="module")
def exported(run) -> Path:
    """``nascli export RUN/finetune.pt --format hf -o OUT``."""
    return Path(_pipe(["export", str(run.finetune_pt), "--format", "hf", "-o", str(run.run_dir.parent / "hf")]))


def _with_eos(ids: list[int], eos: int) -> list[int]:
    return ids if ids[-1:] == [eos] else [*ids, eos]


@pytest.mark.slow
def test_the_corpus_is_encoded_by_the_model_s_own_tokenizer_which_the_run_keeps(run):
    tokenizer = _auto_tokenizer(run.model_dir)
    assert _auto_tokenizer(run.run_dir / "tokenizer").get_vocab() == tokenizer.get_vocab()
    [cached] = (run.cache / "text").glob("*.npz")
    with np.load(cached) as stored:
        documents = json.loads(stored["documents"].tobytes())
        splits = {split: stored[split] for split in ("train", "val", "test")}
    for split, tokens in splits.items():
        texts = [(run.corpus / document).read_text() for document in documents[split]]
        expected = [i for text in texts for i in _with_eos(tokenizer(text)["input_ids"], tokenizer.eos_token_id)]
        assert tokens.dtype == run.token_dtype and tokens.tolist() == expected, split
    largest = max(int(tokens.max()) for tokens in splits.values())
    assert (largest > 65_535) == (run.token_dtype is np.uint32)  # uint32 only where the ids need it


@pytest.mark.slow
def test_convert_and_search_checkpoints_store_none_of_the_model_s_own_weights(run):
    weights = (run.model_dir / "model.safetensors").stat().st_size
    for name in ("convert.pt", "search.pt"):
        checkpoint = torch.load(run.run_dir / name, weights_only=True)
        assert checkpoint["state_dict"] == {} and checkpoint["weights"]["fingerprint"], name
        assert (run.run_dir / name).stat().st_size < weights / 10, name


@pytest.mark.slow
def test_the_export_loads_as_a_bfloat16_model_within_the_parameter_budget(run, exported):
    loaded = _auto_model(exported)
    assert _dtypes(loaded) == {torch.bfloat16}
    assert n_params(loaded) <= 0.6 * n_params(_auto_model(run.model_dir))


@pytest.mark.slow
def test_the_export_holds_the_model_s_own_tokenizer(run, exported):
    original, written = _auto_tokenizer(run.model_dir), _auto_tokenizer(exported)
    assert len(written) == len(original)
    assert written(SAMPLE)["input_ids"] == original(SAMPLE)["input_ids"]
    assert (written.bos_token, written.eos_token) == (original.bos_token, original.eos_token) == ("<s>", "</s>")


@pytest.mark.slow
def test_the_export_computes_the_logits_of_the_pruned_model(run, exported):
    pruned, *_ = load_stage_input(run.finetune_pt, [], "export")  # the plain fine-tuned model
    ids = torch.randint(0, len(_auto_tokenizer(run.model_dir)), (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, got = pruned.eval()(ids).logits, _auto_model(exported)(ids).logits
    assert got.dtype == torch.bfloat16
    assert outputs_match(got, expected), f"differs by {max_difference(got, expected):.3g}"


@pytest.mark.slow
def test_a_fine_tuned_checkpoint_restores_without_reading_the_original_weights(run, tmp_path, monkeypatch):
    """finetune.pt holds the whole subnet: restored on the meta device, with the buffers no weights file
    holds computed from the config, it is the model a restore from the original weights gives; where a
    buffer cannot be matched the model is built whole."""
    checkpoint = read_checkpoint(run.finetune_pt)
    recipe = validate_recipe(checkpoint["recipe"], "recipe")
    whole = apply_checkpoint(recipe_model(recipe, user_weights=False), checkpoint, run.finetune_pt).eval()
    weights, hidden = run.model_dir / "model.safetensors", tmp_path / "model.safetensors"
    weights.rename(hidden)  # a directory without weights builds only a skeleton: no weight can be read
    try:
        restored, *_ = load_stage_input(run.finetune_pt, [], "export")
    finally:
        hidden.rename(weights)
    monkeypatch.setattr("nascli.stages.convert.recipe_buffers", lambda recipe: {})
    rebuilt, *_ = load_stage_input(run.finetune_pt, [], "export")
    ids = torch.randint(0, 1000, (2, 16), generator=torch.Generator().manual_seed(0))
    expected = dict(whole.named_buffers()) | whole.state_dict()
    assert [n for n, b in whole.named_buffers() if n not in whole.state_dict()]  # rotary frequencies
    for model in (restored, rebuilt):
        got = dict(model.named_buffers()) | model.state_dict()
        assert got.keys() == expected.keys()
        assert all(got[k].dtype == v.dtype and torch.equal(got[k], v) for k, v in expected.items())
        with torch.no_grad():
            assert torch.equal(model.eval()(ids).logits, whole(ids).logits)


@pytest.mark.slow
def test_finetuning_with_adapters_trains_the_subnet_in_its_dtype_and_exports_it(run, tmp_path):
    """``finetune.lora``: the subnet's own weights frozen in bfloat16, only the adapters train, merged before
    the checkpoint is written; the export loads with the logits of the fine-tuned subnet."""
    env = {"NASCLI_CACHE_DIR": str(run.cache)}
    search_pt = run.run_dir / "search.pt"
    overrides = ["finetune.lora.rank=4", "finetune.lr=0.01", f"run_dir={tmp_path / 'run'}"]
    finetune_pt = Path(_pipe(["finetune", str(search_pt), *overrides], env=env))
    hf = Path(_pipe(["export", str(finetune_pt), "--format", "hf", "-o", str(tmp_path / "hf")]))
    converted, *_ = load_stage_input(search_pt, [], "export")
    subnet = export_model(converted).eval()
    fine_tuned, *_ = load_stage_input(finetune_pt, [], "export")
    before, after = subnet.state_dict(), fine_tuned.state_dict()
    assert {k: v.shape for k, v in after.items()} == {k: v.shape for k, v in before.items()}
    assert {v.dtype for v in after.values() if v.is_floating_point()} == {torch.bfloat16}
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved and all(k.endswith("_proj.weight") for k in moved)  # the adapted layers, and only them
    ids = torch.randint(0, len(_auto_tokenizer(run.model_dir)), (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, got = fine_tuned.eval()(ids).logits, _auto_model(hf)(ids).logits
    assert _dtypes(_auto_model(hf)) == {torch.bfloat16}
    assert outputs_match(got, expected), f"differs by {max_difference(got, expected):.3g}"


def _recipe(model_dir: Path, **model) -> dict:
    spec = {"factory": "nascli.hf:from_pretrained", "kwargs": {"path": str(model_dir)}, **model}
    return {"model": spec, "input_shape": [8], "input_dtype": "int64", "mode": "fastnas"}


@pytest.mark.parametrize("dtype, expected", [("auto", torch.bfloat16), ("float32", torch.float32)])
def test_model_dtype_is_the_dtype_of_the_converted_and_exported_weights(tmp_path, dtype, expected):
    model = converted_model(validate_recipe(_recipe(_llama_dir(tmp_path / "model"), dtype=dtype), "recipe"))
    assert _dtypes(model) == {expected}
    mtn.select(model, ONE_KV_GROUP)
    save_pretrained_subnet(model, (torch.zeros(1, 8, dtype=torch.long),), tmp_path / "hf")
    assert _dtypes(_auto_model(tmp_path / "hf")) == {expected}


@pytest.mark.parametrize("export", [export_model, export_in_place, export_max])
def test_every_export_of_a_bfloat16_model_is_bfloat16(tmp_path, export):
    model = converted_model(validate_recipe(_recipe(_llama_dir(tmp_path / "model")), "recipe"))
    mtn.select(model, ONE_KV_GROUP)
    assert _dtypes(export(model)) == {torch.bfloat16}


def test_export_max_shares_the_converted_model_s_tensors_and_export_model_copies_them(tmp_path):
    model = converted_model(validate_recipe(_recipe(_llama_dir(tmp_path / "model")), "recipe"))
    mtn.select(model, ONE_KV_GROUP)  # most layers stay whole, which an export could share
    active, converted = get_space(model).config(), {p.data_ptr() for p in model.parameters()}
    assert {p.data_ptr() for p in export_max(model).parameters()} == converted
    assert get_space(model).config() == active
    assert not {p.data_ptr() for p in export_model(model).parameters()} & converted


def test_a_convert_pt_whose_source_weights_changed_is_refused_in_one_line_naming_it(tmp_path):
    model_dir = _llama_dir(tmp_path / "model")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({**_recipe(model_dir), "run_dir": str(tmp_path / "run")}))
    convert_pt = _pipe(["convert", str(recipe)])
    _save_model(model_dir, "LlamaForCausalLM", rows=len(word_tokenizer(WORDS)), seed=1)  # other random weights

    with pytest.raises(CheckpointError, match="no longer has the weights it was converted from"):
        load_stage_input(Path(convert_pt), [], "search")
    result = runner.invoke(app, ["-q", "search", convert_pt])
    assert result.exit_code == 2 and result.stdout == ""
    [line] = error_lines(result)
    assert line.startswith(f"error: {convert_pt}: stores no weights") and "convert the model again" in line


def test_a_profile_of_a_pretrained_convert_pt_reads_no_weight(tmp_path):
    """From the checkpoint's cost record: the profile of the recipe converted with its weights, the weights
    file gone; a restore that reads only shapes (timing a latency table needs the model) builds it on meta."""
    model_dir = _llama_dir(tmp_path / "model")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({**_recipe(model_dir), "run_dir": str(tmp_path / "run")}))
    in_memory = runner.invoke(app, ["-q", "profile", str(recipe), "--json"])
    assert in_memory.exit_code == 0, in_memory.stderr
    convert_pt = _pipe(["convert", str(recipe)])
    (model_dir / "model.safetensors").rename(tmp_path / "elsewhere.safetensors")

    recorded = runner.invoke(app, ["-q", "profile", convert_pt, "--json"])
    assert recorded.exit_code == 0, recorded.stderr
    assert {**json.loads(recorded.stdout), "checkpoint": None} == {**json.loads(in_memory.stdout), "checkpoint": None}
    model, *_ = load_stage_input(Path(convert_pt), [], "profile", on_meta=True)
    assert {p.device.type for p in model.parameters()} == {"meta"} and _dtypes(model) == {torch.bfloat16}


def _config_only(folder: Path) -> Path:
    """A Llama directory holding its config.json and nothing else, as published configs of large models are."""
    config = transformers.LlamaConfig(vocab_size=len(word_tokenizer(WORDS)), **SIZES, dtype="bfloat16")
    config.architectures = ["LlamaForCausalLM"]
    config.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("mode", ["fastnas", "autonas"])
def test_a_config_alone_converts_and_profiles_on_the_meta_device_as_the_model_with_weights(tmp_path, mode):
    with_weights, config_only = _llama_dir(tmp_path / "weights"), _config_only(tmp_path / "config")
    profiles = []
    for model_dir in (with_weights, config_only):
        recipe = tmp_path / f"{model_dir.name}.yaml"
        recipe.write_text(
            yaml.safe_dump({**_recipe(model_dir), "mode": mode, "run_dir": str(tmp_path / model_dir.name)})
        )
        convert_pt = _pipe(["convert", str(recipe)])
        profiled = runner.invoke(app, ["-q", "profile", convert_pt, "--json"])
        assert profiled.exit_code == 0, profiled.stderr
        profiles.append({**json.loads(profiled.stdout), "checkpoint": None})
    assert profiles[0] == profiles[1]
    stored = torch.load(tmp_path / "config" / "convert.pt", weights_only=True)
    assert stored["state_dict"] == {} and stored["weights"]["meta"]


def test_a_checkpoint_of_a_config_alone_is_refused_by_the_stages_that_need_weights(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({**_recipe(_config_only(tmp_path / "model")), "run_dir": str(tmp_path / "run")}))
    convert_pt = _pipe(["convert", str(recipe)])
    result = runner.invoke(app, ["-q", "search", convert_pt])
    assert result.exit_code == 2 and result.stdout == ""
    [line] = error_lines(result)
    assert line.startswith(f"error: {convert_pt}: converted from a model's config alone") and "profile" in line


def test_a_directory_whose_config_does_not_load_is_one_line(tmp_path):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{not json")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({**_recipe(model_dir), "run_dir": str(tmp_path / "run")}))
    result = runner.invoke(app, ["-q", "convert", str(recipe)])
    assert result.exit_code == 2 and not (tmp_path / "run" / "convert.pt").exists()
    [line] = error_lines(result)
    assert line.startswith("error: model.kwargs.path: cannot read") and "config.json" in line
