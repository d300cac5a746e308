"""Offline text for language models: documents, the tokenizer the model reads, windows of tokens.

Documents come from ``data.corpus: python_stdlib`` (the ``.py`` files of the running Python's
standard library without its tests, 11 MB for CPython 3.11, on every machine that runs nascli)
or from the files ``data.files`` names (globs): a ``.jsonl`` file holds one document per record
(its ``data.text_field``), a ``.parquet`` file one per row (that column), and any other file is
one document of UTF-8 text. Documents go to test, validation and train in an order fixed by a
hash of their id (the file's path relative to the files' common folder, plus ``:<index>`` for a
record), so held-out text is documents the model never saw, and the same files copied elsewhere
split the same way.

A pretrained model reads the token ids its embeddings were trained on, so its own tokenizer
encodes the text (``data.tokenizer``, or the directory of a ``nascli.hf:from_pretrained`` model),
loaded by transformers from local files only, and only for such a recipe. A model built from a
config or a factory gets a byte-level BPE (``tokenizers``) trained on the train documents only.
Token arrays are uint16 while every id fits, else uint32. They are cached under the user cache
directory, keyed by the tokenizer, the files' names and contents and the split settings, in one
file written atomically once everything was read and tokenized. A sample is a window of
``seq_len`` tokens and the next token after each (``input_shape: [seq_len]``).

The files are read with the standard library and ``pyarrow`` rather than the ``datasets``
library: that one pulls pandas, fsspec, multiprocess and aiohttp into an offline tool and reports
a bad record as a traceback, where reading JSON lines here names the file and the line.
"""

from __future__ import annotations

import glob
import hashlib
import io
import json
import os
import shutil
import sysconfig
import tempfile
import warnings
import zipfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from nascli.atomic import atomic_directory, atomic_write, writing
from nascli.errors import UserInputError
from nascli.userdirs import ANOTHER_CACHE

CORPORA = ("python_stdlib",)
_LEFT_OUT = {"test", "tests", "idlelib", "lib2to3", "site-packages", "dist-packages"}
END_OF_TEXT = "<|endoftext|>"  # the trained BPE's end of every document
_FORMAT = 3  # bump when the cached file changes meaning
_UINT16_IDS = 65_536
_BATCH = 256  # documents per call of a pretrained tokenizer
TOKENIZER_FILE = "tokenizer.json"  # a run's trained BPE
TOKENIZER_DIR = "tokenizer"  # a run's pretrained tokenizer, as its save_pretrained wrote it
_TOKENIZER_NAMES = ("tokenizer.json", "tokenizer_config.json")
_NOT_A_TOKENIZER = {
    "model.kwargs.path": "holds no tokenizer (tokenizer.json or tokenizer_config.json);"
    " set data.tokenizer to the model's tokenizer",
    "data.tokenizer": "is not a tokenizer (a directory holding tokenizer.json or tokenizer_config.json,"
    " or a tokenizer.json file)",
}


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


@dataclass(frozen=True)
class Document:
    """One document: a whole file, or one record of a JSON lines or parquet file."""

    id: str  # the file's name relative to the files' common folder, with ":<record index>" for a record
    text: str


