"""Hugging Face models for recipes: built from a config, or loaded from a local directory.

``model.factory: nascli.hf:from_config`` with ``kwargs: {architecture: LlamaForCausalLM, config:
{...}}`` builds a randomly initialized model of that class; ``nascli.hf:from_pretrained`` with
``kwargs: {path: ./my-model}`` loads a checkpoint directory (never the network). Bad names are
one clear error naming the recipe key. transformers is imported only when a recipe asks for it
(the ``hf`` extra).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from nascli.errors import UserInputError
from nascli.mapped_weights import own_mapped_weights


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as exc:
        raise UserInputError("model.factory: Hugging Face models need the hf extra: pip install 'nascli[hf]'") from exc
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()  # stderr keeps nascli's own lines (errors are one line)
    return transformers


def _model_class(architecture: Any, where: str) -> Any:
    transformers = _transformers()
    found = getattr(transformers, architecture, None) if isinstance(architecture, str) else None
    if not isinstance(found, type) or not issubclass(found, transformers.PreTrainedModel):
        raise UserInputError(f"{where}: {architecture!r} is not a Hugging Face model class of transformers")
    return found


def from_config(architecture: str, config: dict[str, Any] | None = None) -> nn.Module:
    """A randomly initialized ``architecture`` (``"LlamaForCausalLM"``) with ``config`` overriding its defaults."""
    model_class = _model_class(architecture, "model.kwargs.architecture")
    if config is not None and not isinstance(config, dict):
        raise UserInputError(f"model.kwargs.config: expected a mapping of config fields, got {type(config).__name__}")
    try:
        built = model_class.config_class(**(config or {}))
        return model_class(built)
    except Exception as exc:  # transformers validates configs with errors of its own types
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
        raise UserInputError(f"model.kwargs.config: {lines[-1]}") from exc


#: the files that hold a directory's weights, one of them whole or sharded with an index
WEIGHT_FILES = ("*.safetensors", "*.bin", "*.safetensors.index.json", "*.bin.index.json")


def from_pretrained(path: str, architecture: str | None = None) -> nn.Module:
    """The model saved in the local directory ``path``, as the class its config names (or ``architecture``).

    A directory holding only ``config.json`` gives the model on the meta device
    (``pretrained_on_meta``): ``nascli convert`` and ``nascli profile`` of a model larger than the
    machine work from its config alone; the stages that need weights refuse its checkpoint. The
    weights are moved out of the mapped files into memory of their own (nascli/mapped_weights.py).
    """
    directory, model_class = _pretrained_class(path, architecture)
    if not any(any(directory.glob(pattern)) for pattern in WEIGHT_FILES):
        return _on_meta(directory, model_class)
    try:
        model = model_class.from_pretrained(directory, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise UserInputError(f"model.kwargs.path: cannot load {directory}: {str(exc).splitlines()[0]}") from exc
    own_mapped_weights(model, list(directory.glob("*.safetensors")))  # so a freed tensor frees its memory
    return model


def pretrained_on_meta(path: str, architecture: str | None = None) -> nn.Module:
    """``from_pretrained``'s model on the meta device: its classes, shapes and dtype without a weight read.

    For what reads only the search space (``nascli profile`` of a checkpoint): building it takes
    the time of parsing ``config.json``, where loading a 1 B model's weights takes seconds.
    """
    return _on_meta(*_pretrained_class(path, architecture))


def pretrained_buffers(path: str, architecture: str | None = None) -> dict[str, Tensor]:
    """The non-persistent buffers of ``from_pretrained``'s model (rotary frequencies, position ids).

    A directory's weight files do not hold them: the model computes them from its config when it
    is built. Restoring a checkpoint on the meta device (nascli.stages.load) takes them from here,
    a model built with its parameters on the meta device and only its buffers allocated.
    """
    from accelerate import init_empty_weights

    directory, model_class = _pretrained_class(path, architecture)
    with init_empty_weights(include_buffers=False):
        model = _built_from_config(directory, model_class)
    persistent = model.state_dict().keys()
    return {name: b for name, b in model.named_buffers() if name not in persistent and not b.is_meta}


def _on_meta(directory: Path, model_class: Any) -> nn.Module:
    import torch

    with torch.device("meta"):
        return _built_from_config(directory, model_class)


def _built_from_config(directory: Path, model_class: Any) -> nn.Module:
    """``model_class`` built from the directory's config in the dtype it records, its weights initialized."""
    import torch

    try:
        config = model_class.config_class.from_pretrained(directory, local_files_only=True)
        dtype = getattr(config, "dtype", None)  # as from_pretrained's default dtype="auto" reads it
        dtype = getattr(torch, dtype, None) if isinstance(dtype, str) else dtype
        return model_class._from_config(config, dtype=dtype if isinstance(dtype, torch.dtype) else torch.float32)
    except (OSError, ValueError) as exc:
        raise UserInputError(f"model.kwargs.path: cannot read {directory}: {str(exc).splitlines()[0]}") from exc


def _pretrained_class(path: str, architecture: str | None) -> tuple[Path, Any]:
    """(directory, model class) of a local model directory: the class its config names, or ``architecture``."""
    directory = Path(path)
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise UserInputError(f"model.kwargs.path: {directory} is not a Hugging Face model directory (no config.json)")
    if architecture is None:
        try:
            architecture = (json.loads(config_file.read_text()).get("architectures") or [None])[0]
        except (OSError, ValueError) as exc:
            raise UserInputError(f"model.kwargs.path: cannot read {config_file}: {exc}") from exc
        if architecture is None:
            raise UserInputError(
                f"model.kwargs.architecture: {config_file} names no architectures; give the model class"
                " (LlamaForCausalLM, ...)"
            )
    return directory, _model_class(architecture, "model.kwargs.architecture")
