"""Architecture hyperparameters: the discrete dimensions a search space is made of."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class Hparam:
    """A named, sorted set of choices with one active value.

    One object is shared by every layer attribute that must take the same value (a channel group),
    so setting ``active`` once resizes all of them consistently.
    """

    __slots__ = ("name", "choices", "active")

    def __init__(self, name: str, choices: Sequence[Any], active: Any = None) -> None:
        if not choices:
            raise ValueError(f"hparam {name!r} needs at least one choice")
        self.name = name
        self.choices = tuple(sorted(set(choices)))
        self.active = self.choices[-1] if active is None else active

    @property
    def max(self) -> Any:
        return self.choices[-1]

    @property
    def min(self) -> Any:
        return self.choices[0]

    @property
    def is_configurable(self) -> bool:
        return len(self.choices) > 1

    @property
    def centroid(self) -> Any:
        """The choice nearest the mean of the choices (the smaller one on a tie)."""
        mean = sum(self.choices) / len(self.choices)
        return min(self.choices, key=lambda c: (abs(c - mean), c))

    def __repr__(self) -> str:
        return f"Hparam({self.name!r}, choices={list(self.choices)}, active={self.active})"
