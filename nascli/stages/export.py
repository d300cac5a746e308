"""The export stage: the chosen subnet as a file that loads without nascli, checked against the model."""

from __future__ import annotations

import secrets
import warnings
from pathlib import Path

import torch
from torch import nn

from nascli.errors import NasCliError, UserInputError
from nascli.hf_export import save_pretrained_subnet
from nascli.space.export import export_model
from nascli.space.space import example_inputs, is_converted
from nascli.train.task import logits_of

FORMATS = {"pt2": ".pt2", "onnx": ".onnx", "torchscript": ".ts", "hf": ""}  # hf: a from_pretrained directory


def _write(plain: nn.Module, x: torch.Tensor, fmt: str, path: Path) -> torch.Tensor:
    """Write ``plain`` in ``fmt`` at ``path`` and return what the written file computes on ``x``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if fmt == "pt2":
            torch.export.save(torch.export.export(plain, (x,)), path)
            return logits_of(torch.export.load(path).module()(x))
        if fmt == "torchscript":
            torch.jit.trace(plain, x).save(str(path))
            return logits_of(torch.jit.load(str(path))(x))
        try:
            import onnxruntime
        except ImportError as exc:
            raise UserInputError("--format onnx needs the onnx extra: pip install -e '.[onnx]'") from exc
        torch.onnx.export(plain, (x,), str(path), dynamo=True, external_data=False, verbose=False)
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
    plain = (export_model(model) if is_converted(model) else model).eval()
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.{secrets.token_hex(4)}.tmp")  # a killed export's is removed as stale
    try:
        with torch.no_grad():
            expected = logits_of(plain(x))
            got = _write(plain, x, fmt, tmp)
        if not torch.allclose(got, expected, atol=1e-4, rtol=1e-4):
            raise NasCliError(f"{fmt} export differs from the model by {(got - expected).abs().max().item():.2e}")
        tmp.replace(output)
    finally:
        tmp.unlink(missing_ok=True)
    return output
