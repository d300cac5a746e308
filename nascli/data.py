"""Built-in datasets that work offline, with a fixed train / validation / test split.

``digits`` is scikit-learn's bundled 8x8 digits (1,797 images); ``fashion_mnist`` reads the
gzipped IDX files that Debian's ``dataset-fashion-mnist`` package installs (or any folder holding
them); ``cifar10`` and ``imagefolder`` read a local ``root`` and never download; ``fake`` is
random data for smoke tests; ``text`` is a corpus or the user's own files, tokenized by the
model's own tokenizer or a BPE trained on them (``nascli/text_data.py``). The validation split
is carved from the training data with a fixed seed, so the search never sees the test split.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, Subset, TensorDataset

from nascli.errors import UserInputError
from nascli.recipe.schema import Recipe
from nascli.text_data import PretrainedTokenizer, TokenWindows, load_corpus, load_pretrained_tokenizer, pin_tokenizer
from nascli.userdirs import cache_dir

FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)  # where Debian puts them
_SPLIT_SEED = 20260
HF_PRETRAINED = "nascli.hf:from_pretrained"  # the factory of a model directory, which holds its tokenizer


@dataclass
class Splits:
    train: Dataset
    val: Dataset
    test: Dataset
    num_classes: int  # classes, or a text corpus's vocabulary size
    input_shape: tuple[int, ...]
    task: str = "classification"  # or "language_modeling": see nascli.train.task


def _split_train_val(train: Dataset, val_fraction: float) -> tuple[Dataset, Dataset]:
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(_SPLIT_SEED)).tolist()
    n_val = max(1, int(round(len(train) * val_fraction)))
    return Subset(train, order[n_val:]), Subset(train, order[:n_val])


def _standardize(train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    mean, std = train.mean(), train.std()
    return [(t - mean) / std for t in (train, *others)]


def _digits(val_fraction: float) -> Splits:
    from sklearn.datasets import load_digits

    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(data.target, dtype=torch.long)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(_SPLIT_SEED)).tolist()
    n_test = len(labels) // 5
    test_idx, train_idx = order[:n_test], order[n_test:]
    train_x, test_x = _standardize(images[train_idx], images[test_idx])
    train, val = _split_train_val(TensorDataset(train_x, labels[train_idx]), val_fraction)
    return Splits(train, val, TensorDataset(test_x, labels[test_idx]), 10, (1, 8, 8))


def _read_idx(path: Path) -> np.ndarray:
    """A gzipped IDX file of unsigned bytes; a missing, truncated or foreign file is one line (exit 2)."""
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
        raise UserInputError(f"data.root: {path} is not a readable gzipped IDX file ({exc})") from exc
    if len(data) < 4 or data[:3] != b"\x00\x00\x08":
        raise UserInputError(f"data.root: {path} is not an IDX file of unsigned bytes (bad header)")
    dims = data[3]
    header = 4 + 4 * dims
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    if len(data) < header or len(data) - header != int(np.prod(shape)):
        raise UserInputError(f"data.root: {path} is damaged (its header says {list(shape)}, its size disagrees)")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _find_fashion_mnist(root: str | None) -> Path:
    candidates = [Path(root)] if root else [Path(d) for d in FASHION_MNIST_DIRS]
    for folder in candidates:
        found = list(folder.rglob("train-images-idx3-ubyte.gz")) if folder.is_dir() else []
        if found:
            return found[0].parent
    where = root or " or ".join(FASHION_MNIST_DIRS)
    raise UserInputError(
        f"data.root: no Fashion-MNIST files (train-images-idx3-ubyte.gz) under {where}; "
        "install Debian's dataset-fashion-mnist or set data.root"
    )


def _fashion_mnist(root: str | None, val_fraction: float) -> Splits:
    folder = _find_fashion_mnist(root)

    def load(prefix: str) -> tuple[torch.Tensor, torch.Tensor]:
        images = _read_idx(folder / f"{prefix}-images-idx3-ubyte.gz")
        labels = _read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz")
        return torch.tensor(images, dtype=torch.float32).unsqueeze(1) / 255.0, torch.tensor(labels, dtype=torch.long)

    (train_x, train_y), (test_x, test_y) = load("train"), load("t10k")
    train_x, test_x = _standardize(train_x, test_x)
    train, val = _split_train_val(TensorDataset(train_x, train_y), val_fraction)
    return Splits(train, val, TensorDataset(test_x, test_y), 10, (1, 28, 28))


def _torchvision_folder(name: str, root: str | None, val_fraction: float) -> Splits:
    import torchvision
    from torchvision import transforms

    if not root or not Path(root).is_dir():
        raise UserInputError(f"data.root: {name} needs an existing local folder (got {root!r}); nothing is downloaded")
    to_tensor = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,) * 3, (0.5,) * 3)])
    try:
        if name == "cifar10":
            train = torchvision.datasets.CIFAR10(root, train=True, transform=to_tensor, download=False)
            test = torchvision.datasets.CIFAR10(root, train=False, transform=to_tensor, download=False)
            classes, shape = 10, (3, 32, 32)
        else:
            train = torchvision.datasets.ImageFolder(str(Path(root) / "train"), transform=to_tensor)
            test = torchvision.datasets.ImageFolder(str(Path(root) / "val"), transform=to_tensor)
            classes, shape = len(train.classes), tuple(train[0][0].shape)
    except (RuntimeError, FileNotFoundError) as exc:
        raise UserInputError(f"data.root: cannot read {name} from {root}: {exc}".splitlines()[0]) from exc
    fit, val = _split_train_val(train, val_fraction)
    return Splits(fit, val, test, classes, shape)


def _fake(val_fraction: float) -> Splits:
    generator = torch.Generator().manual_seed(_SPLIT_SEED)
    images = torch.randn(512, 3, 16, 16, generator=generator)
    labels = torch.randint(0, 10, (512,), generator=generator)
    train, val = _split_train_val(TensorDataset(images[:384], labels[:384]), val_fraction)
    return Splits(train, val, TensorDataset(images[384:], labels[384:]), 10, (3, 16, 16))


def recipe_splits(recipe: Recipe) -> Splits:
    """The recipe's dataset, refused (exit 2) when its samples are not the recipe's ``input_shape``.

    A model with global pooling runs on samples of another size without an error, and the
    costs it reports were computed for ``input_shape``: every stage that reads data checks.
    """
    if recipe.data.name == "text":
        return _text(recipe)
    splits = load_splits(recipe.data.name, recipe.data.root, recipe.data.val_fraction)
    if tuple(recipe.input_shape) != splits.input_shape:
        expected, name = list(splits.input_shape), recipe.data.name
        raise UserInputError(f"input_shape: {recipe.input_shape} does not match the {name} samples {expected}")
    return splits


def _text(recipe: Recipe) -> Splits:
    """Windows of ``input_shape[0]`` tokens of the recipe's corpus; the model reads token ids (int64)."""
    if len(recipe.input_shape) != 1 or recipe.input_dtype != "int64":
        raise UserInputError("input_shape: a text dataset needs input_shape [sequence length] and input_dtype int64")
    data, seq_len = recipe.data, recipe.input_shape[0]
    corpus = load_corpus(
        data.corpus, data.files, data.vocab_size, data.val_fraction, cache_dir(), recipe_tokenizer(recipe),
        data.text_field,
    )  # fmt: skip
    splits = [TokenWindows(torch.from_numpy(tokens.astype(np.int32)), seq_len)
              for tokens in (corpus.train, corpus.val, corpus.test)]  # fmt: skip
    for name, split in zip(("train", "validation", "test"), splits, strict=True):
        if len(split) == 0:
            what = f"the {name} split of {corpus.description}"
            raise UserInputError(f"input_shape: {what} is shorter than {seq_len} tokens")
    # only once the data is usable (bad input writes nothing), and under torchrun by rank 0 alone, which
    # holds the run directory's lock: another rank's pin would race it, and its refusal stops them all
    if recipe.run_dir is not None and _writes_run_dir():
        pin_tokenizer(Path(recipe.run_dir), corpus.tokenizer)
    return Splits(*splits, corpus.vocab_size, (seq_len,), "language_modeling")


