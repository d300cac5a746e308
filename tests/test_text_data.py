"""Offline text: documents split three ways, the model's own tokenizer or one trained on the train documents,
cached, windows of tokens."""

import json

import numpy as np
import pytest
import torch

from nascli.data import recipe_splits
from nascli.errors import UserInputError
from nascli.recipe.schema import Recipe
from nascli.text_data import TokenWindows, corpus_files, load_corpus, load_pretrained_tokenizer

pytest.importorskip("tokenizers")

WORDS = "the quick brown fox jumps over the lazy dog while a cat naps in the warm sun by the river bank".split()
SPECIALS = ["[UNK]", "<s>", "</s>"]  # ids 0, 1, 2 of the tokenizers made here


def _write_corpus(folder, files=12, lines=60):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for index in range(files):
        text = "\n".join(" ".join(rng.choice(WORDS, 12)) for _ in range(lines))
        (folder / f"doc{index:02d}.txt").write_text(f"document {index}\n{text}\n", encoding="utf-8")
    return [str(folder / "*.txt")]


def _records(count=30, words=40):
    rng = np.random.default_rng(1)
    return [" ".join(rng.choice(WORDS, words)) for _ in range(count)]


def test_files_split_whole_and_the_tokenizer_sees_train_files_only(tmp_path):
    patterns = _write_corpus(tmp_path / "corpus")
    corpus = load_corpus(None, patterns, 300, 0.2, tmp_path / "cache")
    sizes = [len(corpus.train), len(corpus.val), len(corpus.test)]
    assert all(n > 0 for n in sizes) and corpus.train.dtype == np.uint16
    assert len(corpus.val) / sum(sizes) == pytest.approx(0.2, abs=0.1)
    assert (corpus.train == 0).sum() + (corpus.val == 0).sum() + (corpus.test == 0).sum() == 12  # one end per file
    assert int(max(corpus.train.max(), corpus.val.max(), corpus.test.max())) < 300


def test_a_second_load_reads_the_cache_and_a_changed_file_does_not(tmp_path):
    patterns = _write_corpus(tmp_path / "corpus")
    first = load_corpus(None, patterns, 300, 0.2, tmp_path / "cache")
    again = load_corpus(None, patterns, 300, 0.2, tmp_path / "cache")
    assert np.array_equal(first.train, again.train) and first.tokenizer == again.tokenizer
    assert len(list((tmp_path / "cache" / "text").iterdir())) == 1
    (tmp_path / "corpus" / "doc00.txt").write_text("a different document entirely\n" * 50, encoding="utf-8")
    load_corpus(None, patterns, 300, 0.2, tmp_path / "cache")
    assert len(list((tmp_path / "cache" / "text").iterdir())) == 2


def test_windows_predict_the_next_token():
    windows = TokenWindows(torch.arange(10), 3)
    assert len(windows) == 3
    inputs, targets = windows[1]
    assert inputs.tolist() == [3, 4, 5] and targets.tolist() == [4, 5, 6] and inputs.dtype == torch.int64
    with pytest.raises(IndexError):
        windows[3]


def test_the_python_standard_library_is_a_corpus_without_its_tests():
    root, files = corpus_files("python_stdlib", [])
    assert len(files) > 100 and sum(f.stat().st_size for f in files) > 5_000_000
    assert not any("test" in f.relative_to(root).parts for f in files)


def _recipe(tmp_path, model=None, **data):
    return Recipe(
        model=model or {"factory": "x:y"}, input_shape=[16], input_dtype="int64",
        data={"name": "text", "vocab_size": 300, "val_fraction": 0.2, **data}, run_dir=str(tmp_path / "run"),
    )  # fmt: skip


def test_recipe_splits_are_token_windows_of_the_sequence_length(tmp_path):
    splits = recipe_splits(_recipe(tmp_path, files=_write_corpus(tmp_path / "corpus")))
    assert splits.task == "language_modeling" and splits.num_classes == 300 and splits.input_shape == (16,)
    inputs, targets = splits.train[0]
    assert inputs.shape == targets.shape == (16,)


