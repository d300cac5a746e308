"""``nascli profile [RECIPE_OR_CHECKPOINT] [--flops X] [--params X]``: cost range of the space."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from nascli.cli.common import console, flags, handle_errors, input_path, result, source_and_overrides
from nascli.errors import ConstraintError, UserInputError
from nascli.recipe.schema import Deployment


def latency_model(model, checkpoint: dict, device: str | None, cache_dir: Path):
    """The latency table for the recipe's deployment, on ``device`` if given."""
    import torch

    from nascli.cost.latency import LatencyModel

    deployment = Deployment.model_validate((checkpoint.get("recipe") or {}).get("deployment", {}))
    device = device or deployment.device
    if device not in ("cpu", "cuda"):
        raise UserInputError(f"--device {device!r}: expected cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserInputError("--device cuda: no CUDA device is available on this machine")
    return LatencyModel(model, device, deployment.batch_size, deployment.repeats, cache_dir)


@handle_errors
def profile(
    source: Path = typer.Argument(None, help="Recipe or checkpoint; read from stdin when omitted."),
    overrides: list[str] = typer.Argument(None, help="Recipe overrides as key=value."),
    flops: str = typer.Option(None, "--flops", help="Upper bound: 2e9, 2G, 350M or 60% of the original."),
    params: str = typer.Option(None, "--params", help="Upper bound on parameters, same forms."),
    latency: str = typer.Option(None, "--latency", help="Upper bound on latency: 15ms, 0.2s or 60%."),
    device: str = typer.Option(None, "--device", help="cpu or cuda: predict latency there (default: recipe's)."),
    json_out: bool = typer.Option(False, "--json", help="Print the profile as JSON on stdout."),
) -> None:
    """Flops and params of the min, centroid and max subnets; exit 3 if a constraint cannot be met."""
    from nascli.cost.model import cost_model
    from nascli.cost.profile import profile_costs, render_profile
    from nascli.stages.load import load_stage_input

    constraints = {k: v for k, v in (("flops", flops), ("params", params), ("latency", latency)) if v is not None}
    source, overrides = source_and_overrides(source, overrides)
    model, path, checkpoint, _ = load_stage_input(input_path(source), overrides, "profile")
    costs = cost_model(model)
    timing = None
    if latency is not None or device is not None:
        timing = latency_model(model, checkpoint, device, path.parent)
    is_satisfied, stats = profile_costs(costs, constraints, timing)
    if not flags.quiet:
        render_profile(stats, costs, console)
    result(path, {"satisfied": is_satisfied, **json.loads(json.dumps(stats))}, json_out)
    if not is_satisfied:
        failing = ", ".join(k for k, c in stats["constraints"].items() if not c["satisfiable"])
        raise ConstraintError(f"{failing} cannot be met by any subnet of the search space")