def _writes_run_dir() -> bool:
    """Whether this process writes into the run directory: one process alone, or rank 0 of several."""
    distributed = torch.distributed
    return not (distributed.is_available() and distributed.is_initialized()) or distributed.get_rank() == 0


def tokenizer_source(recipe: Recipe) -> tuple[Path, str] | None:
    """Where the recipe's pretrained tokenizer is and the key naming it; None: a BPE is trained on the corpus.

    ``data.tokenizer`` first, else the directory of a ``nascli.hf:from_pretrained`` model: a
    pretrained model reads the ids its embeddings were trained on, which no other tokenizer gives.
    """
    if recipe.data.tokenizer is not None:
        return Path(recipe.data.tokenizer).expanduser(), "data.tokenizer"
    path = recipe.model.kwargs.get("path")
    if recipe.model.factory == HF_PRETRAINED and isinstance(path, str):
        return Path(path), "model.kwargs.path"
    return None


def recipe_tokenizer(recipe: Recipe) -> PretrainedTokenizer | None:
    """The recipe's pretrained tokenizer, loaded from local files; None when a BPE is trained on the corpus."""
    source = tokenizer_source(recipe)
    return load_pretrained_tokenizer(*source) if source is not None else None


def _embedding_rows(model: nn.Module) -> int | None:
    get = getattr(model, "get_input_embeddings", None)
    try:
        embeddings = get() if callable(get) else None
    except NotImplementedError:  # a Hugging Face model class that does not say where its embeddings are
        return None
    rows = getattr(embeddings, "num_embeddings", None)
    return rows if isinstance(rows, int) else None


def check_tokenizer_fits(recipe: Recipe, model: nn.Module) -> None:
    """Refuse (one line, exit 2) a text recipe's pretrained tokenizer with more ids than the model's embedding rows.

    ``convert`` calls it before writing anything: such ids would index past the embedding table
    at the first training step. Only the tokenizer is loaded, not the corpus. A model without
    ``get_input_embeddings``, and a trained BPE, are checked by the task when training starts.
    """
    if recipe.data.name != "text" or (source := tokenizer_source(recipe)) is None:
        return
    tokens = len(load_pretrained_tokenizer(*source))
    rows = _embedding_rows(model)
    if rows is not None and tokens > rows:
        path, key = source
        raise UserInputError(
            f"{key}: the tokenizer {path} has {tokens} tokens, more than the model's {rows} embedding rows;"
            " give the tokenizer the model was trained with"
        )


def load_splits(name: str, root: str | None = None, val_fraction: float = 0.15) -> Splits:
    """The train / validation / test splits of a built-in dataset."""
    if name == "digits":
        return _digits(val_fraction)
    if name == "fashion_mnist":
        return _fashion_mnist(root, val_fraction)
    if name in ("cifar10", "imagefolder"):
        return _torchvision_folder(name, root, val_fraction)
    if name == "fake":
        return _fake(val_fraction)
    raise UserInputError(f"data.name: unknown dataset {name!r} (digits, fashion_mnist, cifar10, imagefolder, fake)")
