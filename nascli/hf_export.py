"""Export a subnet of a Hugging Face model as a directory ``from_pretrained`` loads.

A uniform subnet (every layer with the same heads and MLP width, as Minitron prunes) is again
an instance of the model's own class with a smaller config. The config is read off the search
space: the hidden width from the embedding, the layer count from the depth hparam, the heads
(or key/value groups) and the MLP width from the per-layer hparams. A subnet whose decoder
layers differ in width is written with a modeling file of its own (``nascli/hf_layers.py``),
loaded with ``trust_remote_code=True``. Either is checked the only way that is sure for any
architecture: the class built from that config must take the subnet's weights with no key or
shape left over, and compute the same logits, before and after the directory is written and
read back. A subnet no config can describe (layers of different widths in a model that does not
follow transformers' decoder convention, a head size that the config derives from the hidden
size) is refused with what to do instead.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nascli.atomic import atomic_directory
from nascli.errors import NasCliError, UserInputError
from nascli.hf_layers import MODULE_FILE, heterogeneous_classes, heterogeneous_config, layer_sizes, modeling_source
from nascli.numerics import max_difference, outputs_match, tolerance
from nascli.opt.checkpoint import EXPORTED_FROM
from nascli.space.export import export_in_place
from nascli.space.space import get_space, is_converted
from nascli.text_data import save_pinned_tokenizer
from nascli.train.device import weights_dtype
from nascli.train.task import logits_of


def _uniform(values: list[int], what: str) -> int | None:
    if not values:
        return None
    if len(set(values)) > 1:
        raise UserInputError(
            f"--format hf: the subnet's layers differ in {what} ({sorted(set(values))}); a Hugging Face config "
            "holds one value for every layer, and only Llama-style decoders (model.layers of <Prefix>DecoderLayer) "
            "get a per-layer modeling file: search with search.uniform: true, or export with --format pt2 or onnx"
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
    per_group = _uniform([v for n, v in active.items() if n.endswith(".num_heads_per_group")], "query heads per group")
    heads = _uniform([v for n, v in active.items() if n.endswith(".num_heads")], "attention heads")
    if kv is not None or per_group is not None:
        groups = config.num_key_value_heads if kv is None else kv
        found["num_key_value_heads"] = groups
        found["num_attention_heads"] = groups * (per_group or config.num_attention_heads // config.num_key_value_heads)
    elif heads is not None:
        found["num_attention_heads"] = heads
        if getattr(config, "num_key_value_heads", None) is not None:
            found["num_key_value_heads"] = heads
    hidden_names = [n for n in active if ".weight.shape[" in n]
    hidden = [active[n] for n in hidden_names]
    per_layer = [
        n for n in active if not n.endswith((".depth", "heads", ".num_heads_per_group")) and n not in hidden_names
    ]
    widths = sorted({active[n] for n in per_layer})  # MLP widths, and others a config cannot hold
    if hidden:
        found["hidden_size"] = _uniform(hidden, "hidden width")
    heads_before = getattr(config, "num_attention_heads", None)
    if (
        heads_before
        and getattr(config, "head_dim", None) is None
        and found.keys() & {"hidden_size", "num_attention_heads"}
    ):
        # heads keep their size: a config without head_dim (Qwen2's) derives it from the hidden width and head count
        found["head_dim"] = config.hidden_size // heads_before
    return found, widths


def _subnet(model: nn.Module) -> tuple[nn.Module, dict[str, int]]:
    """The subnet as a plain model, and its searchable hparams' values: of a converted model's active
    subnet (exported in place, so a model as large as memory allows is never held twice), or of a
    subnet exported (and fine-tuned) that records the conversion it came from."""
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "to_dict"):
        raise UserInputError(f"--format hf: {type(model).__name__} is not a Hugging Face model (it has no config)")
    if is_converted(model):
        space = get_space(model)
        specs = {name: {"choices": hp.choices, "active": hp.active} for name, hp in space.hparams.items()}
        kept = _kept_hparams(specs, space.block_ranks)
        return export_in_place(model).eval(), kept
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
        return _reason(exc)
    return None


def _reason(exc: BaseException) -> str:
    """The last line of a config validator's error (transformers wraps the ValueError it raised)."""
    return str(getattr(exc, "__cause__", None) or exc).strip().splitlines()[-1].strip()


def _rebuilt(plain: nn.Module, active: dict[str, int]) -> tuple[nn.Module, str | None]:
    """``plain`` as a class built from a config with the subnet's sizes, holding its weights, and the
    source of the modeling file that class needs (None: the model's own class, from transformers).

    The class is built on the meta device and takes ``plain``'s tensors themselves (``assign``):
    no memory is spent, and the weights keep their dtype. Buffers outside the state dict (rotary
    tables) are ``plain``'s, which the same class computed for the same head size.
    """
    source = modeling_source(plain)
    if source is not None and len({tuple(size.items()) for size in layer_sizes(plain)}) > 1:
        return _per_layer(plain, source), source
    fields, widths = _sizes(plain.config, active)
    last_error, rejected = "no candidate config", None
    for width in widths or [None]:
        candidate = copy.deepcopy(plain.config)
        sizes = {**fields, **({"intermediate_size": width} if width is not None else {})}
        for key, value in sizes.items():
            setattr(candidate, key, value)
        if (reason := _rejection(candidate)) is not None:
            rejected = (reason, sizes)
            continue
        try:
            return _holding_weights(type(plain), candidate, plain), None
        except RuntimeError as exc:
            last_error = str(exc).strip().splitlines()[-1].strip()
    if rejected is not None:
        raise _rejected(plain, *rejected)
    raise UserInputError(
        f"--format hf: the subnet is not a {type(plain).__name__} of any config ({last_error}); "
        "export it with --format pt2 or onnx"
    )


