"""Profile a search space: cost of its min, centroid and max subnets, and whether constraints fit."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from nascli.cost.constraints import resolve_constraints
from nascli.cost.latency import LatencyModel
from nascli.cost.model import METRICS, CostModel

SUBNETS = ("min", "centroid", "max")
UNITS = {"flops": "MACs per sample", "params": "count", "latency": "predicted", "memory": "bytes, bf16 + KV cache"}


def human(value: float) -> str:
    """4.09G, 25.56M, 512.00K: the ModelOpt docs' style."""
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= scale:
            return f"{value / scale:.2f}{suffix}"
    return f"{value:.2f}" if isinstance(value, float) and not value.is_integer() else str(int(value))


def seconds(value: float) -> str:
    return f"{value * 1e3:.2f}ms" if value >= 1e-3 else f"{value * 1e6:.1f}us"


def profile_costs(
    costs: CostModel, constraints: dict[str, Any] | None = None, latency: LatencyModel | None = None
) -> tuple[bool, dict[str, Any]]:
    """(is_satisfied, stats) as ``mtn.profile`` returns them; the max subnet is the original model.

    With a latency model, each subnet also gets its predicted latency (seconds) and
    ``stats["measured latency"]`` the measured latency of the exported subnets, for comparison.
    """
    memory = ("memory",) if costs.has_kv_cache or "memory" in (constraints or {}) else ()
    metrics = METRICS + memory + (("latency",) if latency is not None else ())
    stats: dict[str, Any] = {name: costs.cost(costs.named(name), METRICS + memory) for name in SUBNETS}
    if latency is not None:
        latency.calibrate()
        for name in SUBNETS:
            stats[name]["latency"] = latency.predict(costs.named(name))
        measured = latency.measure_many([costs.named(name) for name in SUBNETS])
        stats["measured latency"] = dict(zip(SUBNETS, measured, strict=True))
        latency.save()
    stats["max/min ratio"] = {
        k: stats["max"][k] / stats["min"][k] if stats["min"][k] else float("inf") for k in metrics
    }
    stats["number of configurable hparams"] = len(costs.names)
    stats["search space size"] = costs.space.size()
    bounds = resolve_constraints(constraints, stats["max"])
    stats["constraints"] = {
        key: {"upper_bound": bound, "satisfiable": stats["min"][key] <= bound} for key, bound in bounds.items()
    }
    return all(c["satisfiable"] for c in stats["constraints"].values()), stats


def tokens_per_sample(costs: CostModel) -> int | None:
    """The sequence length of a model whose input is token ids (None for any other input)."""
    space = costs.space
    if len(space.input_shapes) != 1 or len(space.input_shapes[0]) != 2:
        return None
    return space.input_shapes[0][1] if space.input_dtypes[0].startswith(("int", "uint")) else None


def render_profile(stats: dict[str, Any], costs: CostModel, console: Console) -> None:
    """Print the tables and the closing note in the layout of ModelOpt's docs."""
    console.print(f"\nProfiling the following subnets from the given model: {SUBNETS}.\n")
    table = Table(title="Profiling Results")
    for column in ("Constraint", *SUBNETS, "max/min ratio"):
        table.add_column(column)
    for key in stats["max/min ratio"]:
        show = seconds if key == "latency" else human
        row = [show(stats[name][key]) for name in SUBNETS]
        table.add_row(f"{key} ({UNITS[key]})", *row, f"{stats['max/min ratio'][key]:.2f}")
    tokens = tokens_per_sample(costs)
    if tokens:  # a text model: flops per token are what language-model papers compare
        row = [human(stats[name]["flops"] / tokens) for name in SUBNETS]
        table.add_row(f"flops per token (at {tokens} tokens)", *row, f"{stats['max/min ratio']['flops']:.2f}")
    if "measured latency" in stats:
        measured = stats["measured latency"]
        row = [seconds(measured[name]) for name in SUBNETS]
        table.add_row("latency (measured, exported)", *row, f"{measured['max'] / measured['min']:.2f}")
    console.print(table)
    if stats["constraints"]:
        table = Table(title="Constraints Evaluation")
        for column in ("Constraint", "Upper Bound", "Satisfiable Upper Bound"):
            table.add_column(column)
        for key, check in stats["constraints"].items():
            show = seconds if key == "latency" else human
            table.add_row(key, show(check["upper_bound"]), str(check["satisfiable"]))
        console.print(table)
    console.print(costs.space.summary(), markup=False)
    if costs.space.cost_unmodeled:
        shown = ", ".join(costs.space.cost_unmodeled[:5])
        console.print(f"Note: flops of these operations are not counted: {shown}", markup=False)
    failing = [k for k, c in stats["constraints"].items() if not c["satisfiable"]]
    if failing:
        for key in failing:
            bound = stats["constraints"][key]["upper_bound"]
            console.print(
                f"Note: {key} cannot be satisfied: the smallest subnet has {human(stats['min'][key])} > {human(bound)}",
                markup=False,
            )
    elif stats["constraints"]:
        console.print("Note: all constraints can be satisfied within the search space!")