def test_under_torchrun_only_rank_0_pins_the_tokenizer_in_the_run_directory(tmp_path, monkeypatch):
    recipe = _recipe(tmp_path, files=_write_corpus(tmp_path / "corpus"))
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_rank", lambda: 1)
    recipe_splits(recipe)
    assert not (tmp_path / "run").exists()
    monkeypatch.setattr(torch.distributed, "get_rank", lambda: 0)
    recipe_splits(recipe)
    assert (tmp_path / "run" / "tokenizer.json").is_file()


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda d: [str(d / "missing" / "*.txt")], "data.files: no file matches"),
        (lambda d: _bad_bytes(d), "doc03.txt is not valid UTF-8 \\(byte 3\\)"),
        (lambda d: _write_corpus(d / "tiny", files=2, lines=1), "too small to split"),
        (lambda d: _empty(d), "empty/0.txt is empty"),
        (lambda d: _jsonl(d, ['{"text": "a"}', '{"body": "b"}']), "a.jsonl line 2 has no field 'text'"),
        (lambda d: _jsonl(d, ['{"text": 3}']), "a.jsonl line 1: field 'text' is int, not a string"),
        (lambda d: _jsonl(d, ['{"text": null}']), "a.jsonl line 1: field 'text' is null, not a string"),
        (lambda d: _jsonl(d, ['["text"]']), "a.jsonl line 1 has no field 'text'"),
        (lambda d: _jsonl(d, ['{"text": "a"}', "", '{"text": "b",}']), "a.jsonl line 3 is not JSON"),
        (lambda d: _jsonl(d, ["   "]), "a.jsonl is empty"),
        (lambda d: _parquet(d, {"body": ["a", "b"]}), "a.parquet has no column 'text' \\(data.text_field\\)"),
        (lambda d: _parquet(d, {"text": ["a", None]}), "a.parquet record 1: column 'text' is null, not a string"),
        (lambda d: _parquet(d, {"text": [1, 2]}), "a.parquet record 0: column 'text' is int, not a string"),
        (lambda d: _parquet(d, {"text": []}), "a.parquet is empty"),
        (lambda d: _write_file(d / "a.parquet", b"not parquet"), "a.parquet is not a readable parquet file"),
        (lambda d: _write_file(d / "a.jsonl", b'{"text": "\xff"}'), "a.jsonl is not valid UTF-8"),
    ],
    ids=[
        "missing", "not-utf8", "too-small", "empty", "jsonl-no-field", "jsonl-not-a-string", "jsonl-null",
        "jsonl-not-an-object", "jsonl-not-json", "jsonl-blank", "parquet-no-column", "parquet-null", "parquet-ints",
        "parquet-no-rows", "not-parquet", "jsonl-not-utf8",
    ],
)  # fmt: skip
def test_bad_input_is_one_line_naming_the_file_and_writes_nothing(tmp_path, monkeypatch, setup, message):
    monkeypatch.setenv("NASCLI_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(UserInputError, match=message) as raised:
        recipe_splits(_recipe(tmp_path, files=setup(tmp_path)))
    assert len(str(raised.value).splitlines()) == 1 and str(raised.value).startswith("data.files: ")
    assert not (tmp_path / "cache").exists() and not (tmp_path / "run").exists()


def _bad_bytes(folder):
    patterns = _write_corpus(folder / "corpus")
    (folder / "corpus" / "doc03.txt").write_bytes(b"abc\xff\xfe def")
    return patterns


def _empty(folder):
    patterns = _write_corpus(folder / "empty")
    (folder / "empty" / "0.txt").write_text("")
    return patterns


def _write_file(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return [str(path)]


def _jsonl(folder, lines):
    return _write_file(folder / "a.jsonl", "\n".join(lines).encode())


def _parquet(folder, columns):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table(columns), folder / "a.parquet")
    return [str(folder / "a.parquet")]


def test_text_needs_token_ids_and_a_corpus(tmp_path):
    bad = _recipe(tmp_path, corpus="python_stdlib").model_copy(update={"input_dtype": "float32"})
    with pytest.raises(UserInputError, match="input_shape: a text dataset needs"):
        recipe_splits(bad)
    with pytest.raises(UserInputError, match="data.corpus \\(python_stdlib\\) or data.files"):
        recipe_splits(_recipe(tmp_path))
    with pytest.raises(UserInputError, match="data.vocab_size: 100000"):
        recipe_splits(_recipe(tmp_path, corpus="python_stdlib", vocab_size=100_000))


def test_a_run_keeps_its_tokenizer_and_refuses_a_corpus_that_changed(tmp_path):
    patterns = _write_corpus(tmp_path / "corpus")
    recipe = _recipe(tmp_path, files=patterns)
    recipe_splits(recipe)
    pinned = (tmp_path / "run" / "tokenizer.json").read_text()
    recipe_splits(recipe)  # the same corpus: accepted
    (tmp_path / "corpus" / "doc05.txt").write_text("entirely new words appear here\n" * 80, encoding="utf-8")
    with pytest.raises(UserInputError, match="the corpus no longer gives the tokenizer this run was trained with"):
        recipe_splits(recipe)
    assert (tmp_path / "run" / "tokenizer.json").read_text() == pinned


def test_jsonl_records_are_documents_of_their_field(tmp_path):
    records = _records()
    lines = [json.dumps({"id": index, "body": text}) for index, text in enumerate(records)]
    _write_file(tmp_path / "data" / "a.jsonl", ("\n".join(lines[:20]) + "\n\n").encode())
    _write_file(tmp_path / "data" / "b.jsonl", "\n".join(lines[20:]).encode())
    corpus = load_corpus(None, [str(tmp_path / "data" / "*.jsonl")], 300, 0.2, tmp_path / "cache", text_field="body")
    ends = sum(int((split == 0).sum()) for split in (corpus.train, corpus.val, corpus.test))
    assert ends == len(records) and min(len(corpus.train), len(corpus.val), len(corpus.test)) > 0
    with np.load(next((tmp_path / "cache" / "text").iterdir())) as stored:
        documents = json.loads(stored["documents"].tobytes())
    expected = [f"a.jsonl:{index}" for index in range(20)] + [f"b.jsonl:{index}" for index in range(10)]
    assert sorted(sum(documents.values(), [])) == sorted(expected)


def test_parquet_rows_are_documents_of_their_column(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    records = _records()
    pq.write_table(pa.table({"content": records, "n": list(range(len(records)))}), tmp_path / "a.parquet")
    corpus = load_corpus(None, [str(tmp_path / "a.parquet")], 300, 0.2, tmp_path / "cache", text_field="content")
    assert sum(int((split == 0).sum()) for split in (corpus.train, corpus.val, corpus.test)) == len(records)
    assert min(len(corpus.train), len(corpus.val), len(corpus.test)) > 0  # one file, split by records


# --- a model's own tokenizer -------------------------------------------------------------------------------------


def _tokenizer(folder, words=WORDS, template="<s> $A", special_tokens=True):
    """A word-level tokenizer saved as a Hugging Face directory (or, with special_tokens False, without settings)."""
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {token: index for index, token in enumerate([*SPECIALS, *dict.fromkeys(words)])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    if template:
        tokenizer.post_processor = processors.TemplateProcessing(
            single=template, special_tokens=[("<s>", 1), ("</s>", 2)]
        )
    settings = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "[UNK]"} if special_tokens else {}
    transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, **settings).save_pretrained(folder)
    return folder


def _documents_of(tokens, start):
    """The documents of a split, each from its BOS."""
    cuts = np.flatnonzero(tokens == start)
    return [piece.tolist() for piece in np.split(tokens, cuts) if len(piece)]


def test_the_model_directory_tokenizer_encodes_the_text_with_its_bos_and_eos(tmp_path):
    model_dir = _tokenizer(tmp_path / "model")
    recipe = _recipe(tmp_path, {"factory": "nascli.hf:from_pretrained", "kwargs": {"path": str(model_dir)}},
                     files=_write_corpus(tmp_path / "corpus"))  # fmt: skip
    splits = recipe_splits(recipe)
    assert splits.num_classes == len(SPECIALS) + len(set(WORDS))  # data.vocab_size is not used
    assert (tmp_path / "run" / "tokenizer" / "tokenizer.json").is_file()
    assert not (tmp_path / "run" / "tokenizer.json").exists()
    tokens = splits.train.tokens.numpy()
    documents = _documents_of(tokens, 1)
    assert len(documents) > 1 and all(d[0] == 1 and d[-1] == 2 and 2 not in d[1:-1] for d in documents)
    assert 0 not in documents[0][3:-1]  # every word but "document N" on the first line is in the vocabulary


def test_eos_is_added_once_and_only_when_the_tokenizer_has_one(tmp_path):
    patterns = _write_corpus(tmp_path / "corpus")
    both = load_pretrained_tokenizer(_tokenizer(tmp_path / "both", template="<s> $A </s>"), "data.tokenizer")
    corpus = load_corpus(None, patterns, 0, 0.2, tmp_path / "cache", both)
    assert all(d[-1] == 2 and d.count(2) == 1 for d in _documents_of(corpus.train, 1))
    bare = load_pretrained_tokenizer(_tokenizer(tmp_path / "bare", special_tokens=False), "data.tokenizer")
    corpus = load_corpus(None, patterns, 0, 0.2, tmp_path / "cache", bare)
    assert corpus.train[0] == 1 and 2 not in corpus.train  # the post-processor's BOS; no EOS token to add


def test_data_tokenizer_overrides_the_model_directory_as_a_directory_or_a_file(tmp_path):
    model_dir = _tokenizer(tmp_path / "model")
    other = _tokenizer(tmp_path / "other", words=[*WORDS, "extra", "words"])
    model = {"factory": "nascli.hf:from_pretrained", "kwargs": {"path": str(model_dir)}}
    patterns = _write_corpus(tmp_path / "corpus")
    for index, tokenizer in enumerate([other, other / "tokenizer.json"]):
        recipe = _recipe(tmp_path / str(index), model, files=patterns, tokenizer=str(tokenizer))
        assert recipe_splits(recipe).num_classes == len(SPECIALS) + len(set(WORDS)) + 2
    with_file = recipe_splits(_recipe(tmp_path / "1", files=patterns, tokenizer=str(other / "tokenizer.json")))
    assert with_file.train.tokens[0] == 1 and 2 not in with_file.train.tokens  # tokenizer.json has no EOS setting


def test_a_model_directory_without_a_tokenizer_or_a_bad_data_tokenizer_is_one_line(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    (tmp_path / "junk.json").write_text("not a tokenizer")
    patterns = _write_corpus(tmp_path / "corpus")
    model = {"factory": "nascli.hf:from_pretrained", "kwargs": {"path": str(tmp_path / "model")}}
    with pytest.raises(UserInputError) as raised:
        recipe_splits(_recipe(tmp_path, model, files=patterns))
    assert str(raised.value) == (
        f"model.kwargs.path: {tmp_path / 'model'} holds no tokenizer (tokenizer.json or tokenizer_config.json);"
        " set data.tokenizer to the model's tokenizer"
    )
    for path, message in [(tmp_path / "nowhere", "is not a tokenizer"), (tmp_path / "model", "is not a tokenizer"),
                          (tmp_path / "junk.json", "cannot load a tokenizer from")]:  # fmt: skip
        with pytest.raises(UserInputError, match=f"^data.tokenizer: .*{message}") as raised:
            recipe_splits(_recipe(tmp_path, model, files=patterns, tokenizer=str(path)))
        assert str(path) in str(raised.value) and len(str(raised.value).splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_the_cache_is_keyed_by_the_tokenizer(tmp_path):
    patterns = _write_corpus(tmp_path / "corpus")
    first = load_pretrained_tokenizer(_tokenizer(tmp_path / "a"), "data.tokenizer")
    second = load_pretrained_tokenizer(_tokenizer(tmp_path / "b", words=WORDS[::-1]), "data.tokenizer")
    assert len(first) == len(second)  # the same vocabulary size, other ids
    a = load_corpus(None, patterns, 0, 0.2, tmp_path / "cache", first)
    b = load_corpus(None, patterns, 0, 0.2, tmp_path / "cache", second)
    assert not np.array_equal(a.train, b.train) and len(list((tmp_path / "cache" / "text").iterdir())) == 2
    again = load_corpus(None, patterns, 0, 0.2, tmp_path / "cache", first)
    assert np.array_equal(a.train, again.train) and len(list((tmp_path / "cache" / "text").iterdir())) == 2
    load_corpus(None, patterns, 0, 0.2, tmp_path / "cache", first, text_field="body")
    assert len(list((tmp_path / "cache" / "text").iterdir())) == 3


def test_a_vocabulary_over_65536_ids_is_stored_as_uint32(tmp_path, monkeypatch):
    monkeypatch.setenv("NASCLI_CACHE_DIR", str(tmp_path / "cache"))
    big = _tokenizer(tmp_path / "big", [f"w{index}" for index in range(70_000)] + WORDS)  # the corpus's ids > 70,000
    splits = recipe_splits(_recipe(tmp_path, files=_write_corpus(tmp_path / "corpus"), tokenizer=str(big)))
    assert splits.num_classes == len(SPECIALS) + 70_000 + len(set(WORDS))
    (cached,) = (tmp_path / "cache" / "text").iterdir()
    with np.load(cached) as stored:
        assert stored["train"].dtype == np.uint32
    inputs, _ = splits.train[0]
    assert inputs.dtype == torch.int64 and int(inputs.max()) >= 70_000


def test_a_run_keeps_the_model_tokenizer_and_refuses_another(tmp_path):
    patterns = _write_corpus(tmp_path / "corpus")
    recipe = _recipe(tmp_path, files=patterns, tokenizer=str(_tokenizer(tmp_path / "a")))
    recipe_splits(recipe)
    pinned = {p.name: p.read_bytes() for p in (tmp_path / "run" / "tokenizer").iterdir()}
    recipe_splits(recipe)  # the same tokenizer: accepted
    with pytest.raises(UserInputError, match="no longer gives the tokenizer this run was trained with"):
        recipe_splits(_using(recipe, _tokenizer(tmp_path / "b", words=WORDS[::-1])))
    with pytest.raises(UserInputError, match="no longer gives the tokenizer this run was trained with"):
        recipe_splits(_using(recipe, None))  # a BPE where the run used the model's tokenizer
    assert {p.name: p.read_bytes() for p in (tmp_path / "run" / "tokenizer").iterdir()} == pinned
    assert not (tmp_path / "run" / "tokenizer.json").exists()


def _using(recipe, tokenizer):
    data = recipe.data.model_copy(update={"tokenizer": None if tokenizer is None else str(tokenizer)})
    return recipe.model_copy(update={"data": data})


def test_text_the_tokenizer_mostly_does_not_know_is_warned_about_also_from_the_cache(tmp_path):
    tokenizer = load_pretrained_tokenizer(_tokenizer(tmp_path / "model"), "data.tokenizer")
    known = load_corpus(None, _write_corpus(tmp_path / "known"), 0, 0.2, tmp_path / "cache", tokenizer)
    assert 0 < np.count_nonzero(known.train == 0) <= 0.05 * len(known.train)  # a few unknown: no warning
    folder = tmp_path / "foreign"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for index in range(6):  # a third of the words are not in the vocabulary
        words = [*rng.choice(WORDS, 20), "der", "Hund", "schläft", "unter", "dem", "Baum", "heute", "morgen", "früh"]
        (folder / f"{index}.txt").write_text(" ".join(words), encoding="utf-8")
    for _ in range(2):  # encoded, then read from the cache
        with pytest.warns(UserWarning, match=r"data: \d+% of the \d+ tokens of 6 files are the tokenizer's unknown"):
            load_corpus(None, [str(folder / "*.txt")], 0, 0.2, tmp_path / "cache", tokenizer)
