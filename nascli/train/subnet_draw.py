"""Random subnets for supernet training, drawn only among those a search under given bounds can pick.

A search under ``flops <= 50%`` never returns a subnet above the bound, so training steps spent
on those subnets train weights the deployed subnet uses only in part. ``train.subnet_constraints``
(the same keys and values as ``search.constraints``) makes every random subnet of a training step
one within the bounds: each hparam is drawn uniformly, as without bounds, and a draw outside them
is drawn again (rejection sampling, so the subnets are uniform over the allowed ones). The
largest and smallest subnets of the sandwich rule stay what they are: the largest is the teacher
of in-place distillation.
"""

from __future__ import annotations

import random
from typing import Any

from torch import nn

from nascli.cost.constraints import resolve_constraints
from nascli.cost.model import cost_model
from nascli.errors import UserInputError

__all__ = ["BoundedDraw"]

#: draws before giving up: the bounds then leave too small a share of the space to find by chance
MAX_DRAWS = 100_000
#: the metrics the cost model gives for any config without running the model
DRAWABLE = ("flops", "params", "memory")


class BoundedDraw:
    """A callable that returns a random config within ``bounds`` of the model's max subnet's costs.

    ``rng`` is the trainer's sampler, so processes sharing a seed draw the same subnets and a
    resumed run draws the ones the uninterrupted run would have.
    """

    def __init__(self, model: nn.Module, constraints: dict[str, Any], rng: random.Random) -> None:
        if "latency" in constraints:
            raise UserInputError("train.subnet_constraints.latency: training draws subnets by flops, params or memory")
        self.costs, self.rng = cost_model(model), rng
        original = self.costs.cost(self.costs.named("max"), DRAWABLE)
        try:
            self.bounds = resolve_constraints(constraints, original)
        except UserInputError as exc:
            raise UserInputError(f"train.subnet_constraints: {exc}") from None
        smallest = self.costs.cost(self.costs.named("min"), tuple(self.bounds))
        for key, bound in self.bounds.items():
            if smallest[key] > bound:
                raise UserInputError(
                    f"train.subnet_constraints.{key}: the smallest subnet needs {smallest[key]:,}, above the bound"
                    f" {bound:,.0f}"
                )
        self.choices = {name: hp.choices for name, hp in self.costs.hparams.items()}

    def __call__(self) -> dict[str, Any]:
        for _ in range(MAX_DRAWS):
            config = {name: self.rng.choice(choices) for name, choices in self.choices.items()}
            if self.within(config):
                return config
        wanted = ", ".join(f"{k} <= {v:,.0f}" for k, v in self.bounds.items())
        raise UserInputError(f"train.subnet_constraints: no random subnet with {wanted} in {MAX_DRAWS:,} draws")

    def within(self, config: dict[str, Any]) -> bool:
        """Whether ``config`` meets every bound."""
        found = self.costs.cost(config, tuple(self.bounds))
        return all(found[key] <= bound for key, bound in self.bounds.items())
