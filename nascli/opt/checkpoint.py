"""The checkpoint file every stage writes: atomic on disk, plain data, rebuilt by replay.

A checkpoint holds no pickled objects, only tensors and plain containers, so it loads with
``torch.load(weights_only=True)``. The search space is not stored as objects: restoring re-runs
the recorded conversion on a freshly built model, checks that the result matches what was
saved, selects the stored subnet and loads the weights.

A stage that leaves the weights as the model was built with them, up to sorted channels
(convert, and a pruning search), stores no weights at all: the checkpoint records a
fingerprint of the built weights and the channel orders, and restoring builds the model again,
checks the fingerprint and replays the orders. A 2 GB model's convert.pt is then a few
hundred kilobytes (docs/architecture.md, Checkpoints and trust).
"""

from __future__ import annotations

import hashlib
import os
import re
import warnings
import zipfile
from pathlib import Path
from typing import IO, Any

import torch
from torch import nn
from torch.serialization import DEFAULT_PROTOCOL

import nascli
from nascli.atomic import atomic_write
from nascli.cost.record import space_record
from nascli.errors import ApplyModeError, CheckpointError, UserInputAssertionError, UserInputError
from nascli.opt.trust import code_references, describe, is_signed_here, sign
from nascli.space.convert import convert_model
from nascli.space.export import export_in_place
from nascli.space.importance import apply_channel_orders, set_block_ranks
from nascli.space.space import (
    SearchSpace,
    check_not_pending,
    example_inputs,
    get_space,
    is_converted,
    is_pending,
    model_attributes,
    on_meta_device,
    parameter_device,
)

FORMAT = "nascli/1"
#: attribute of an exported model holding the conversion that rebuilds it (plain data, no weights)
EXPORTED_FROM = "_nascli_exported_from"
#: attribute of a model holding the fingerprint of the weights it was built with, while it still holds them
SOURCE_WEIGHTS = "_nascli_source_weights"
STAGES = ("convert", "train", "search", "finetune")
_REQUIRED = ("format", "stage", "nascli_version", "model", "modes", "space", "subnet", "state_dict", "checksum")


def build_checkpoint(
    model: nn.Module,
    stage: str = "convert",
    recipe: dict[str, Any] | None = None,
    factory: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    trainer: dict[str, Any] | None = None,
    reference_weights: bool = False,
) -> dict[str, Any]:
    """The checkpoint dict of a converted (or plain) model: plain data and tensors only, the
    conversion recorded to be replayed on restore (docs/architecture.md, Checkpoints and trust).

    With ``reference_weights``, a model whose weights are still those it was built with (see
    ``mark_source_weights``), channels sorted aside, stores their fingerprint and the channel
    orders instead of the weights.

    A model that ``nascli.nas.export`` made records the conversion it came from, so its
    checkpoint restores from the original model as an exported one does in ModelOpt.
    """
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}")
    check_not_pending(model)  # converted without an input: nothing to record yet
    record = getattr(model, EXPORTED_FROM, None)
    if record is not None and not is_converted(model):
        return {
            **record,
            "stage": stage,
            "recipe": recipe,
            "model": factory,
            "metrics": metrics or {},
            "trainer": trainer,
            "signature": sign(code_references(recipe, factory)),
            "state_dict": model.state_dict(),
            "exported": True,
        }
    converted = is_converted(model)
    space = get_space(model) if converted else None
    fingerprint = getattr(model, SOURCE_WEIGHTS, None) if reference_weights and converted else None
    weights = None
    if on_meta_device(model):  # converted from a config alone: there are no weights to store
        weights = {"fingerprint": None, "orders": [], "meta": True}
    elif fingerprint is not None:
        orders = [{n: torch.tensor(p, dtype=torch.int32) for n, p in sort.items()} for sort in space.channel_orders]
        weights = {"fingerprint": fingerprint, "orders": orders}
    return {
        "format": FORMAT,
        "stage": stage,
        "nascli_version": nascli.__version__,
        "recipe": recipe,
        "model": factory,
        **(mode_record(space) if space else _never_converted()),
        "history": list(space.history) if space else [],
        "costs": space_record(space) if space else None,  # what a profile prices, without the model
        "state_dict": model.state_dict() if weights is None else {},
        "weights": weights,
        "trainer": trainer,
        "metrics": metrics or {},
        "signature": sign(code_references(recipe, factory)),
    }