class PretrainedTokenizer:
    """A model's own tokenizer (transformers), and the files that are its identity.

    ``files`` (what its ``save_pretrained`` writes) key the cache and pin the run: a tokenizer that
    saves the same files gives the same ids. An ``--format hf`` export copies them beside the model.
    """

    def __init__(self, tokenizer: Any, path: Path) -> None:
        self.tokenizer, self.path = tokenizer, path

    def __len__(self) -> int:
        """The vocabulary, added tokens included."""
        return len(self.tokenizer)

    @cached_property
    def files(self) -> dict[str, bytes]:
        # written to a folder only to be read back; a temp disk too full for it is one line naming the folder
        with tempfile.TemporaryDirectory() as folder, writing(folder, "set TMPDIR to another disk"):
            self.tokenizer.save_pretrained(folder)
            return _folder_files(Path(folder))

    @cached_property
    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for name, data in sorted(self.files.items()):
            digest.update(f"{name}\0{len(data)}\0".encode() + data)
        return digest.hexdigest()

    def encode(self, texts: list[str]) -> np.ndarray:
        """The documents' ids one after another: each as the tokenizer's own settings encode it
        (Llama's adds BOS), then its EOS when it has one and the document does not already end with it."""
        eos, dtype = self.tokenizer.eos_token_id, token_dtype(len(self))
        pieces = [np.zeros(0, dtype=dtype)]
        for start in range(0, len(texts), _BATCH):
            batch = texts[start : start + _BATCH]
            encoded = self.tokenizer(batch, add_special_tokens=True, return_attention_mask=False, verbose=False)
            for ids in encoded["input_ids"]:
                ended = eos is None or ids[-1:] == [eos]
                pieces.append(np.asarray(ids if ended else [*ids, eos], dtype=dtype))
        return np.concatenate(pieces)


@dataclass
class TextCorpus:
    """Token arrays of the three splits and the tokenizer that made them."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    tokenizer: str | PretrainedTokenizer  # the trained BPE's JSON, or the model's own tokenizer
    vocab_size: int
    description: str


def token_dtype(vocab_size: int) -> type[np.unsignedinteger]:
    """The narrowest array type holding every id of a vocabulary: uint16 up to 65,536 ids, else uint32."""
    return np.uint16 if vocab_size <= _UINT16_IDS else np.uint32


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


def _read_bytes(path: Path, where: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UserInputError(f"{where}: cannot read {path} ({exc.strerror})") from exc


def _decode(path: Path, data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserInputError(f"{where}: {path} is not valid UTF-8 (byte {exc.start})") from exc


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _jsonl_texts(path: Path, text: str, where: str, field: str) -> list[str]:
    """The ``field`` of every record, one JSON object a line (blank lines skipped); a bad line is named."""
    texts = []
    for number, line in enumerate(text.split("\n"), 1):  # not splitlines: a JSON string may hold U+2028
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserInputError(f"{where}: {path} line {number} is not JSON ({exc.msg}, column {exc.colno})") from exc
        if not isinstance(record, dict) or field not in record:
            raise UserInputError(f"{where}: {path} line {number} has no field {field!r} (data.text_field)")
        if not isinstance(record[field], str):
            kind = _kind(record[field])
            raise UserInputError(f"{where}: {path} line {number}: field {field!r} is {kind}, not a string")
        texts.append(record[field])
    return texts


def _parquet_texts(path: Path, data: bytes, where: str, field: str) -> list[str]:
    """The column ``field`` of every row of a parquet file, read with pyarrow (imported only here)."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise UserInputError(f"{where}: {path}: reading parquet needs pyarrow (pip install 'nascli[hf]')") from exc
    try:
        parquet = pq.ParquetFile(pa.BufferReader(data))
        if field not in parquet.schema_arrow.names:
            raise UserInputError(f"{where}: {path} has no column {field!r} (data.text_field)")
        values = parquet.read(columns=[field]).column(field).to_pylist()
    except pa.ArrowException as exc:
        raise UserInputError(f"{where}: {path} is not a readable parquet file ({_first_line(exc)})") from exc
    if not values:
        raise UserInputError(f"{where}: {path} is empty (no rows)")
    for index, value in enumerate(values):
        if not isinstance(value, str):
            raise UserInputError(f"{where}: {path} record {index}: column {field!r} is {_kind(value)}, not a string")
    return values


