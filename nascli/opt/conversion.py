"""A model's conversion state without its weights, as ModelOpt's ``modelopt_state`` carries it.

ModelOpt scripts save ``mto.modelopt_state(model)`` next to ``model.state_dict()`` and later
rebuild with ``mto.restore_from_modelopt_state(model, state)`` plus ``load_state_dict``. The
state has ModelOpt's layout: ``modelopt_state_dict`` lists the modes applied, in order, each as
``(name, {"config": ..., "metadata": ...})``, next to ``modelopt_version``. A search-space mode's
config is its rules and its metadata what nascli's checkpoint records of the conversion (the
search space, the subnet, the input shapes); an ``export_nas`` entry follows a conversion that
was exported. ``ModeloptStateManager`` reads that list off a model; a state read back is
checked as ModelOpt checks each mode before applying it (``nascli.nas.config.check_next_mode``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import torch
from torch import nn

import nascli
from nascli.errors import CheckpointError, UserInputAssertionError, UserInputTypeError
from nascli.nas.config import EXPORT_MODES, MODES, check_next_mode, current_mode
from nascli.opt.checkpoint import (
    MODE_FIELDS,
    checked_load_kwargs,
    conversion_chain,
    holds_state,
    load_failure,
    replay_conversion,
    state_at_root,
    state_holder,
)
from nascli.recipe.factory import build_model

REQUIRED_KEY = "modelopt_state_dict"
#: the modes of each of ModelOpt's mode types that nascli has; its other types hold none of them
MODE_TYPES = {"nas": frozenset({*MODES, *EXPORT_MODES}), "prune": frozenset({"fastnas"})}
_OTHER_MODE_TYPES = frozenset({"quantization", "sparsity", "distill", "speculative", "PEFT", "sparse_attention"})
#: metadata a search-space mode's entry must have to be replayed (ModelOpt's own states lack them)
_REPLAYED = ("input_shapes", "space")


def modelopt_state(model: nn.Module) -> dict[str, Any]:
    """The conversion state of ``model`` (its modes, search spaces and active subnet), no weights.

    Plain data only, so ``torch.save`` of it loads with ``weights_only=True``. A model holding a
    converted module has no state of its own: pass that module (an AssertionError says which,
    as in ModelOpt). A model never converted has the empty list of modes.
    """
    entries = _state_entries(model) if ModeloptStateManager.is_converted(model, is_root=True) else []
    return {REQUIRED_KEY: entries, "modelopt_version": nascli.__version__}


def restore_from_modelopt_state(
    model: nn.Module | Callable[[], nn.Module] | str | tuple,
    modelopt_state: dict[str, Any] | None = None,
    modelopt_state_path: str | os.PathLike | IO[bytes] | None = None,
) -> nn.Module:
    """Convert the original ``model`` (or build it from a factory or ``(cls, args, kwargs)``) as
    ``modelopt_state`` (or the file ``modelopt_state_path``) records, and select its subnets.

    The model is changed in place, exported too if the state records an export; the weights are
    not touched: load them afterwards with ``model.load_state_dict``.
    """
    if (modelopt_state is None) == (modelopt_state_path is None):
        raise UserInputAssertionError("restore_from_modelopt_state: give modelopt_state or modelopt_state_path, one")
    if modelopt_state_path is not None:
        modelopt_state = load_modelopt_state(modelopt_state_path)
    where = "modelopt_state"
    earlier, last, exported = _chain(_checked(modelopt_state, where)[REQUIRED_KEY], where)
    model = build_model(model)
    if last is None:
        return model
    return replay_conversion(model, {**last, "history": earlier, "exported": exported}, where)


def load_modelopt_state(modelopt_state_path: str | os.PathLike | IO[bytes], **kwargs: Any) -> dict[str, Any]:
    """Read a state that ``torch.save(mto.modelopt_state(model), path)`` wrote (weights_only).

    ``kwargs`` go to ``torch.load`` as in ModelOpt (``map_location``, default "cpu");
    ``weights_only=False`` is refused.
    """
    path = modelopt_state_path
    kwargs = {"map_location": "cpu", **checked_load_kwargs("load_modelopt_state", kwargs)}
    where = str(getattr(path, "name", path))
    if not hasattr(path, "read") and not Path(path).is_file():
        raise CheckpointError(f"{where}: no such file")
    try:
        state = torch.load(path, weights_only=True, **kwargs)
    except Exception as exc:
        raise CheckpointError(f"{where}: not a readable state file ({load_failure(exc)})") from exc
    return _checked(state, where)


def _checked(state: Any, where: str) -> dict[str, Any]:
    if not isinstance(state, dict):
        raise UserInputTypeError(f"{where}: expected a dict from mto.modelopt_state, got {type(state).__name__}")
    if REQUIRED_KEY not in state:
        if "state_dict" in state or "model_state_dict" in state:
            raise CheckpointError(f"{where}: is a full checkpoint (weights included); restore it with mto.restore")
        raise CheckpointError(f"{where}: missing required key {REQUIRED_KEY!r}; write it with mto.modelopt_state")
    if not isinstance(state[REQUIRED_KEY], list):
        raise CheckpointError(f"{where}: {REQUIRED_KEY!r} must be the list of modes applied")
    return state


def _state_entries(model: nn.Module) -> list[tuple[str, dict[str, Any]]]:
    """ModelOpt's list of modes applied to ``model``: each conversion, then ``export_nas`` if it was exported."""
    earlier, last, exported = conversion_chain(model)
    entries = []
    for record, was_exported in [*((r, True) for r in earlier), *([(last, exported)] if last else [])]:
        (name, rules), *_ = record["modes"]
        metadata = {key: record[key] for key in MODE_FIELDS if key != "modes" and key in record}
        entries.append((name, {"config": rules, "metadata": metadata}))
        if was_exported:
            entries.append(("export_nas", {"config": {}, "metadata": {}}))
    return entries


