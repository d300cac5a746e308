"""The export stage: the chosen subnet as a file that loads without nascli, checked against the model."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import BinaryIO

import torch
from torch import nn

from nascli.atomic import atomic_write
from nascli.errors import NasCliError, UserInputError
from nascli.hf_export import save_pretrained_subnet
from nascli.space.export import export_model
from nascli.space.space import example_inputs, is_converted
from nascli.train.task import logits_of

FORMATS = {"pt2": ".pt2", "onnx": ".onnx", "torchscript": ".ts", "hf": ""}  # hf: a from_pretrained directory


def _write(plain: nn.Module, x: torch.Tensor, fmt: str, f: BinaryIO) -> None:
    """Write ``plain`` in ``fmt`` into the file object ``f``.

    A file object, never a path: torch's writers given a path report a full disk as "file write
    failed", without the OS error that ``nascli.atomic`` needs to say so in one line.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if fmt == "pt2":
            torch.export.save(torch.export.export(plain, (x,)), f)
        elif fmt == "torchscript":
            torch.jit.save(torch.jit.trace(plain, x), f)
        else:
            program = torch.onnx.export(plain, (x,), dynamo=True, verbose=False)
            f.write(program.model_proto.SerializeToString())  # weights inline: one self-contained file


def _computed(path: Path, fmt: str, x: torch.Tensor) -> torch.Tensor:
    """What the file ``path`` (in ``fmt``) computes on ``x``, loaded without nascli."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if fmt == "pt2":
            with open(path, "rb") as f:  # an open file: given a path, torch wants it to end in .pt2, not .tmp
                return logits_of(torch.export.load(f).module()(x))
        if fmt == "torchscript":
            return logits_of(torch.jit.load(str(path))(x))
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return torch.from_numpy(session.run(None, {name: x.numpy()})[0])


def suffix(fmt: str) -> str:
    """The file suffix of an export format; an unknown format is bad input."""
    if fmt not in FORMATS:
        raise UserInputError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    return FORMATS[fmt]


def check_output(output: Path, fmt: str) -> None:
    """Refuse an output path the format cannot be written to, before anything is loaded."""
    if fmt != "hf" and output.is_dir():
        example = output / f"model{suffix(fmt)}"
        raise UserInputError(f"--output {output}: a directory; give a file path such as {example}")
    if fmt == "hf" and output.exists() and not output.is_dir():
        raise UserInputError(f"--output {output}: a file; --format hf writes a directory")


def export_stage(
    model: nn.Module,
    input_shape: list[int],
    fmt: str,
    output: Path,
    input_dtype: str = "float32",
    tokenizer: Path | None = None,
) -> Path:
    """Export the active subnet (or the plain model) and check the file's output equals the model's.

    ``tokenizer``: a run's pinned tokenizer (``nascli.text_data.pinned_tokenizer``: ``tokenizer.json``
    or ``tokenizer/``), written into an ``hf`` directory with the model.
    """
    (x,) = example_inputs([[1, *input_shape]], [input_dtype])
    if fmt == "hf":
        return save_pretrained_subnet(model, (x,), output, tokenizer)
    if fmt == "onnx":
        try:
            import onnxruntime  # noqa: F401
        except ImportError as exc:
            raise UserInputError("--format onnx needs the onnx extra: pip install -e '.[onnx]'") from exc
    plain = (export_model(model) if is_converted(model) else model).eval()
    with torch.no_grad():
        expected = logits_of(plain(x))

        def check(written: Path) -> None:
            got = _computed(written, fmt, x)
            if not torch.allclose(got, expected, atol=1e-4, rtol=1e-4):
                raise NasCliError(f"{fmt} export differs from the model by {(got - expected).abs().max().item():.2e}")

        # the temp file is checked before it takes the place of an earlier export; a killed export's is
        # removed as stale by the next stage holding the directory
        return atomic_write(output, lambda f: _write(plain, x, fmt, f), check)
