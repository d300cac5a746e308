"""``ConstraintsFunc``: whether the active subnet meets constraints, where ModelOpt keeps it.

ModelOpt scripts check a subnet they selected themselves with
``ConstraintsFunc(model, constraints, dummy_input)()``. nascli answers from the analytic cost
model, with no forward pass, in nascli's units: flops are multiply-accumulates per sample, params
are ``numel`` of the exported subnet (docs/migrating-from-modelopt.md).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from nascli.cost.constraints import resolve_constraints
from nascli.cost.model import cost_model
from nascli.errors import UserInputError
from nascli.nas.utils import as_inputs
from nascli.space.convert import costs_at_input
from nascli.space.space import get_space

#: metrics the cost model gives for every subnet
METRICS = ("flops", "params", "memory")
TRIVIAL = (0.0, float("inf"))


def latency_refusal(where: str) -> str:
    """Why ``where`` refuses a deployment or a latency constraint, and what to use instead."""
    return (
        f"{where}: latency is predicted from a timed table, not measured in Python;"
        " use `nascli search --latency 15ms --device cpu`"
    )


class ConstraintsFunc:
    """Call it to get ``(is_satisfied, values)`` of the model's active subnet.

    ``limits`` maps each metric to ``(lower, upper)``; flops and params always have one (trivial
    when not constrained), so their values are reported too. Setting ``limits`` takes constraints
    as ``mtn.search`` does (numbers, "2G", "60%" of the max subnet). ``dummy_input`` of another
    shape than the model was converted with recompiles the costs for that shape.
    """

    def __init__(
        self, model: nn.Module, constraints: dict[str, Any], dummy_input: Any = None, deployment: Any = None
    ) -> None:
        if deployment is not None or "latency" in constraints:
            raise UserInputError(latency_refusal("ConstraintsFunc"))
        get_space(model)  # a model that was not converted is refused here, naming nascli.nas.convert
        self.model = model
        if dummy_input is not None:
            costs_at_input(model, as_inputs(dummy_input))
        self._limits: dict[str, tuple[float, float]] = {}
        self.limits = constraints

    @property
    def limits(self) -> dict[str, tuple[float, float]]:
        return self._limits

    @limits.setter
    def limits(self, constraints: dict[str, Any]) -> None:
        costs = cost_model(self.model)
        original = costs.cost(costs.named("max"), METRICS)
        bounds = resolve_constraints(constraints, original)
        self._limits = {"flops": TRIVIAL, "params": TRIVIAL, **{k: (0.0, v) for k, v in bounds.items()}}

    @property
    def effective_limits(self) -> dict[str, tuple[float, float]]:
        """The limits that constrain anything."""
        return {k: v for k, v in self._limits.items() if v != TRIVIAL}

    def set_rel_lower_bounds(self, rel_lower: float = 0.85) -> None:
        """Require at least ``rel_lower`` of each upper bound (the search's ``lower_bound_ratio``)."""
        self._limits = {
            k: (rel_lower * hi, hi) if (lo, hi) != TRIVIAL else (lo, hi) for k, (lo, hi) in self._limits.items()
        }

    def __call__(self) -> tuple[bool, dict[str, float]]:
        costs = cost_model(self.model)
        values = costs.cost(None, tuple(self._limits))
        satisfied = all(lo <= values[k] <= hi for k, (lo, hi) in self._limits.items())
        return satisfied, {k: float(v) for k, v in values.items()}
