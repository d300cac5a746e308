"""Default rules of each search-space mode, as editable dicts.

``AutoNASConfig()`` returns a fresh dict each call, so the idiom
``config["nn.Conv2d"]["*"]["out_channels_ratio"] += (0.1,)`` changes only that copy.
"""

from __future__ import annotations

from typing import Any

from nascli.errors import UserInputError
from nascli.space.kinds import ModeDefaults, registered_kinds
from nascli.space.rules import rule_settings, validate_rules

#: ModelOpt 0.47's names of settings nascli spells as the NAS guide does
SETTING_ALIASES = {"channels_ratio": "out_channels_ratio"}

#: settings ModelOpt gives norms; a nascli norm follows the channels of the layer it normalizes
FOLLOWED_SETTINGS = frozenset({"features_ratio", "feature_divisor"})

#: modes that export the converted model in place of converting it
EXPORT_MODES = frozenset({"export", "export_nas"})


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


def resolve_modes(mode: Any) -> tuple[list[tuple[str, dict[str, Any]]], bool]:
    """Turn ModelOpt's mode forms into (search-space modes with validated rules, export after).

    ``"autonas"``, ``("autonas", config)``, or a list of those; ``[]`` converts nothing, and a
    trailing ``"export_nas"`` exports the converted model. nascli converts with one search-space
    mode, so a chain of two is an error that says so.
    """
    if isinstance(mode, (str, dict)) or (
        isinstance(mode, tuple)
        and len(mode) == 2
        and isinstance(mode[0], str)
        and isinstance(mode[1], (dict, type(None)))
    ):
        mode = [mode]
    if not isinstance(mode, (list, tuple)):
        raise UserInputError(f"mode: expected a mode name, (name, config) or a list of those, got {mode!r}")
    entries = list(mode)
    export = bool(entries) and _mode_name(entries[-1]) in EXPORT_MODES
    if export:
        entries = entries[:-1]
    if any(_mode_name(entry) in EXPORT_MODES for entry in entries):
        raise UserInputError("mode: export_nas can only be the last mode")
    if len(entries) > 1:
        names = [_mode_name(entry) for entry in entries]
        raise UserInputError(f"mode: nascli converts with one search-space mode, got {names}; pick one of them")
    return [resolve_mode(entry) for entry in entries], export


def _mode_name(entry: Any) -> Any:
    return entry[0] if isinstance(entry, (list, tuple)) and entry else entry


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
