"""Conversion rules: which layers become searchable and with which choices.

Rules are keyed by layer type (``"nn.Conv2d"``), then by an fnmatch pattern on the module name,
then by setting. A type or pattern mapped to ``None`` is excluded. Later patterns that match a
module override the settings of earlier ones, so ``{"*": {...}, "layer4.*": {...}}`` reads as a
default followed by an exception.
"""

from __future__ import annotations

import copy
from fnmatch import fnmatchcase
from typing import Any

from torch import nn

from nascli.errors import UserInputError
from nascli.space.kinds import convertible_kind, qualified_name, registered_kinds


def rule_settings() -> dict[str, dict[str, Any]]:
    """Rule key (``"nn.Conv2d"``) -> the settings its layer kind takes, each with its validator."""
    return {key: kind.settings for kind in registered_kinds() for key in kind.rule_keys()}


def rule_key(module: nn.Module) -> str | None:
    """The rules key of a module's own type (None for a type no kind converts)."""
    kind = convertible_kind(module)
    return kind.rule_key(qualified_name(type(module))) if kind else None


def validate_rules(rules: dict[str, Any], where: str = "rules") -> dict[str, Any]:
    """Check a rules dict and return a normalized deep copy (lists become tuples)."""
    if not isinstance(rules, dict):
        raise UserInputError(f"{where}: expected a mapping of layer type to patterns, got {type(rules).__name__}")
    known = rule_settings()
    out: dict[str, Any] = {}
    for key, patterns in rules.items():
        if key not in known:
            raise UserInputError(f"{where}.{key}: unknown layer type (known: {', '.join(sorted(known))})")
        if patterns is None:
            out[key] = None
            continue
        if not isinstance(patterns, dict):
            raise UserInputError(f"{where}.{key}: expected a mapping of module-name pattern to settings")
        allowed = known[key]
        out[key] = {}
        for pattern, settings in patterns.items():
            if settings is None:
                out[key][pattern] = None
                continue
            if not isinstance(settings, dict):
                raise UserInputError(f"{where}.{key}.{pattern}: expected a mapping of settings")
            checked = {}
            for name, value in settings.items():
                if name not in allowed:
                    hint = ", ".join(allowed) or "none"
                    raise UserInputError(f"{where}.{key}.{pattern}.{name}: unknown setting (known: {hint})")
                checked[name] = allowed[name](f"{where}.{key}.{pattern}.{name}", value)
            out[key][pattern] = checked
    return out


def merge_rules(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Overlay ``override`` on ``base`` setting by setting (a recipe's ``rules`` on a mode default)."""
    merged = copy.deepcopy(base)
    for key, patterns in override.items():
        if patterns is None or merged.get(key) is None:
            merged[key] = copy.deepcopy(patterns)
            continue
        for pattern, settings in patterns.items():
            current = merged[key].get(pattern)
            if settings is None or current is None:
                merged[key][pattern] = copy.deepcopy(settings)
            else:
                merged[key][pattern] = {**current, **settings}
    return merged


def settings_for(rules: dict[str, Any], name: str, module: nn.Module) -> dict[str, Any] | None:
    """The settings that apply to one module, or None when it is not converted."""
    return settings_matching(rules.get(rule_key(module)), name)


def settings_matching(patterns: dict[str, Any] | None, name: str) -> dict[str, Any] | None:
    """The settings of one rules key that apply to ``name`` (None when excluded or unmatched)."""
    if patterns is None:
        return None
    found: dict[str, Any] | None = None
    for pattern, settings in patterns.items():
        if fnmatchcase(name, pattern):
            if settings is None:
                return None
            found = {**(found or {}), **settings}
    return found
