"""Default rules of each search-space mode, as editable dicts.

``AutoNASConfig()`` returns a fresh dict each call, so the idiom
``config["nn.Conv2d"]["*"]["out_channels_ratio"] += (0.1,)`` changes only that copy.
"""

from __future__ import annotations

from typing import Any

from nascli.errors import UserInputError
from nascli.space.kinds import ModeDefaults, registered_kinds
from nascli.space.rules import validate_rules


class _ModeConfig(dict):
    """Rules of one mode: layer type -> fnmatch pattern -> settings (``None`` excludes).

    Each layer kind gives its own defaults for the mode; a kind that gives none is left out.
    """

    def __init__(self, ratios: tuple[float, ...], depth: bool) -> None:
        super().__init__()
        mode = ModeDefaults(ratios=ratios, divisor=32, depth=depth)
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


def resolve_mode(mode: Any) -> tuple[str, dict[str, Any]]:
    """Turn ``"autonas"``, ``["autonas"]`` or ``[("autonas", config)]`` into (name, validated rules)."""
    if isinstance(mode, (list, tuple)) and not (
        len(mode) == 2 and isinstance(mode[0], str) and isinstance(mode[1], dict)
    ):
        if len(mode) != 1:
            raise UserInputError(f"mode: expected one search-space mode, got {len(mode)}")
        mode = mode[0]
    if isinstance(mode, str):
        name, config = mode, None
    elif isinstance(mode, (list, tuple)) and len(mode) == 2:
        name, config = mode
    else:
        raise UserInputError(f"mode: expected a mode name or (name, config), got {mode!r}")
    if name not in MODES:
        raise UserInputError(f"mode: unknown mode {name!r} (known: {', '.join(MODES)})")
    rules = MODES[name]() if config is None else config
    return name, validate_rules(dict(rules), where=f"mode {name} config")
