"""Offline text for language models: a corpus, a BPE tokenizer trained on it, windows of tokens.

The corpus is either ``python_stdlib``, the ``.py`` files of the running Python's standard
library without its tests (11 MB for CPython 3.11, on every machine that runs nascli), or the
files ``data.files`` names (globs). Files are split whole into test, validation and train, in an
order fixed by a hash of each file's name, so held-out text is documents the model never saw.
A byte-level BPE tokenizer (``tokenizers``) is trained on the train files only; any valid UTF-8
encodes. The tokenizer and the token arrays are cached under the user cache directory, keyed by
the files' contents and the vocabulary size, and written atomically. A sample is a window of
``seq_len`` tokens and the next token after each (``input_shape: [seq_len]``).
Files named by ``data.files`` are named relative to their common folder, so the same corpus
copied elsewhere splits the same way.
"""

from __future__ import annotations

import glob
import hashlib
import io
import json
import os
import sysconfig
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from nascli.atomic import atomic_write
from nascli.errors import UserInputError

CORPORA = ("python_stdlib",)
_LEFT_OUT = {"test", "tests", "idlelib", "lib2to3", "site-packages", "dist-packages"}
END_OF_TEXT = "<|endoftext|>"  # between files
_FORMAT = 2  # bump when the cached file changes meaning