def _documents(path: Path, name: str, data: bytes, where: str, field: str) -> list[Document]:
    """A ``.jsonl`` file's records, a ``.parquet`` file's rows, or any other file whole."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        texts = _parquet_texts(path, data, where, field)
    elif suffix == ".jsonl":
        texts = _jsonl_texts(path, _decode(path, data, where), where, field)
    else:
        return [Document(name, _decode(path, data, where))]
    return [Document(f"{name}:{index}", text) for index, text in enumerate(texts)]


def _split(documents: list[Document], held_out: float) -> tuple[list[Document], list[Document], list[Document]]:
    """Documents to test, then validation (each at least ``held_out`` of the characters), the rest to train."""
    order = sorted(documents, key=lambda d: hashlib.sha256(d.id.encode()).hexdigest())
    total = sum(len(d.text) for d in order)
    splits: list[list[Document]] = [[], []]
    taken = 0
    for split in splits:
        size = 0
        while taken < len(order) and size < held_out * total:
            split.append(order[taken])
            size, taken = size + len(order[taken].text), taken + 1
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


def _encode_bpe(tokenizer_json: str, texts: list[str]) -> np.ndarray:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(tokenizer_json)
    end = np.full(1, tokenizer.token_to_id(END_OF_TEXT), dtype=np.uint16)
    pieces = [np.zeros(0, dtype=np.uint16)]
    for encoding in tokenizer.encode_batch(texts):
        pieces.extend((np.asarray(encoding.ids, dtype=np.uint16), end))  # END_OF_TEXT after every document
    return np.concatenate(pieces)


def _cache_key(root: Path, contents: dict[Path, bytes], tokenizer_key: str, held_out: float, field: str) -> str:
    digest = hashlib.sha256(f"{_FORMAT}\0{tokenizer_key}\0{held_out}\0{field}\0".encode())
    for path, data in contents.items():
        digest.update(f"{path.relative_to(root)}\0{len(data)}\0".encode() + data)
    return digest.hexdigest()[:24]


def load_corpus(
    corpus: str | None,
    patterns: list[str],
    vocab_size: int,
    held_out: float,
    cache: Path,
    tokenizer: PretrainedTokenizer | None = None,
    text_field: str = "text",
) -> TextCorpus:
    """The corpus tokenized by ``tokenizer``, or by a BPE of ``vocab_size`` tokens trained on its train documents.

    Read from the cache when the same files were tokenized the same way before. The cache is one
    file (the trained BPE and the token arrays), written atomically after every file was read and
    tokenized, so bad input leaves nothing behind; one that cannot be read is rebuilt.
    """
    if tokenizer is None and not 256 < vocab_size <= 65_535:
        raise UserInputError(f"data.vocab_size: {vocab_size} must be between 257 and 65535 (byte-level BPE)")
    where = "data.corpus" if corpus is not None else "data.files"
    root, files = corpus_files(corpus, patterns)
    contents = {path: _read_bytes(path, where) for path in files}
    empty = next((path for path, data in contents.items() if not data.strip()), None)
    if corpus is None and empty is not None:  # the standard library has empty modules; a user's is a mistake
        raise UserInputError(f"{where}: {empty} is empty")
    tokenizer_key = tokenizer.fingerprint if tokenizer is not None else f"bpe:{vocab_size}"
    cached = cache / "text" / f"{_cache_key(root, contents, tokenizer_key, held_out, text_field)}.npz"
    description = corpus or f"{len(files)} files"
    found = _read_cache(cached, tokenizer, vocab_size, description)
    if found is not None:
        return _checked_unknown(found)
    documents = [document for path, data in contents.items()
                 for document in _documents(path, str(path.relative_to(root)), data, where, text_field)]  # fmt: skip
    train, val, test = _split(documents, held_out)
    if not train or not val or not test or not any(d.text for d in train):
        raise UserInputError(
            f"{where}: {description} is too small to split into train, validation and test documents"
            f" (it needs at least 3 non-empty documents, and data.val_fraction={held_out} must leave train documents)"
        )
    used = tokenizer if tokenizer is not None else _train_tokenizer([d.text for d in train], vocab_size)
    splits = {"train": train, "val": val, "test": test}
    arrays = {name: _encode(used, [d.text for d in split]) for name, split in splits.items()}
    ids = {name: [d.id for d in split] for name, split in splits.items()}
    stored = used if isinstance(used, str) else ""

    def write(f: io.BufferedWriter) -> None:
        np.savez(f, **arrays, tokenizer=np.frombuffer(stored.encode(), dtype=np.uint8),
                 documents=np.frombuffer(json.dumps(ids).encode(), dtype=np.uint8))  # fmt: skip

    atomic_write(cached, write, hint=ANOTHER_CACHE)
    vocabulary = vocab_size if isinstance(used, str) else len(used)
    return _checked_unknown(TextCorpus(arrays["train"], arrays["val"], arrays["test"], used, vocabulary, description))


#: the share of a text's tokens that may be the tokenizer's unknown token before the user is told
UNKNOWN_SHARE = 0.05


def _checked_unknown(corpus: TextCorpus) -> TextCorpus:
    """Warn when a model's own tokenizer maps much of the text to its unknown token.

    Importance, candidate scores, perplexity and distillation on such text measure the unknown
    token, not the language: the text is in a script or encoding the tokenizer never saw (a
    word-level tokenizer for another language, a binary file read as text). Byte-level
    tokenizers, and the BPE trained on the text itself, have no unknown token.
    """
    unknown = None if isinstance(corpus.tokenizer, str) else corpus.tokenizer.tokenizer.unk_token_id
    tokens = sum(len(a) for a in (corpus.train, corpus.val, corpus.test))
    if unknown is None or tokens == 0:
        return corpus
    share = sum(int((a == unknown).sum()) for a in (corpus.train, corpus.val, corpus.test)) / tokens
    if share > UNKNOWN_SHARE:
        warnings.warn(
            f"data: {share:.0%} of the {tokens} tokens of {corpus.description} are the tokenizer's unknown token"
            f" ({corpus.tokenizer.tokenizer.unk_token!r}); is the text in a language and encoding it knows?",
            stacklevel=3,
        )
    return corpus


def _encode(tokenizer: str | PretrainedTokenizer, texts: list[str]) -> np.ndarray:
    return _encode_bpe(tokenizer, texts) if isinstance(tokenizer, str) else tokenizer.encode(texts)


def _read_cache(
    path: Path, tokenizer: PretrainedTokenizer | None, vocab_size: int, description: str
) -> TextCorpus | None:
    try:
        with np.load(path) as stored:
            arrays = {name: stored[name] for name in ("train", "val", "test")}
            tokenizer_json = stored["tokenizer"].tobytes().decode()
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, UnicodeDecodeError):
        return None  # absent or unreadable: built again and replaced
    if tokenizer is not None:
        return TextCorpus(arrays["train"], arrays["val"], arrays["test"], tokenizer, len(tokenizer), description)
    return TextCorpus(arrays["train"], arrays["val"], arrays["test"], tokenizer_json, vocab_size, description)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0].strip()


def _transformers(key: str) -> Any:
    try:
        import transformers
    except ImportError as exc:
        raise UserInputError(f"{key}: Hugging Face tokenizers need the hf extra: pip install 'nascli[hf]'") from exc
    transformers.logging.set_verbosity_error()  # its notices would break the one-line errors on stderr
    return transformers


def load_pretrained_tokenizer(path: Path, key: str) -> PretrainedTokenizer:
    """The tokenizer at ``path``: a directory ``AutoTokenizer`` loads, or a ``tokenizer.json`` file.

    Only local files are read: ``path`` must exist before transformers sees it (a name that is not a
    folder would otherwise be taken for a Hub repository), and it loads with ``local_files_only``.
    ``key`` is the recipe key naming ``path`` (``data.tokenizer`` or ``model.kwargs.path``), for the
    one-line errors. A ``tokenizer.json`` alone carries no special-token settings: no EOS is added.
    """
    folder = path.is_dir() and any((path / name).is_file() for name in _TOKENIZER_NAMES)
    if not folder and not path.is_file():
        raise UserInputError(f"{key}: {path} {_NOT_A_TOKENIZER[key]}")
    transformers = _transformers(key)
    try:
        if folder:
            loaded = transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        else:
            from tokenizers import Tokenizer

            loaded = transformers.PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_file(str(path)))
    except Exception as exc:  # transformers and tokenizers raise errors of many types, some plain Exception
        raise UserInputError(f"{key}: cannot load a tokenizer from {path} ({_first_line(exc)})") from exc
    return PretrainedTokenizer(loaded, path)


def _folder_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def pinned_tokenizer(run_dir: Path) -> Path | None:
    """The tokenizer a run directory keeps: ``tokenizer/`` (a model's own) or ``tokenizer.json`` (a trained BPE)."""
    for path in (run_dir / TOKENIZER_DIR, run_dir / TOKENIZER_FILE):
        if path.exists():
            return path
    return None


def _pinned_files(pinned: Path) -> dict[str, bytes]:
    if pinned.is_dir():
        return {f"{pinned.name}/{name}": data for name, data in _folder_files(pinned).items()}
    return {pinned.name: pinned.read_bytes()}


def _files_of(tokenizer: str | PretrainedTokenizer) -> dict[str, bytes]:
    """What pinning ``tokenizer`` writes in a run directory, by path."""
    if isinstance(tokenizer, str):
        return {TOKENIZER_FILE: tokenizer.encode()}
    return {f"{TOKENIZER_DIR}/{name}": data for name, data in tokenizer.files.items()}


def _write_pin(run_dir: Path, tokenizer: str | PretrainedTokenizer) -> None:
    if isinstance(tokenizer, str):
        atomic_write(run_dir / TOKENIZER_FILE, lambda f: f.write(tokenizer.encode()))
        return
    files = tokenizer.files  # before the folder: the tokenizer saves them to a temp folder of its own

    def write(folder: Path) -> None:
        for name, data in files.items():
            (folder / name).write_bytes(data)

    atomic_directory(run_dir / TOKENIZER_DIR, write)  # renamed whole: never half a tokenizer


def pin_tokenizer(run_dir: Path, tokenizer: str | PretrainedTokenizer) -> None:
    """Keep the run's tokenizer in its run directory, and refuse a later stage whose tokenizer differs.

    The first stage reading the text writes it: a trained BPE as ``tokenizer.json``, a model's own
    tokenizer as the files its ``save_pretrained`` writes, in ``tokenizer/``. A later stage whose
    tokenizer differs (files changed, another vocabulary, another tokenizer) would feed the model
    other token ids, so it stops with one line. ``nascli export --format hf`` writes the pinned
    tokenizer beside the model.
    """
    pinned = pinned_tokenizer(run_dir)
    if pinned is None:
        _write_pin(run_dir, tokenizer)
    elif _pinned_files(pinned) != _files_of(tokenizer):
        raise UserInputError(
            f"data: the corpus no longer gives the tokenizer this run was trained with ({pinned}); restore the"
            " files or the tokenizer, or start a new run_dir"
        )


def save_pinned_tokenizer(pinned: Path, directory: Path) -> None:
    """Write a run's pinned tokenizer into ``directory`` as files ``AutoTokenizer.from_pretrained`` loads.

    A model's own tokenizer is copied as its ``save_pretrained`` wrote it, so it loads as the
    original; a trained BPE becomes a fast tokenizer whose EOS is ``END_OF_TEXT``.
    """
    if pinned.is_dir():
        shutil.copytree(pinned, directory, dirs_exist_ok=True)
        return
    from tokenizers import Tokenizer

    transformers = _transformers("--format hf")
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(pinned.read_text()))
    fast.eos_token = END_OF_TEXT
    fast.save_pretrained(directory)
