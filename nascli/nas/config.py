"""Default rules of each search-space mode, as editable dicts, and ModelOpt's rules for chaining modes.

``AutoNASConfig()`` returns a fresh dict each call, so the idiom
``config["nn.Conv2d"]["*"]["out_channels_ratio"] += (0.1,)`` changes only that copy.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError
from torch import nn

from nascli.errors import UserInputAssertionError, UserInputError
from nascli.space.kinds import ModeDefaults, registered_kinds
from nascli.space.rules import rule_settings, validate_rules
from nascli.space.space import get_space, is_converted, is_pending

#: ModelOpt 0.47's names of settings nascli spells as the NAS guide does
SETTING_ALIASES = {"channels_ratio": "out_channels_ratio"}

#: settings ModelOpt gives norms; a nascli norm follows the channels of the layer it normalizes
FOLLOWED_SETTINGS = frozenset({"features_ratio", "feature_divisor"})

#: modes that export the converted model in place of converting it
EXPORT_MODES = frozenset({"export", "export_nas"})


class ExportConfig(BaseModel):
    """ModelOpt's config of the ``export_nas`` mode: ``strict`` and ``calib`` as ``nascli.nas.export`` takes them.

    Read as ModelOpt's is: by attribute (``config.calib``) or key (``config["calib"]``).
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    strict: bool = True
    calib: bool = False

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)


class ModeDescriptor:
    """ModelOpt's base of mode descriptions, for code that names a mode by its descriptor.

    nascli's modes are fixed (autonas, fastnas, export_nas): a descriptor given as a mode stands
    for the mode its ``name`` says, and one of another name is refused as an unknown mode.
    """

    @property
    def name(self) -> str:
        raise NotImplementedError

    @property
    def config_class(self) -> type:
        raise NotImplementedError

    @property
    def is_export_mode(self) -> bool:
        return False

    def __str__(self) -> str:
        return self.name


class ExportNASModeDescriptor(ModeDescriptor):
    """The ``export_nas`` mode, as ModelOpt describes it."""

    @property
    def name(self) -> str:
        return "export_nas"

    @property
    def config_class(self) -> type:
        return ExportConfig

    @property
    def is_export_mode(self) -> bool:
        return True


class _ModeConfig(dict):
    """Rules of one mode: layer type -> fnmatch pattern -> settings (``None`` excludes).

    Each layer kind gives its own defaults for the mode; a kind that gives none is left out.
    ``channel_divisor`` is the default divisor of channel and feature counts (a class attribute,
    so a test or a script can set it for every config made afterwards).
    """

    channel_divisor: int = 32

    def __init__(self, ratios: tuple[float, ...], depth: bool) -> None:
        super().__init__()
        mode = ModeDefaults(ratios=ratios, divisor=self.channel_divisor, depth=depth)
        for kind in registered_kinds():
            settings = kind.default_settings(mode)
            if settings is not None:
                for key in kind.rule_keys():
                    self[key] = {"*": dict(settings)}


class AutoNASConfig(_ModeConfig):
    """AutoNAS: channels at 0.5 / 0.67 / 1.0 of the original, divisor 32, searchable depth."""

    def __init__(self) -> None:
        super().__init__((0.5, 0.67, 1.0), depth=True)


class FastNASConfig(_ModeConfig):
    """FastNAS (pruning): fine channel ratios 0.05 ... 1.0, divisor 32, no depth search."""

    def __init__(self) -> None:
        super().__init__(tuple(round(0.05 * i, 2) for i in range(1, 21)), depth=False)


MODES: dict[str, type[_ModeConfig]] = {"autonas": AutoNASConfig, "fastnas": FastNASConfig}


def resolve_modes(mode: Any) -> list[tuple[str, dict[str, Any]]]:
    """Turn ModelOpt's mode forms into the steps to apply, in order: ``(name, validated rules)``
    for a search-space mode, ``(name, export keyword arguments)`` for ``export_nas``.

    ``"autonas"``, ``("autonas", config)``, or a list of those and ``"export_nas"`` or
    ``("export_nas", config)`` (an ``ExportConfig`` or a dict of its keys); a ``ModeDescriptor``
    stands for its name; ``[]`` applies nothing. Whether each step may follow the one before is
    ``check_next_mode``'s to say, once the model is known; every rule is checked here, before anything is applied.
    """
    if isinstance(mode, (str, dict, ModeDescriptor)) or (
        isinstance(mode, tuple)
        and len(mode) == 2
        and isinstance(mode[0], (str, ModeDescriptor))
        and isinstance(mode[1], (dict, ExportConfig, type(None)))
    ):
        mode = [mode]
    if not isinstance(mode, (list, tuple)):
        raise UserInputError(f"mode: expected a mode name, (name, config) or a list of those, got {mode!r}")
    entries = [_named(entry) for entry in mode]
    return [_export_step(entry) if _mode_name(entry) in EXPORT_MODES else resolve_mode(entry) for entry in entries]


def _mode_name(entry: Any) -> Any:
    return entry[0] if isinstance(entry, (list, tuple)) and entry else entry


def _named(entry: Any) -> Any:
    """A mode entry with its descriptor (ModelOpt's ``ModeDescriptor``) replaced by the mode's name."""
    if isinstance(entry, ModeDescriptor):
        return entry.name
    if isinstance(entry, (list, tuple)) and entry and isinstance(entry[0], ModeDescriptor):
        return (entry[0].name, *entry[1:])
    return entry