#: the fields of a checkpoint that record one conversion and its subnet (``mode_record``)
MODE_FIELDS = (
    "modes",
    "input_shapes",
    "input_dtypes",
    "input_values",
    "space",
    "subnet",
    "sorted_by",
    "block_ranks",
    "model_attributes",
)


def _never_converted() -> dict[str, Any]:
    """The ``MODE_FIELDS`` of a model that was never converted: no modes, nothing to replay."""
    return {
        "modes": [],
        "input_shapes": [],
        "input_dtypes": [],
        "input_values": None,
        "space": {},
        "subnet": None,
        "sorted_by": None,
        "block_ranks": {},
    }


def mode_record(space: SearchSpace) -> dict[str, Any]:
    """A conversion and its active subnet as plain data, what a restore replays (``MODE_FIELDS``)."""
    return {
        "modes": [[name, rules] for name, rules in space.modes],
        "input_shapes": [list(s) for s in space.input_shapes],
        "input_dtypes": list(space.input_dtypes),
        "input_values": space.input_values,
        "space": {n: {"choices": list(h.choices), "active": h.active} for n, h in space.hparams.items()},
        "subnet": None if space.sample_in_train else space.config(),
        "sorted_by": space.sorted_by,  # the weights hold the channels in that order
        "block_ranks": dict(space.block_ranks),
        "model_attributes": dict(space.model_attributes),
    }


def holds_state(module: nn.Module) -> bool:
    """Whether ``module`` holds a conversion state: a search space, or the record of the one it was exported from."""
    return is_converted(module) or is_pending(module) or getattr(module, EXPORTED_FROM, None) is not None


def state_holder(model: nn.Module) -> str | None:
    """The name of the module of ``model`` that holds a conversion state (``""``: ``model`` itself),
    None if none does; several holding one is an AssertionError, as ModelOpt asserts."""
    holders = [name for name, module in model.named_modules() if holds_state(module)]
    if len(holders) > 1:
        raise UserInputAssertionError(f"{type(model).__name__}: modules {holders[:3]} each hold a state; pass one")
    return holders[0] if holders else None


def state_at_root(model: nn.Module) -> bool:
    """Whether ``model`` itself holds a conversion state. One held by a module inside it is an
    AssertionError naming that module, as in ModelOpt: the state, and what applies modes or
    saves it, belong to the module that was converted."""
    holder = state_holder(model)
    if holder:
        raise UserInputAssertionError(
            f"{type(model).__name__}: {holder!r} holds the conversion state, not this model; pass that module"
            f" (model.get_submodule({holder!r}))"
        )
    return holder is not None


def conversion_chain(model: nn.Module) -> tuple[list[dict[str, Any]], dict[str, Any] | None, bool]:
    """The conversions ``model`` went through: ``(earlier, last, exported)``.

    ``earlier`` are the records (``MODE_FIELDS``) of the conversions exported before the last
    one, oldest first (a chain of modes such as autonas, export_nas, fastnas); ``last`` is the
    record of the search space the model holds, or of the one it was exported from
    (``exported``); ``([], None, False)`` for a model never converted.
    """
    check_not_pending(model)
    if is_converted(model):
        space = get_space(model)
        return list(space.history), mode_record(space), False
    record = getattr(model, EXPORTED_FROM, None)
    if record is None:
        return [], None, False
    return list(record.get("history") or []), {key: record.get(key) for key in MODE_FIELDS}, True


def convert_recorded(
    model: nn.Module,
    mode_name: str,
    rules: dict[str, Any],
    inputs: tuple,
    recorded_choices: dict[str, list[int]] | None = None,
) -> nn.Module:
    """``convert_model``, keeping the record of the conversions an exported ``model`` came from.

    A model exported in place may be converted again (ModelOpt chains modes so); its new search
    space carries the earlier conversions, so a checkpoint of it replays the whole chain.
    """
    earlier, last, _ = conversion_chain(model)
    convert_model(model, mode_name, rules, inputs, recorded_choices)
    get_space(model).history = earlier + ([last] if last is not None else [])
    if hasattr(model, EXPORTED_FROM):
        delattr(model, EXPORTED_FROM)
    return model


def export_recorded(model: nn.Module) -> nn.Module:
    """Export the converted ``model`` in place, keeping the record of its conversion and subnet.

    The plain model then saves, restores from the original model and converts again, as a model
    ModelOpt exported does.
    """
    record = _conversion_record(model)
    model = export_in_place(model)  # the converted model is not kept: never hold it and the export
    setattr(model, EXPORTED_FROM, record)
    return model


