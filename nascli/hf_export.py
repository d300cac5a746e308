"""Export a subnet of a Hugging Face model as a directory ``from_pretrained`` loads.

A uniform subnet (every layer with the same heads and MLP width, as Minitron prunes) is again
an instance of the model's own class with a smaller config. The config is read off the search
space: the hidden width from the embedding, the layer count from the depth hparam, the heads
(or key/value groups) and the MLP width from the per-layer hparams. It is then checked the only
way that is sure for any architecture: the class built from that config must take the subnet's
weights with no key or shape left over, and compute the same logits, before and after the
directory is written and read back. A subnet no config can describe (layers of different widths,
a head size that the config derives from the hidden size) is refused with what to do instead.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nascli.errors import NasCliError, UserInputError
from nascli.opt.checkpoint import EXPORTED_FROM
from nascli.space.export import export_model
from nascli.space.space import get_space, is_converted
from nascli.text_data import END_OF_TEXT
from nascli.train.task import logits_of


def _uniform(values: list[int], what: str) -> int | None:
    if not values:
        return None
    if len(set(values)) > 1:
        raise UserInputError(
            f"--format hf: the subnet's layers differ in {what} ({sorted(set(values))}); a Hugging Face config "
            "holds one value for every layer: search with search.uniform: true, or export with --format pt2 or onnx"
        )
    return values[0]


def _sizes(config: Any, active: dict[str, int]) -> tuple[dict[str, Any], list[int]]:
    """Config fields a subnet sets (``active``: its searchable hparams' values), and the candidate MLP
    widths (several when the space cannot tell)."""
    found: dict[str, Any] = {}
    depths = [v for n, v in active.items() if n.endswith(".depth")]
    if (layers := _uniform(depths, "depth")) is not None:
        found["num_hidden_layers"] = layers
    kv = _uniform([v for n, v in active.items() if n.endswith(".num_kv_heads")], "key/value heads")
    heads = _uniform([v for n, v in active.items() if n.endswith(".num_heads")], "attention heads")
    if kv is not None:
        found["num_key_value_heads"] = kv
        found["num_attention_heads"] = kv * (config.num_attention_heads // config.num_key_value_heads)
    elif heads is not None:
        found["num_attention_heads"] = heads
        if getattr(config, "num_key_value_heads", None) is not None:
            found["num_key_value_heads"] = heads
    hidden_names = [n for n in active if ".weight.shape[" in n]
    hidden = [active[n] for n in hidden_names]
    per_layer = [n for n in active if not n.endswith((".depth", "heads")) and n not in hidden_names]
    widths = sorted({active[n] for n in per_layer})  # MLP widths, and others a config cannot hold
    if hidden:
        found["hidden_size"] = _uniform(hidden, "hidden width")
    return found, widths


def _subnet(model: nn.Module) -> tuple[nn.Module, dict[str, int]]:
    """The subnet as a plain model, and its searchable hparams' values: of a converted model's active
    subnet, or of a subnet exported (and fine-tuned) that records the conversion it came from."""
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "to_dict"):
        raise UserInputError(f"--format hf: {type(model).__name__} is not a Hugging Face model (it has no config)")
    if is_converted(model):
        space = get_space(model)
        specs = {name: {"choices": hp.choices, "active": hp.active} for name, hp in space.hparams.items()}
        return export_model(model).eval(), _kept_hparams(specs, space.block_ranks)
    record = getattr(model, EXPORTED_FROM, None)
    if record is None:
        raise UserInputError("--format hf exports a searched subnet: give it search.pt or finetune.pt")
    return model.eval(), _kept_hparams(record["space"], record.get("block_ranks") or {})


def _kept_hparams(specs: dict[str, dict[str, Any]], block_ranks: dict[str, list[int]]) -> dict[str, int]:
    """Active values of the searchable hparams, less those inside blocks a depth skips (not exported)."""
    skipped = []
    for name, spec in specs.items():
        if name.endswith(".depth"):
            blocks, depth = max(spec["choices"]), spec["active"]
            ranks = block_ranks.get(name) or list(range(blocks))
            stack = name[: -len(".depth")]
            skipped += [f"{stack}.{index}." for index, rank in enumerate(ranks) if rank >= depth]
    return {name: spec["active"] for name, spec in specs.items() if not name.startswith(tuple(skipped))}


def _rejection(config: Any) -> str | None:
    """Why the config class itself rejects these sizes (LlamaConfig wants a hidden size its head
    count divides, even with an explicit head_dim), or None; such a directory could be neither
    saved nor loaded."""
    validate = getattr(config, "validate", None)
    if validate is None:
        return None
    try:
        validate()
    except Exception as exc:  # noqa: BLE001 - the library's validators raise their own error types
        return str(getattr(exc, "__cause__", None) or exc).strip().splitlines()[-1].strip()
    return None


def subnet_model(model: nn.Module) -> nn.Module:
    """The subnet of a Hugging Face model (converted, or exported from one) as an instance of its own class."""
    return _rebuilt(*_subnet(model))


def _rebuilt(plain: nn.Module, active: dict[str, int]) -> nn.Module:
    """``plain`` as its own class built from a config with the subnet's sizes, holding its weights."""
    fields, widths = _sizes(plain.config, active)
    state = plain.state_dict()
    last_error, rejected = "no candidate config", None
    for width in widths or [None]:
        candidate = copy.deepcopy(plain.config)
        sizes = {**fields, **({"intermediate_size": width} if width is not None else {})}
        for key, value in sizes.items():
            setattr(candidate, key, value)
        if (reason := _rejection(candidate)) is not None:
            rejected = (reason, sizes)
            continue
        rebuilt = type(plain)(candidate)  # on the CPU: buffers outside the state dict (rotary tables) are made here
        try:
            rebuilt.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            last_error = str(exc).strip().splitlines()[-1].strip()
            continue
        if getattr(candidate, "tie_word_embeddings", False):
            rebuilt.tie_weights()
        return rebuilt.eval()
    if rejected is not None:
        reason, sizes = rejected
        hint = (
            " (for the hidden width: rules hidden_size: {'*': {hidden_divisor: N}}, N a multiple of every head count)"
        )
        raise UserInputError(
            f"--format hf: {type(plain.config).__name__} rejects the subnet's sizes"
            f" ({', '.join(f'{k}={v}' for k, v in sizes.items())}): {reason} Search with sizes it accepts"
            f"{hint if 'hidden' in reason.lower() else ''}, or export with --format pt2 or onnx"
        )
    raise UserInputError(
        f"--format hf: the subnet is not a {type(plain).__name__} of any config ({last_error}); "
        "export it with --format pt2 or onnx"
    )


def save_pretrained_subnet(
    model: nn.Module, example: tuple[torch.Tensor, ...], directory: Path, tokenizer_json: str | None = None
) -> Path:
    """Write the active subnet to ``directory`` (replaced whole) and check what it loads computes the same.

    ``tokenizer_json`` (a ``tokenizers`` tokenizer, the run's) is written beside it as a fast
    tokenizer ``AutoTokenizer.from_pretrained`` loads.
    """
    plain, active = _subnet(model)
    rebuilt = _rebuilt(plain, active)
    with torch.no_grad():
        expected = logits_of(plain(*example))
        _check(logits_of(rebuilt(*example)), expected, "the rebuilt model")
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.with_name(f".{directory.name}.tmp")
    old = directory.with_name(f".{directory.name}.old")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        import transformers

        transformers.utils.logging.disable_progress_bar()
        rebuilt.save_pretrained(tmp)
        if tokenizer_json is not None:
            from tokenizers import Tokenizer

            fast = transformers.PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(tokenizer_json))
            fast.eos_token = END_OF_TEXT
            fast.save_pretrained(tmp)
        loaded = type(rebuilt).from_pretrained(tmp, local_files_only=True).eval()
        with torch.no_grad():
            _check(logits_of(loaded(*example)), expected, "the saved directory")
        if directory.exists():
            directory.rename(old)
        tmp.rename(directory)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return directory


def _check(got: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    if got.shape != expected.shape or not torch.allclose(got, expected, atol=1e-4, rtol=1e-4):
        difference = (got - expected).abs().max().item() if got.shape == expected.shape else float("nan")
        raise NasCliError(f"--format hf: {what} differs from the subnet by {difference:.2e}")
