"""Deployment constraints: parse "2e9", "2G", "350M", "60%" into absolute upper bounds."""

from __future__ import annotations

import math
import re
from typing import Any

from nascli.errors import UserInputError

CONSTRAINT_KEYS = ("flops", "params", "latency", "memory")
_NUMBER = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([kKmMgGtT]?)\s*$")
_SCALE = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}
_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*(s|ms|us|µs)\s*$")
_SECONDS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6}
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([kKmMgGtT]?)(i?)[bB]\s*$")


def parse_bound(key: str, value: Any) -> tuple[float, bool]:
    """(number, is_fraction_of_original) of one constraint value; bad values are one clear line.

    Latency takes a duration with its unit ("15ms", "0.2s", "500us"), or seconds as a number.
    """
    hint = "expected a positive number such as 2e9, 2G or 350M, or a percentage such as 60%"
    if key == "memory":
        hint = "expected a size such as 2GB, 512MB or 1.5GiB, a number of bytes, or a percentage such as 60%"
    if key == "latency":
        hint = "expected a duration such as 15ms, 0.2s or 500us, or a percentage such as 60%"
    if isinstance(value, bool):
        raise UserInputError(f"constraint {key}={value!r}: {hint}")
    if _is_non_finite(value):
        raise UserInputError(f"constraint {key}={value!r}: must be a finite number")
    if isinstance(value, (int, float)):
        number, fraction = float(value), False
    elif isinstance(value, str) and value.strip().endswith("%"):
        try:
            percent = float(value.strip()[:-1])
        except ValueError:
            raise UserInputError(f"constraint {key}={value!r}: {hint}") from None
        if not 0 < percent <= 100:
            raise UserInputError(f"constraint {key}={value!r}: a percentage of the original model must be in (0, 100]")
        return percent / 100, True
    elif key == "latency" and isinstance(value, str) and (match := _DURATION.match(value)):
        number, fraction = float(match.group(1)) * _SECONDS[match.group(2)], False
    elif key == "memory" and isinstance(value, str) and (match := _SIZE.match(value)):
        unit = match.group(2).lower()
        scale = 1024 ** ("kmgt".index(unit) + 1) if match.group(3) and unit else _SCALE[unit]
        number, fraction = float(match.group(1)) * scale, False
    elif key != "latency" and isinstance(value, str) and (match := _NUMBER.match(value)):
        number, fraction = float(match.group(1)) * _SCALE[match.group(2).lower()], False
    else:
        raise UserInputError(f"constraint {key}={value!r}: {hint}")
    if not math.isfinite(number):  # 1e400 overflows to inf, and so does 1e300T
        raise UserInputError(f"constraint {key}={value!r}: must be a finite number")
    if number <= 0:
        raise UserInputError(f"constraint {key}={value!r}: must be greater than zero")
    return number, fraction


def _is_non_finite(value: Any) -> bool:
    """nan, inf and their spellings as text ("nan", "-inf", "1e400")."""
    try:
        return not math.isfinite(float(value.strip() if isinstance(value, str) else value))
    except (TypeError, ValueError):
        return False


def resolve_constraints(raw: dict[str, Any] | None, original: dict[str, int]) -> dict[str, float]:
    """Absolute upper bounds per metric; percentages are of the original (max) model."""
    bounds = {}
    for key, value in (raw or {}).items():
        if key not in CONSTRAINT_KEYS:
            raise UserInputError(f"constraint {key!r}: unknown (known: {', '.join(CONSTRAINT_KEYS)})")
        if key not in original:
            raise UserInputError(f"constraint {key!r}: needs a latency table; give a device (--device cpu|cuda)")
        number, fraction = parse_bound(key, value)
        bounds[key] = number * original[key] if fraction else number
    return bounds