def weights_fingerprint(model: nn.Module) -> str:
    """SHA-256 of a model's state dict (names, dtypes, shapes and bytes)."""
    digest = hashlib.sha256()
    _feed(digest, model.state_dict())
    return digest.hexdigest()


def mark_source_weights(model: nn.Module) -> str:
    """Record on ``model`` (not yet converted) the fingerprint of the weights it was built with.

    Checkpoints of stages that leave these weights as they are (``reference_weights``) then
    store the fingerprint instead of the weights; anything that trains the model must not
    write such a checkpoint of it.
    """
    fingerprint = weights_fingerprint(model)
    setattr(model, SOURCE_WEIGHTS, fingerprint)
    return fingerprint


def _conversion_record(converted: nn.Module) -> dict[str, Any]:
    """The checkpoint fields that rebuild ``converted``'s conversion and subnet, without weights."""
    record = build_checkpoint(converted)
    for field in ("state_dict", "weights"):
        record.pop(field)
    return record


def remember_conversion(exported: nn.Module, converted: nn.Module) -> nn.Module:
    """Give an exported model the record of the conversion and subnet it was exported from."""
    setattr(exported, EXPORTED_FROM, _conversion_record(converted))
    return exported


def write_checkpoint(
    checkpoint: dict[str, Any], path: str | os.PathLike | IO[bytes], **save_kwargs: Any
) -> Path | IO[bytes]:
    """Write atomically (see nascli.atomic), with a checksum of everything else in the file.

    The checkpoint is streamed into the file (never serialized whole in memory: its weights may
    be most of the machine's memory). A write the storage refuses inside torch's zip writer
    (a full disk, a file-size limit) is one line naming ``path`` (``nascli.atomic``). A file
    object (``io.BytesIO``) is written as it is, at its current position. ``save_kwargs`` go to
    ``torch.save``, as ModelOpt's ``save`` passes them, but for a pickler the weights-only loader cannot read.
    """
    if save_kwargs.get("pickle_protocol", DEFAULT_PROTOCOL) != DEFAULT_PROTOCOL or "pickle_module" in save_kwargs:
        raise UserInputError(
            f"save: pickle_module and pickle_protocol are not taken (torch's weights-only loader reads protocol"
            f" {DEFAULT_PROTOCOL} of the pickle module)"
        )
    contents = {**checkpoint, "checksum": checksum(checkpoint)}
    if hasattr(path, "write"):
        torch.save(contents, path, **save_kwargs)
        return path
    return atomic_write(path, lambda f: torch.save(contents, f, **save_kwargs))


def checksum(checkpoint: dict[str, Any]) -> str:
    """SHA-256 over every field but ``checksum``, tensors by dtype, shape and bytes.

    torch's zip reader does not check the archive's CRCs, so without this a flipped bit in
    tensor data would load as a silently different weight.
    """
    digest = hashlib.sha256()
    _feed(digest, {k: v for k, v in checkpoint.items() if k != "checksum"})
    return digest.hexdigest()


def _feed(digest: Any, value: Any) -> None:
    """Hash ``value`` unambiguously: every item is tagged with its kind and length."""
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous().reshape(-1)
        raw = tensor.view(torch.uint8).numpy() if tensor.numel() else b""  # hashed where it lies, not copied
        header = f"T{str(value.dtype)}{tuple(value.shape)}{len(raw)}:"
        digest.update(header.encode())
        digest.update(raw)
    elif isinstance(value, dict):
        digest.update(f"D{len(value)}:".encode())
        for key in sorted(value, key=repr):
            _feed(digest, key)
            _feed(digest, value[key])
    elif isinstance(value, (list, tuple)):  # torch.load may give back a tuple saved as a list or the reverse
        digest.update(f"L{len(value)}:".encode())
        for item in value:
            _feed(digest, item)
    else:
        text = f"{type(value).__name__}={value!r}"
        digest.update(f"S{len(text)}:{text}".encode())