class TokenWindows(Dataset):
    """Non-overlapping windows of ``seq_len`` tokens, each with the ``seq_len`` tokens that follow one step on."""

    def __init__(self, tokens: torch.Tensor, seq_len: int) -> None:
        self.tokens, self.seq_len = tokens, seq_len

    def __len__(self) -> int:
        return max(0, (len(self.tokens) - 1) // self.seq_len)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        start = index * self.seq_len
        window = self.tokens[start : start + self.seq_len + 1].long()  # stored narrower
        return window[:-1], window[1:]


@dataclass
class TextCorpus:
    """Token arrays of the three splits and the tokenizer that made them."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    tokenizer_json: str
    vocab_size: int
    description: str


def corpus_files(corpus: str | None, patterns: list[str]) -> tuple[Path, list[Path]]:
    """The root the files are named relative to, and the files, sorted; one clear line when there are none."""
    if corpus is not None and patterns:
        raise UserInputError("data: give data.corpus or data.files, not both")
    if corpus == "python_stdlib":
        root = Path(sysconfig.get_paths()["stdlib"])
        files = [p for p in root.rglob("*.py") if not _LEFT_OUT & set(p.relative_to(root).parts)]
    elif corpus is not None:
        raise UserInputError(f"data.corpus: unknown corpus {corpus!r} ({', '.join(CORPORA)})")
    elif not patterns:
        raise UserInputError("data: a text dataset needs data.corpus (python_stdlib) or data.files")
    else:
        files = []
        for pattern in patterns:
            found = [Path(p).resolve() for p in glob.glob(str(Path(pattern).expanduser()), recursive=True)]
            found = [p for p in found if p.is_file()]
            if not found:
                raise UserInputError(f"data.files: no file matches {pattern!r}")
            files.extend(found)
        # names relative to the files' common folder: the same corpus elsewhere splits the same way
        root = Path(os.path.commonpath(files)) if len(set(files)) > 1 else files[0].parent
    if not files:
        raise UserInputError(f"data.corpus: {corpus} has no files under {root}")
    return root, sorted(set(files))


def _read(path: Path, where: str) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserInputError(f"{where}: cannot read {path} ({exc.strerror})") from exc
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserInputError(f"{where}: {path} is not valid UTF-8 (byte {exc.start})") from exc


def _split_files(root: Path, texts: dict[Path, str], held_out: float) -> tuple[list[Path], list[Path], list[Path]]:
    """Whole files to test, then validation (each at least ``held_out`` of the characters), the rest to train."""
    order = sorted(texts, key=lambda p: hashlib.sha256(str(p.relative_to(root)).encode()).hexdigest())
    total = sum(len(t) for t in texts.values())
    splits: list[list[Path]] = [[], []]
    taken = 0
    for split in splits:
        size = 0
        while taken < len(order) and size < held_out * total:
            split.append(order[taken])
            size, taken = size + len(texts[order[taken]]), taken + 1
    return order[taken:], splits[1], splits[0]


def _train_tokenizer(texts: list[str], vocab_size: int) -> str:
    try:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    except ImportError as exc:
        raise UserInputError("data.name: text needs the tokenizers package (pip install 'nascli[hf]')") from exc
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[END_OF_TEXT], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )  # fmt: skip
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer.to_str()


def _encode(tokenizer_json: str, texts: list[str]) -> np.ndarray:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(tokenizer_json)
    end = np.full(1, tokenizer.token_to_id(END_OF_TEXT), dtype=np.uint16)
    pieces = []
    for encoding in tokenizer.encode_batch(texts):
        pieces.extend((np.asarray(encoding.ids, dtype=np.uint16), end))  # END_OF_TEXT after every file
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.uint16)


def load_corpus(corpus: str | None, patterns: list[str], vocab_size: int, held_out: float, cache: Path) -> TextCorpus:
    """The corpus tokenized, from the cache when the same files and vocabulary were tokenized before.

    The cache is one file (tokenizer and token arrays), written atomically; one that cannot be
    read is rebuilt.
    """
    if not 256 < vocab_size <= 65_535:
        raise UserInputError(f"data.vocab_size: {vocab_size} must be between 257 and 65535 (byte-level BPE)")
    where = "data.corpus" if corpus is not None else "data.files"
    root, files = corpus_files(corpus, patterns)
    texts = {path: _read(path, where) for path in files}
    digest = hashlib.sha256(f"{_FORMAT}:{vocab_size}:{held_out}".encode())
    for path, text in texts.items():
        digest.update(str(path.relative_to(root)).encode() + b"\0" + text.encode() + b"\0")
    cached = cache / "text" / f"{digest.hexdigest()[:24]}.npz"
    description = corpus or f"{len(files)} files"
    found = _read_cache(cached, vocab_size, description)
    if found is not None:
        return found
    train, val, test = _split_files(root, texts, held_out)
    if not train or not val or not test or not any(texts[p] for p in train):
        raise UserInputError(
            f"{where}: {description} is too small to split whole files into train, validation and test"
            f" (it needs at least 3 non-empty files, and data.val_fraction={held_out} must leave train files)"
        )
    tokenizer_json = _train_tokenizer([texts[p] for p in train], vocab_size)
    arrays = {name: _encode(tokenizer_json, [texts[p] for p in split])
              for name, split in (("train", train), ("val", val), ("test", test))}  # fmt: skip
    split_files = {name: [str(p.relative_to(root)) for p in split] for name, split in
                   (("train", train), ("val", val), ("test", test))}  # fmt: skip

    def write(f: io.BufferedWriter) -> None:
        np.savez(f, **arrays, tokenizer=np.frombuffer(tokenizer_json.encode(), dtype=np.uint8),
                 files=np.frombuffer(json.dumps(split_files).encode(), dtype=np.uint8))  # fmt: skip

    atomic_write(cached, write)
    return TextCorpus(arrays["train"], arrays["val"], arrays["test"], tokenizer_json, vocab_size, description)


def _read_cache(path: Path, vocab_size: int, description: str) -> TextCorpus | None:
    try:
        with np.load(path) as stored:
            arrays = {name: stored[name] for name in ("train", "val", "test")}
            tokenizer_json = stored["tokenizer"].tobytes().decode()
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, UnicodeDecodeError):
        return None  # absent or unreadable: built again and replaced
    return TextCorpus(arrays["train"], arrays["val"], arrays["test"], tokenizer_json, vocab_size, description)


TOKENIZER_FILE = "tokenizer.json"


def pin_tokenizer(run_dir: Path, tokenizer_json: str) -> None:
    """Keep the run's tokenizer in its run directory, and refuse a corpus that now tokenizes otherwise.

    The first stage reading the text writes ``tokenizer.json``; a later stage whose corpus gives
    another tokenizer (files changed, another vocabulary) would feed the model other token ids,
    so it stops with one line. ``nascli export --format hf`` puts this file in the directory.
    """
    path = run_dir / TOKENIZER_FILE
    if not path.is_file():
        atomic_write(path, lambda f: f.write(tokenizer_json.encode()))
    elif path.read_text() != tokenizer_json:
        raise UserInputError(
            f"data: the corpus no longer gives the tokenizer this run was trained with ({path}); restore the"
            " files, or start a new run_dir"
        )
