"""Validators of rule settings: each checks one value and returns it normalized (lists become tuples).

A layer kind lists its settings as ``{name: validator}``; ``nascli.space.rules`` runs them on
every rule a user writes, so a bad value is one error naming its key path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nascli.errors import UserInputError

Validator = Callable[[str, Any], Any]


def ratios(where: str, value: Any) -> tuple[float, ...]:
    if not isinstance(value, (list, tuple)) or not value:
        raise UserInputError(f"{where}: expected a non-empty list of ratios in (0, 1], got {value!r}")
    for r in value:
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 < r <= 1:
            raise UserInputError(f"{where}: ratio {r!r} is not a number in (0, 1]")
    return tuple(float(r) for r in value)


def odd_kernels(where: str, value: Any) -> tuple[int, ...]:
    if not isinstance(value, (list, tuple)):
        raise UserInputError(f"{where}: expected a list of odd kernel sizes, got {value!r}")
    for k in value:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1 or k % 2 == 0:
            raise UserInputError(f"{where}: kernel size {k!r} is not a positive odd integer")
    return tuple(value)


def flag(where: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise UserInputError(f"{where}: expected true or false, got {value!r}")
    return value


def _integer_from(low: int) -> Validator:
    def check(where: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise UserInputError(f"{where}: expected an integer >= {low}, got {value!r}")
        return value

    return check


divisor = _integer_from(1)
depth = _integer_from(0)


def names_from(known: tuple[str, ...]) -> Validator:
    """A non-empty list of names, each one of ``known``."""

    def check(where: str, value: Any) -> tuple[str, ...]:
        if not isinstance(value, (list, tuple)) or not value or any(v not in known for v in value):
            raise UserInputError(f"{where}: expected a list of activations from {', '.join(known)}, got {value!r}")
        return tuple(value)

    return check