def read_checkpoint(path: str | os.PathLike | IO[bytes], **load_kwargs: Any) -> dict[str, Any]:
    """Load and check the envelope and checksum of a checkpoint; any problem is one line naming the file.

    ``path`` may be a file object open for reading (ModelOpt's scripts save to ``io.BytesIO``).
    ``load_kwargs`` go to ``torch.load`` (``load_kwargs`` says which are taken).
    """
    load_kwargs = checked_load_kwargs("restore", load_kwargs)
    if hasattr(path, "read"):
        source: Any = path
        path = Path(getattr(path, "name", None) or "checkpoint file object")
    else:
        source = path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        checkpoint = load_plain_data(source, **{"mmap": not hasattr(source, "read"), **load_kwargs})
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint ({load_failure(exc)})") from exc
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        found = checkpoint.get("format") if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise CheckpointError(f"{path}: not a nascli checkpoint (format {found!r}, expected {FORMAT!r})")
    missing = [key for key in _REQUIRED if key not in checkpoint]
    if missing == ["checksum"]:
        raise CheckpointError(f"{path}: written by a nascli without checksums; run the stage that made it again")
    if missing:
        raise CheckpointError(f"{path}: damaged checkpoint, missing {', '.join(missing)}")
    if checkpoint["checksum"] != checksum(checkpoint):
        raise CheckpointError(f"{path}: damaged checkpoint (its checksum does not match its contents)")
    if checkpoint["stage"] not in STAGES:
        raise CheckpointError(f"{path}: damaged checkpoint, unknown stage {checkpoint['stage']!r}")
    return checkpoint


def recorded_model(checkpoint: dict[str, Any]) -> dict[str, Any] | None:
    """The model spec a checkpoint records: its recipe's, else the bare spec (one source, one signature)."""
    return (checkpoint.get("recipe") or {}).get("model") or checkpoint.get("model")


def untrusted_code(checkpoint: dict[str, Any], named: frozenset[str] = frozenset()) -> str:
    """The code a checkpoint names that this user neither signed nor named again ("" when none).

    ``named`` holds the dotted recipe keys the user gave on this command line: naming
    ``model.factory`` (or all of ``model``) vouches for the factory and its recorded kwargs.
    """
    references = code_references(checkpoint.get("recipe"), recorded_model(checkpoint))
    if is_signed_here(references, checkpoint.get("signature")):
        return ""
    if named & {"model", "model.factory"}:
        references["model.factory"], references["model.kwargs"] = None, {}
    if named & {"search", "search.score_func"}:
        references["search.score_func"] = None
    return describe(references)


#: what torch's weights-only unpickler says it refused, in the wordings of torch 2.4 to 2.14
_REFUSED = (
    re.compile(r"GLOBAL (\S+?)(?: was not an allowed global| whose module|[.,]?\s*$)", re.M),
    re.compile(r"reduce for unrecognized function (.+?)(?: which belongs to|\s*$)", re.M),
    re.compile(r"new object for nn.Parameter or classes allowlisted .*? but got (.+?)\s*$", re.M),
)