def _per_layer(plain: nn.Module, source: str) -> nn.Module:
    """``plain``, whose decoder layers differ in width, as the class its generated modeling file defines."""
    config_class, model_class = heterogeneous_classes(source)
    base = plain.config
    fields = {
        "hidden_size": plain.get_input_embeddings().weight.shape[-1],
        "num_hidden_layers": len(plain.model.layers),
        "head_dim": getattr(base, "head_dim", None) or base.hidden_size // base.num_attention_heads,
    }
    sizes = layer_sizes(plain)
    try:  # a strict config validates its fields as it is built
        config = heterogeneous_config(config_class, base, fields, sizes)
    except Exception as exc:  # noqa: BLE001 - the library's validators raise their own error types
        raise _rejected(plain, _reason(exc), {**fields, "layer_sizes": sizes}) from exc
    try:
        return _holding_weights(model_class, config, plain)
    except RuntimeError as exc:
        raise UserInputError(
            f"--format hf: the subnet's layers differ in width and its modeling file does not describe"
            f" {type(plain).__name__} ({str(exc).strip().splitlines()[-1].strip()}); export it with --format pt2"
            " or onnx"
        ) from exc


def _holding_weights(model_class: type, config: Any, plain: nn.Module) -> nn.Module:
    """``model_class(config)`` built on the meta device, holding ``plain``'s tensors; RuntimeError where a key,
    shape or buffer is left over."""
    config.dtype = weights_dtype(plain)  # config.json says the dtype the weights are stored in
    with torch.device("meta"):
        rebuilt = model_class(config)
    rebuilt.load_state_dict(plain.state_dict(), strict=True, assign=True)
    _take_buffers(rebuilt, dict(plain.named_buffers()))
    if getattr(config, "tie_word_embeddings", False):
        rebuilt.tie_weights()
    return rebuilt.eval()


def _rejected(plain: nn.Module, reason: str, sizes: dict[str, Any]) -> UserInputError:
    hint = " (for the hidden width: rules hidden_size: {'*': {hidden_divisor: N}}, N a multiple of every head count)"
    return UserInputError(
        f"--format hf: {type(plain.config).__name__} rejects the subnet's sizes"
        f" ({', '.join(f'{k}={v}' for k, v in sizes.items())}): {reason} Search with sizes it accepts"
        f"{hint if 'hidden' in reason.lower() else ''}, or export with --format pt2 or onnx"
    )


def _take_buffers(rebuilt: nn.Module, buffers: dict[str, torch.Tensor]) -> None:
    """Give ``rebuilt`` the buffers the state dict left on the meta device, from the plain subnet's
    of the same name and shape; a buffer it lacks means the config does not describe the subnet."""
    for name, buffer in list(rebuilt.named_buffers()):
        if not buffer.is_meta:
            continue
        found = buffers.get(name)
        if found is None or found.shape != buffer.shape:
            raise RuntimeError(f"buffer {name} {list(buffer.shape)} has no counterpart in the subnet")
        owner, _, leaf = name.rpartition(".")
        rebuilt.get_submodule(owner).register_buffer(leaf, found, persistent=False)


def save_pretrained_subnet(
    model: nn.Module, example: tuple[torch.Tensor, ...], directory: Path, tokenizer: Path | None = None
) -> Path:
    """Write the active subnet to ``directory`` (replaced whole) and check what it loads computes the same.

    A converted ``model`` is exported in place (it is the plain subnet afterwards), and the
    directory holds the weights in their own dtype. The check reads the directory back while the
    subnet is still in memory: at most the subnet twice, never the full model beside it.

    ``tokenizer`` (the run's pinned tokenizer, ``nascli.text_data.pinned_tokenizer``) is written
    beside it, so ``AutoTokenizer.from_pretrained`` loads the tokenizer the model was trained with.
    """
    plain, active = _subnet(model)
    rebuilt, source = _rebuilt(plain, active)
    with torch.no_grad():
        expected = logits_of(plain(*example))
        _check(logits_of(rebuilt(*example)), expected, "the rebuilt model")

    def write(folder: Path) -> None:
        import transformers

        transformers.utils.logging.disable_progress_bar()
        rebuilt.save_pretrained(folder)
        if source is not None:
            (folder / MODULE_FILE).write_text(source)
        if tokenizer is not None:
            save_pinned_tokenizer(tokenizer, folder)

    def check(folder: Path) -> None:
        if source is None:
            loaded = type(rebuilt).from_pretrained(folder, local_files_only=True).eval()
        else:  # as a user loads it: the Auto class, reading the modeling file written beside the weights
            import transformers

            loaded = transformers.AutoModelForCausalLM.from_pretrained(
                folder, local_files_only=True, trust_remote_code=True
            ).eval()
        with torch.no_grad():
            _check(logits_of(loaded(*example)), expected, "the saved directory")

    # written and read back as a temp folder that then takes the place of an earlier export whole:
    # a full disk (safetensors reports it in its own error type) is one line naming ``directory``
    return atomic_directory(directory, write, check)


def _check(got: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    """``got`` must equal ``expected`` within the tolerance of their dtype (nascli/numerics.py)."""
    if not outputs_match(got, expected):
        raise NasCliError(
            f"--format hf: {what} differs from the subnet by {max_difference(got, expected):.2e}"
            f" (tolerance {tolerance(expected.dtype):.0e} in {str(expected.dtype).removeprefix('torch.')})"
        )
