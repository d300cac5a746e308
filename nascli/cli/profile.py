"""``nascli profile [RECIPE_OR_CHECKPOINT] [--flops X] [--params X]``: cost range of the space."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from nascli.cli.common import console, flags, handle_errors, input_path, result
from nascli.errors import ConstraintError


@handle_errors
def profile(
    source: Path = typer.Argument(None, help="Recipe or checkpoint; read from stdin when omitted."),
    overrides: list[str] = typer.Argument(None, help="Recipe overrides as key=value."),
    flops: str = typer.Option(None, "--flops", help="Upper bound: 2e9, 2G, 350M or 60% of the original."),
    params: str = typer.Option(None, "--params", help="Upper bound on parameters, same forms."),
    json_out: bool = typer.Option(False, "--json", help="Print the profile as JSON on stdout."),
) -> None:
    """Flops and params of the min, centroid and max subnets; exit 3 if a constraint cannot be met."""
    from nascli.cost.model import cost_model
    from nascli.cost.profile import profile_costs, render_profile
    from nascli.stages.load import load_stage_input

    constraints = {k: v for k, v in (("flops", flops), ("params", params)) if v is not None}
    model, path, _ = load_stage_input(input_path(source), overrides or [])
    costs = cost_model(model)
    is_satisfied, stats = profile_costs(costs, constraints)
    if not flags.quiet:
        render_profile(stats, costs, console)
    result(path, {"satisfied": is_satisfied, **json.loads(json.dumps(stats))}, json_out)
    if not is_satisfied:
        failing = ", ".join(k for k, c in stats["constraints"].items() if not c["satisfiable"])
        raise ConstraintError(f"{failing} cannot be met by any subnet of the search space")