def checked_load_kwargs(where: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The ``torch.load`` arguments ModelOpt's ``restore`` and ``load_modelopt_state`` pass on,
    checked: nascli always loads with ``weights_only=True``, so ``weights_only=False`` and a
    ``pickle_module`` (which torch refuses with it) are refused in one line."""
    kwargs = dict(kwargs)
    if kwargs.pop("weights_only", True) is not True:
        raise UserInputError(
            f"{where}: weights_only must be True (nascli checkpoints hold only tensors and plain data)"
        )
    if "pickle_module" in kwargs:
        raise UserInputError(f"{where}: pickle_module is not taken (nascli loads with torch's weights-only unpickler)")
    return kwargs


def load_plain_data(
    path: str | os.PathLike | IO[bytes], mmap: bool = False, map_location: Any = "cpu", **load_kwargs: Any
) -> Any:
    """``torch.load(weights_only=True)`` without torch's warnings on stderr.

    On a file that is not a checkpoint (a plain pickle) torch warns about its protocol before
    failing; the failure is reported as one line by the caller, so the warnings would only add
    lines to it. With ``mmap`` (a checkpoint file, always torch's zip format) tensors are read
    from the file as they are used rather than copied into memory first.
    """
    mmap = mmap and zipfile.is_zipfile(path)  # anything else fails as it would unmapped, with its own cause
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap, **load_kwargs)


def load_failure(exc: Exception) -> str:
    """A short cause for a failed ``torch.load``: the refused type, never torch's advice to disable weights_only."""
    text = str(exc)
    if isinstance(exc, EOFError) or not text.strip():
        return "the file is empty or truncated"
    if "central directory" in text or "zip archive" in text:
        return "the file is truncated or damaged"
    for pattern in _REFUSED:
        if match := pattern.search(text):
            return f"it holds a pickled object of type {match.group(1)}; checkpoints hold only tensors and plain data"
    match = re.search(r"WeightsUnpickler error:\s*(.+)", text)
    if match:
        return f"the file is damaged or not written by torch.save: {match.group(1).strip()}"
    if "weights_only" in text or "Weights only load failed" in text:
        return "it holds something other than tensors and plain data; checkpoints hold only those"
    return text.strip().splitlines()[0]


def _listing(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _input_dtypes(checkpoint: dict[str, Any], path: str | os.PathLike) -> list[str]:
    """The recorded input dtypes (float32 for a checkpoint that records none), each a known torch dtype."""
    dtypes = checkpoint.get("input_dtypes") or ["float32"] * len(checkpoint["input_shapes"])
    for name in dtypes:
        if not isinstance(name, str) or not isinstance(getattr(torch, name, None), torch.dtype):
            raise CheckpointError(f"{path}: unknown input dtype {name!r}")
    return dtypes


def apply_checkpoint(
    model: nn.Module, checkpoint: dict[str, Any], path: str | os.PathLike, weights: bool = True
) -> nn.Module:
    """Replay the recorded conversion on ``model``, check it matches, select the subnet, load weights.

    A checkpoint of an exported subnet (``exported: True``) is rebuilt the same way and then
    exported, so the plain, smaller model comes back. Without ``weights`` (for what reads only
    the search space: a profile) the weights are left as the model was built with them.
    """
    reference = checkpoint.get("weights")
    if reference is not None and reference.get("meta") and weights:
        raise CheckpointError(
            f"{path}: converted from a model's config alone (no weights, on the meta device): nascli profile"
            " reads it; for the other stages put the weights beside the config and convert again"
        )
    if reference is not None and weights:
        _check_source_weights(model, reference["fingerprint"], path)
    model = replay_conversion(model, checkpoint, path, orders=weights)
    if reference is not None or not weights:
        return model
    _check_parameters(model, checkpoint["state_dict"], path)
    state = checkpoint["state_dict"]
    own = model.state_dict()
    # the checkpoint's (memory-mapped) tensors become the model's where they fit as they are: a
    # model restored to be exported or evaluated never holds its weights twice; a skeleton
    # model restored on the meta device (nascli.stages.load) takes them whatever they are
    fits = all(own[k].dtype == v.dtype and own[k].device == v.device for k, v in state.items())
    model.load_state_dict(state, assign=fits or on_meta_device(model))
    return model


def _check_source_weights(model: nn.Module, fingerprint: str, path: str | os.PathLike) -> None:
    """The freshly built ``model`` must hold the weights a checkpoint without weights was made from."""
    if is_converted(model):
        raise CheckpointError(f"{path}: restore needs the original model, not an already converted one")
    if mark_source_weights(model) != fingerprint:
        raise CheckpointError(
            f"{path}: stores no weights, and the model built from its recipe no longer has the weights it was"
            " converted from (model.kwargs or model.checkpoint changed since); convert the model again"
        )


def replay_conversion(
    model: nn.Module, checkpoint: dict[str, Any], path: str | os.PathLike, orders: bool = True
) -> nn.Module:
    """Convert ``model`` as recorded, check the space matches, select the subnet; export if recorded.

    A chain of modes is replayed in order: each conversion of ``history`` (exported before the
    last one), then the last. Weights are left as they are (``restore_from_modelopt_state``
    loads none), but for the recorded channel orders of a checkpoint storing no weights,
    replayed with ``orders``.
    """
    if not checkpoint["modes"]:
        return model
    if holds_state(model):
        raise CheckpointError(f"{path}: restore needs the original model, not an already converted one")
    for earlier in checkpoint.get("history") or []:
        model = _replay_mode(model, {**earlier, "exported": True}, path, orders=False)
    return _replay_mode(model, checkpoint, path, orders)


def _replay_mode(model: nn.Module, record: dict[str, Any], path: str | os.PathLike, orders: bool) -> nn.Module:
    """Replay one recorded conversion (``MODE_FIELDS``) on ``model``, and its export if recorded."""
    (mode_name, rules), *rest = record["modes"]
    if rest:
        raise CheckpointError(
            f"{path}: records {len(record['modes'])} modes in one conversion; this version replays one"
        )
    _check_model_attributes(model, record.get("model_attributes"), path)
    device = parameter_device(model)  # the meta device for a profile's skeleton
    values = record.get("input_values")  # a conversion that followed the dummy input's values replays them
    if values:
        inputs = tuple(value.to(device) for value in values)
    else:
        inputs = example_inputs(record["input_shapes"], _input_dtypes(record, path), device=device)
    recorded = {name: list(spec["choices"]) for name, spec in record["space"].items()}
    convert_recorded(model, mode_name, rules, inputs, recorded)
    _check_space(model, record, path)
    space = get_space(model)
    if orders and (record.get("weights") or {}).get("orders"):
        _replay_orders(model, record["weights"]["orders"], path)
    space.select({name: spec["active"] for name, spec in record["space"].items()})
    space.sample_in_train = record.get("subnet") is None
    space.sorted_by = record.get("sorted_by")
    for depth, ranks in (record.get("block_ranks") or {}).items():
        _check_ranks(space, depth, ranks, path)
        set_block_ranks(model, depth, ranks)
    return export_recorded(model) if record.get("exported") else model


def _check_model_attributes(model: nn.Module, recorded: dict[str, Any] | None, path: str | os.PathLike) -> None:
    """``model`` must be of the class, and have the ``forward``, that the recorded conversion traced.

    Checkpoints written before nascli recorded these have none, and are replayed unchecked.
    """
    found = model_attributes(model)
    differ = [
        f"{key} {value!r}, now {found.get(key)!r}" for key, value in (recorded or {}).items() if found.get(key) != value
    ]
    if differ:
        raise ApplyModeError(
            f"{path}: the model is not the one the checkpoint was converted from ({'; '.join(differ)});"
            " restore into the model as it was converted"
        )


def _replay_orders(model: nn.Module, orders: list[dict[str, Any]], path: str | os.PathLike) -> None:
    try:
        apply_channel_orders(model, [{name: perm.tolist() for name, perm in sort.items()} for sort in orders])
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from exc


def _check_ranks(space: Any, depth: str, ranks: Any, path: str | os.PathLike) -> None:
    """Block ranks must be a permutation of a searchable stack's blocks that keeps the unskippable ones first."""
    hp = space.hparams.get(depth)
    blocks = max(hp.choices) if hp is not None else 0
    fixed = all(ranks[i] == i for i in range(hp.min)) if hp is not None and isinstance(ranks, list) else False
    if not isinstance(ranks, list) or sorted(ranks) != list(range(blocks)) or not fixed:
        raise CheckpointError(f"{path}: block ranks of {depth} do not fit the model's stack")


def exported_checkpoint(converted: nn.Module, exported: nn.Module, **fields: Any) -> dict[str, Any]:
    """The checkpoint of a plain subnet: the conversion and subnet that rebuild it, its own weights."""
    checkpoint = build_checkpoint(converted, **fields)
    checkpoint["state_dict"] = exported.state_dict()
    checkpoint["exported"] = True
    return checkpoint


def _check_space(model: nn.Module, checkpoint: dict[str, Any], path: str | os.PathLike) -> None:
    built = {n: list(h.choices) for n, h in get_space(model).hparams.items()}
    stored = {n: list(spec["choices"]) for n, spec in checkpoint["space"].items()}
    if built == stored:
        return
    problems = []
    if missing := [n for n in stored if n not in built]:
        problems.append(f"hparams missing from the model: {_listing(missing)}")
    if extra := [n for n in built if n not in stored]:
        problems.append(f"hparams not in the checkpoint: {_listing(extra)}")
    if differ := [f"{n} {built[n]} vs {stored[n]}" for n in built if n in stored and built[n] != stored[n]]:
        problems.append(f"choices differ: {_listing(differ)}")
    raise CheckpointError(f"{path}: the search space does not match the model ({'; '.join(problems)})")


def _check_parameters(model: nn.Module, state_dict: dict[str, Any], path: str | os.PathLike) -> None:
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    stored = {k: tuple(v.shape) for k, v in state_dict.items() if isinstance(v, torch.Tensor)}
    if own == stored:
        return
    problems = []
    if missing := [k for k in own if k not in stored]:
        problems.append(f"missing from the checkpoint: {_listing(missing)}")
    if extra := [k for k in stored if k not in own]:
        problems.append(f"not in the model: {_listing(extra)}")
    if differ := [f"{k} {list(stored[k])} vs model {list(own[k])}" for k in own if k in stored and own[k] != stored[k]]:
        problems.append(f"shapes differ: {_listing(differ)}")
    raise CheckpointError(f"{path}: the checkpoint does not match the model ({'; '.join(problems)})")