def _export_step(entry: Any) -> tuple[str, dict[str, Any]]:
    """``(name, keyword arguments of export)`` from ``"export_nas"`` or ``("export_nas", config)``."""
    name, config = (entry, None) if isinstance(entry, str) else (entry[0], entry[1] if len(entry) > 1 else None)
    if isinstance(config, ExportConfig):
        return name, config.model_dump()
    if config is not None and not isinstance(config, dict):
        raise UserInputError(f"mode {name} config: expected an ExportConfig or a dict, got {type(config).__name__}")
    try:
        return name, ExportConfig(**(config or {})).model_dump()
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise UserInputError(f"mode {name} config: {where}: {first['msg']} (keys: strict, calib)") from None


def resolve_mode(mode: Any) -> tuple[str, dict[str, Any]]:
    """Turn ``"autonas"`` or ``("autonas", config)`` into (name, validated rules).

    A config may be written as ModelOpt writes it (see ``modelopt_rules``) and, as in ModelOpt,
    what it leaves out keeps the mode's defaults (``over_defaults``); ``None`` or ``{}`` as the
    config means the mode's defaults.
    """
    if isinstance(mode, (list, tuple)) and len(mode) == 1:
        mode = mode[0]
    if isinstance(mode, str):
        name, config = mode, None
    elif isinstance(mode, (list, tuple)) and len(mode) == 2:
        name, config = mode
    else:
        raise UserInputError(f"mode: expected a mode name or (name, config), got {mode!r}")
    if name not in MODES:
        raise UserInputError(f"mode: unknown mode {name!r} (known: {', '.join(MODES)}, export_nas)")
    rules = MODES[name]() if not config else over_defaults(MODES[name](), modelopt_rules(config, f"mode {name} config"))
    return name, validate_rules(dict(rules), where=f"mode {name} config")


def over_defaults(defaults: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """A mode config as ModelOpt reads one: layer types it leaves out keep the mode's defaults.

    A type it names takes its own patterns, each filled with the default settings it leaves
    out, so ``{"nn.Conv2d": {"*": {"out_channels_ratio": [0.5, 1.0]}}}`` keeps the default
    divisor and still converts linear layers and norms.
    """
    rules = dict(defaults)
    for key, patterns in given.items():
        base = (defaults.get(key) or {}).get("*") or {}
        if isinstance(patterns, dict) and base:
            patterns = {p: {**base, **s} if isinstance(s, dict) else s for p, s in patterns.items()}
        rules[key] = patterns
    return rules


def modelopt_rules(config: dict[str, Any], where: str) -> dict[str, Any]:
    """Accept ModelOpt's way of writing rules next to nascli's.

    ModelOpt lets a layer type map straight to its settings (``{"nn.Conv2d": {"channels_ratio":
    ...}}``); nascli puts an fnmatch pattern in between, so such settings become ``{"*": ...}``.
    ModelOpt 0.47's ``channels_ratio`` is nascli's ``out_channels_ratio``. A norm's
    ``features_ratio`` and ``feature_divisor`` are dropped: in nascli a norm always has the
    channels of the layer it normalizes, whose own rule decides them.
    """
    if not isinstance(config, dict):
        raise UserInputError(f"{where}: expected a mapping of layer type to settings, got {type(config).__name__}")
    known = rule_settings()
    out: dict[str, Any] = {}
    for key, value in config.items():
        allowed = known.get(key)
        if allowed is None or not isinstance(value, dict):
            out[key] = value
            continue
        flat = not value or all(_setting(name, allowed) for name in value)
        patterns = {"*": value} if flat else value
        out[key] = {
            pattern: None if settings is None else _renamed(settings, allowed) for pattern, settings in patterns.items()
        }
    return out


def _setting(name: Any, allowed: dict[str, Any]) -> bool:
    return name in allowed or SETTING_ALIASES.get(name) in allowed or (not allowed and name in FOLLOWED_SETTINGS)


def _renamed(settings: Any, allowed: dict[str, Any]) -> Any:
    if not isinstance(settings, dict):
        return settings
    out = {}
    for name, value in settings.items():
        if not allowed and name in FOLLOWED_SETTINGS:
            continue
        out[SETTING_ALIASES[name] if name not in allowed and SETTING_ALIASES.get(name) in allowed else name] = value
    return out


def current_mode(model: nn.Module) -> str | None:
    """The search-space mode ``model`` holds and has not exported (the one a next mode must follow)."""
    if is_pending(model):  # converted without an input, waiting for one (nas/deferred.py)
        from nascli.nas.deferred import pending_mode

        return pending_mode(model)
    return get_space(model).modes[-1][0] if is_converted(model) else None


def check_next_mode(last: str | None, mode: Any, model: str) -> None:
    """Refuse ``mode`` after ``last`` (the search-space mode not yet exported, None if none), with
    ModelOpt's assertion messages and what to do.

    As in ModelOpt, a search-space mode must be exported (``export_nas``) before another mode,
    and ``export_nas`` exports the search space the model holds: ``autonas, export_nas, fastnas``
    is a chain, ``autonas, fastnas`` is not. Names nascli does not know are left to the caller.
    """
    if mode in EXPORT_MODES and last is None:
        raise UserInputAssertionError(
            f"Cannot add {mode} according to the current export stack: deque([])."
            f" {model} holds no search space to export: convert it first"
        )
    if mode in MODES and last is not None:
        raise UserInputAssertionError(
            f"Cannot add {mode} after {last}! Next modes of {last} are {{'export_nas'}}."
            f" {model} is already converted: convert the original model, or export its subnet (export_nas) and"
            " convert that"
        )
