"""Conversion rules: which layers become searchable and with which choices.

Rules are keyed by layer type (``"nn.Conv2d"``), then by an fnmatch pattern on the module name,
then by setting. A type or pattern mapped to ``None`` is excluded. Later patterns that match a
module override the settings of earlier ones, so ``{"*": {...}, "layer4.*": {...}}`` reads as a
default followed by an exception.
"""

from __future__ import annotations

import copy
import math
from fnmatch import fnmatchcase
from typing import Any

from torch import nn

from nascli.errors import UserInputError
from nascli.space.dynamic.activation import ACTIVATION_TYPES, ACTIVATIONS

CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
CONV_TRANSPOSE_TYPES = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
LINEAR_TYPES = (nn.Linear,)
BATCH_NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
INSTANCE_NORM_TYPES = (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)
NORM_TYPES = (*BATCH_NORM_TYPES, *INSTANCE_NORM_TYPES, nn.LayerNorm, nn.GroupNorm)

# The settings each layer type understands, with a validator for each.
_SETTINGS: dict[type, dict[str, str]] = {
    **{t: {"out_channels_ratio": "ratios", "channel_divisor": "divisor", "kernel_size": "kernels"} for t in CONV_TYPES},
    **{t: {"out_channels_ratio": "ratios", "channel_divisor": "divisor"} for t in CONV_TRANSPOSE_TYPES},
    nn.Linear: {"features_ratio": "ratios", "feature_divisor": "divisor", "couple_flatten": "flag"},
    nn.MultiheadAttention: {"num_heads_ratio": "ratios"},
    **{t: {} for t in NORM_TYPES},
    nn.Sequential: {"min_depth": "depth"},
    **{t: {"choices": "activations"} for t in ACTIVATION_TYPES},
}


def type_key(layer_type: type) -> str:
    return f"nn.{layer_type.__name__}"


def _check_setting(where: str, kind: str, value: Any) -> Any:
    if kind == "ratios":
        if not isinstance(value, (list, tuple)) or not value:
            raise UserInputError(f"{where}: expected a non-empty list of ratios in (0, 1], got {value!r}")
        for r in value:
            if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 < r <= 1:
                raise UserInputError(f"{where}: ratio {r!r} is not a number in (0, 1]")
        return tuple(float(r) for r in value)
    if kind == "kernels":
        if not isinstance(value, (list, tuple)):
            raise UserInputError(f"{where}: expected a list of odd kernel sizes, got {value!r}")
        for k in value:
            if isinstance(k, bool) or not isinstance(k, int) or k < 1 or k % 2 == 0:
                raise UserInputError(f"{where}: kernel size {k!r} is not a positive odd integer")
        return tuple(value)
    if kind == "flag":
        if not isinstance(value, bool):
            raise UserInputError(f"{where}: expected true or false, got {value!r}")
        return value
    if kind == "activations":
        if not isinstance(value, (list, tuple)) or not value or any(v not in ACTIVATIONS for v in value):
            known = ", ".join(ACTIVATIONS)
            raise UserInputError(f"{where}: expected a list of activations from {known}, got {value!r}")
        return tuple(value)
    if kind in ("divisor", "depth"):
        low = 1 if kind == "divisor" else 0
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise UserInputError(f"{where}: expected an integer >= {low}, got {value!r}")
        return value
    raise AssertionError(kind)


def validate_rules(rules: dict[str, Any], where: str = "rules") -> dict[str, Any]:
    """Check a rules dict and return a normalized deep copy (lists become tuples)."""
    if not isinstance(rules, dict):
        raise UserInputError(f"{where}: expected a mapping of layer type to patterns, got {type(rules).__name__}")
    known = {type_key(t): t for t in _SETTINGS}
    out: dict[str, Any] = {}
    for key, patterns in rules.items():
        if key not in known:
            raise UserInputError(f"{where}.{key}: unknown layer type (known: {', '.join(sorted(known))})")
        if patterns is None:
            out[key] = None
            continue
        if not isinstance(patterns, dict):
            raise UserInputError(f"{where}.{key}: expected a mapping of module-name pattern to settings")
        allowed = _SETTINGS[known[key]]
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
                checked[name] = _check_setting(f"{where}.{key}.{pattern}.{name}", allowed[name], value)
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
    patterns = rules.get(type_key(type(module)))
    if patterns is None:
        return None
    found: dict[str, Any] | None = None
    for pattern, settings in patterns.items():
        if fnmatchcase(name, pattern):
            if settings is None:
                return None
            found = {**(found or {}), **settings}
    return found


def channel_choices(size: int, ratios: tuple[float, ...], divisor: int, multiple_of: int = 1) -> tuple[int, ...]:
    """Channel counts for the ratios, each rounded to the nearest multiple of ``divisor``.

    The full size is always a choice. Choices are kept divisible by ``multiple_of`` (the per-group
    width of a grouped convolution) so every choice maps to a whole number of groups.
    """
    found = {size}
    for r in ratios:
        c = int(math.floor(r * size / divisor + 0.5)) * divisor
        c = min(size, max(divisor, c))
        if c % multiple_of == 0:
            found.add(c)
    return tuple(sorted(found))