def _chain(entries: list[Any], where: str) -> tuple[list[dict[str, Any]], dict[str, Any] | None, bool]:
    """Read ModelOpt's list of modes back into ``conversion_chain``'s form, checking it as ModelOpt
    would have checked each mode as it was applied."""
    records: list[dict[str, Any]] = []
    pending = None  # the search-space mode not exported yet: the one the next mode must follow
    for entry in entries:
        if not (isinstance(entry, (list, tuple)) and len(entry) == 2 and isinstance(entry[1], dict)):
            raise CheckpointError(f"{where}: each mode must be (name, {{'config':, 'metadata':}}), got {entry!r}")
        name, state = entry
        if name not in MODES and name not in EXPORT_MODES:
            raise CheckpointError(f"{where}: mode {name!r} is not one of nascli's ({', '.join(MODES)}, export_nas)")
        check_next_mode(pending, name, where)
        if name in EXPORT_MODES:
            pending = None
            continue
        metadata = state.get("metadata")
        if not isinstance(metadata, dict) or not isinstance(state.get("config"), dict):
            raise CheckpointError(f"{where}: mode {name!r} must have a config and a metadata dict")
        if missing := [key for key in _REPLAYED if key not in metadata]:
            raise CheckpointError(
                f"{where}: mode {name!r} records no {', '.join(missing)}: not a state nascli wrote (nascli does not"
                " read ModelOpt's); convert the original model again"
            )
        records.append({**metadata, "modes": [[name, state["config"]]]})
        pending = name
    if not records:
        return [], None, False
    return records[:-1], records[-1], pending is None


class ModeloptStateManager:
    """ModelOpt's view of a model's conversion state: the modes applied to it, in order, each with
    its config and metadata (``state_dict()``, as ``modelopt_state`` lists them).

    nascli keeps the state in the converted model's search space, or on a model exported in place
    the record of the conversion it came from; the manager reads it from there each time it is
    asked, so it always describes the model as it is now. It reads the state, it does not write
    one: modes are applied with ``mto.apply_mode`` (or ``mtn.convert`` and ``mtn.export``) and a
    state is loaded with ``mto.restore_from_modelopt_state``.
    """

    def __init__(self, model: nn.Module | None = None, init_state: bool = False) -> None:
        """``model`` must hold a state at its root; with ``init_state`` it must hold none yet (the
        manager then starts empty). Without a model, the manager has the empty state."""
        if model is not None and init_state and self.is_converted(model):
            raise UserInputAssertionError(f"ModeloptStateManager: {type(model).__name__} already holds a state")
        if model is not None and not init_state and not self.is_converted(model, is_root=True):
            raise UserInputAssertionError(
                f"ModeloptStateManager: {type(model).__name__} holds no state (it was not converted); convert it first"
            )
        self._model = model

    @classmethod
    def is_converted(cls, model: nn.Module, is_root: bool = False) -> bool:
        """Whether ``model`` or a module in it holds a state; with ``is_root`` it must be ``model`` itself.

        A model holding several states, or with ``is_root`` a state held below it, is an
        AssertionError that names the modules, as in ModelOpt.
        """
        return state_at_root(model) if is_root else state_holder(model) is not None

    @property
    def has_state(self) -> bool:
        """Whether any mode was applied to the model."""
        return self._model is not None and holds_state(self._model)

    def state_dict(self) -> list[tuple[str, dict[str, Any]]]:
        """The modes applied, in order: ``(name, {"config": ..., "metadata": ...})`` each."""
        return _state_entries(self._model) if self._model is not None else []

    @property
    def state_version(self) -> str:
        """The version of nascli that describes the state."""
        return nascli.__version__

    @property
    def last_mode(self) -> str | None:
        """The name of the last mode applied (None if none)."""
        entries = self.state_dict()
        return entries[-1][0] if entries else None

    def modes_with_states(self) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
        """``(name, config, metadata)`` of each mode applied, in order."""
        for name, state in self.state_dict():
            yield name, state["config"], state["metadata"]

    def check_mode(self, mode: str) -> None:
        """Raise an AssertionError if ``mode`` cannot be applied next (``check_next_mode``)."""
        held = current_mode(self._model) if self._model is not None else None
        check_next_mode(held, mode, type(self._model).__name__)

    @staticmethod
    def has_state_for_mode_type(
        mode_type: str, *, model: nn.Module | None = None, state: dict[str, Any] | None = None
    ) -> bool:
        """Whether ``model``, or a ``modelopt_state`` of one, holds a mode of ``mode_type``
        (``"nas"``: autonas, fastnas, export_nas; ``"prune"``: fastnas). Give one of the two.

        ModelOpt's other mode types (``"quantization"``, ``"distill"``, ...) have no mode in
        nascli, so no model holds one; an unknown type is a KeyError, as in ModelOpt.
        """
        if (model is None) == (state is None):
            raise ValueError("has_state_for_mode_type: give model or state, one")
        if mode_type not in MODE_TYPES and mode_type not in _OTHER_MODE_TYPES:
            raise KeyError(f"mode type {mode_type!r} is not one of {sorted({*MODE_TYPES, *_OTHER_MODE_TYPES})}")
        entries = (modelopt_state(model) if model is not None else state)[REQUIRED_KEY]
        return any(name in MODE_TYPES.get(mode_type, ()) for name, _ in entries)
