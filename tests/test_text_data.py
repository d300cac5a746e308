"""Offline text: whole files split three ways, a tokenizer trained on the train files, cached, windows of tokens."""

import numpy as np
import pytest
import torch

from nascli.data import recipe_splits
from nascli.errors import UserInputError
from nascli.recipe.schema import Recipe
from nascli.text_data import TokenWindows, corpus_files, load_corpus

pytest.importorskip("tokenizers")

WORDS = "the quick brown fox jumps over the lazy dog while a cat naps in the warm sun by the river bank".split()


def _write_corpus(folder, files=12, lines=60):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for index in range(files):
        text = "\n".join(" ".join(rng.choice(WORDS, 12)) for _ in range(lines))
        (folder / f"doc{index:02d}.txt").write_text(f"document {index}\n{text}\n", encoding="utf-8")
    return [str(folder / "*.txt")]


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
    assert np.array_equal(first.train, again.train) and first.tokenizer_json == again.tokenizer_json
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


def _recipe(tmp_path, **data):
    return Recipe(
        model={"factory": "x:y"}, input_shape=[16], input_dtype="int64",
        data={"name": "text", "vocab_size": 300, "val_fraction": 0.2, **data}, run_dir=str(tmp_path / "run"),
    )  # fmt: skip


def test_recipe_splits_are_token_windows_of_the_sequence_length(tmp_path):
    splits = recipe_splits(_recipe(tmp_path, files=_write_corpus(tmp_path / "corpus")))
    assert splits.task == "language_modeling" and splits.num_classes == 300 and splits.input_shape == (16,)
    inputs, targets = splits.train[0]
    assert inputs.shape == targets.shape == (16,)


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda d: [str(d / "missing" / "*.txt")], "data.files: no file matches"),
        (lambda d: _bad_bytes(d), "is not valid UTF-8 \\(byte 3\\)"),
        (lambda d: _write_corpus(d / "tiny", files=2, lines=1), "too small to split"),
        (lambda d: _empty(d), "too small to split"),
    ],
    ids=["missing", "not-utf8", "too-small", "empty"],
)
def test_a_bad_corpus_is_one_clear_line(tmp_path, setup, message):
    with pytest.raises(UserInputError, match=message):
        recipe_splits(_recipe(tmp_path, files=setup(tmp_path)))


def _bad_bytes(folder):
    patterns = _write_corpus(folder / "corpus")
    (folder / "corpus" / "doc03.txt").write_bytes(b"abc\xff\xfe def")
    return patterns


def _empty(folder):
    (folder / "empty").mkdir()
    for index in range(5):
        (folder / "empty" / f"{index}.txt").write_text("")
    return [str(folder / "empty" / "*.txt")]


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
