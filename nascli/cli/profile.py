"""``nascli profile [RECIPE_OR_CHECKPOINT] [--flops X] [--params X]``: cost range of the space."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from nascli.cli.common import (
    console,
    flags,
    given_constraints,
    handle_errors,
    input_path,
    result,
    source_and_overrides,
)
from nascli.errors import ConstraintError, UserInputError
from nascli.recipe.schema import Deployment


def latency_model(model, recipe: dict, device: str | None):
    """The latency table for the recipe's deployment, on ``device`` if given.

    Cached in the user's cache directory, never beside the input, which may be read-only.
    """
    import torch

    from nascli.cost.latency import LatencyModel
    from nascli.userdirs import cache_dir

    deployment = Deployment.model_validate(recipe.get("deployment", {}))
    device = device or deployment.device
    if device not in ("cpu", "cuda"):
        raise UserInputError(f"--device {device!r}: expected cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserInputError("--device cuda: no CUDA device is available on this machine")
    return LatencyModel(model, device, deployment.batch_size, deployment.repeats, cache_dir())


@handle_errors
def profile(
    source: Path = typer.Argument(None, help="Recipe or checkpoint; read from stdin when omitted."),
    overrides: list[str] = typer.Argument(None, help="Recipe overrides as key=value."),
    flops: str = typer.Option(None, "--flops", help="Upper bound: 2e9, 2G, 350M or 60% of the original."),
    params: str = typer.Option(None, "--params", help="Upper bound on parameters, same forms."),
    latency: str = typer.Option(None, "--latency", help="Upper bound on latency: 15ms, 0.2s or 60%."),
    memory: str = typer.Option(
        None, "--memory", help="Upper bound on bf16 weights + KV cache (deployment batch, input length): 2GB or 60%."
    ),
    device: str = typer.Option(None, "--device", help="cpu or cuda: predict latency there (default: recipe's)."),
    json_out: bool = typer.Option(False, "--json", help="Print the profile as JSON on stdout."),
) -> None:
    """Flops and params of the min, centroid and max subnets; exit 3 if a constraint cannot be met.

    Prints its input on stdout, for the next stage, only when every constraint can be met.
    """
    from nascli.cost.model import CostModel, cost_model
    from nascli.cost.profile import profile_costs, render_profile

    constraints = given_constraints(flops=flops, params=params, latency=latency, memory=memory)
    source, overrides = source_and_overrides(source, overrides)
    path = input_path(source)
    timed = latency is not None or device is not None
    model, space, recipe = _profiled(path, overrides, timed)
    costs = cost_model(model) if model is not None else CostModel(space)
    costs.memory_batch = recipe.get("deployment", {}).get("batch_size", 1)
    timing = None
    if timed:
        timing = latency_model(model, recipe, device)
    is_satisfied, stats = profile_costs(costs, constraints, timing)
    if not flags.quiet:
        render_profile(stats, costs, console)
    if is_satisfied or json_out:  # a failed check must not feed a pipe: `profile --flops X | train`
        result(path, {"satisfied": is_satisfied, **json.loads(json.dumps(stats))}, json_out)
    if not is_satisfied:
        failing = ", ".join(k for k, c in stats["constraints"].items() if not c["satisfiable"])
        raise ConstraintError(f"{failing} cannot be met by any subnet of the search space")


def _profiled(path: Path, overrides: list[str], timed: bool) -> tuple[Any, Any, dict[str, Any]]:
    """(model, search space, recipe data) of a checkpoint, or of a recipe converted in memory.

    A recipe is not converted into its run directory: profiling writes nothing there. Where
    nothing is timed, a checkpoint's costs come from its record (model None, no code called,
    no weight read), or from the model restored on the meta device for an older checkpoint.
    """
    from nascli.stages.load import is_recipe, load_stage_input, recorded_space

    if is_recipe(path):
        from nascli.recipe.load import load_recipe
        from nascli.stages.convert import converted_model

        recipe = load_recipe(path, overrides)
        return converted_model(recipe), None, recipe.model_dump(mode="json")
    if not timed and (recorded := recorded_space(path, overrides)) is not None:
        space, recipe = recorded
        return None, space, recipe.model_dump(mode="json")
    model, path, checkpoint, _ = load_stage_input(path, overrides, "profile", on_meta=not timed)
    return model, None, checkpoint.get("recipe") or {}
