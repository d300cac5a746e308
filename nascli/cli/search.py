"""``nascli search [CHECKPOINT] --flops X --params X [--algorithm evolve|random|sensitivity]``."""

from __future__ import annotations

from pathlib import Path

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
from nascli.errors import UserInputError


@handle_errors
def search(
    source: Path = typer.Argument(None, help="train.pt (or any checkpoint); read from stdin when omitted."),
    overrides: list[str] = typer.Argument(None, help="Recipe overrides as key=value (e.g. search.iterations=5)."),
    flops: str = typer.Option(None, "--flops", help="Upper bound: 2e9, 2G, 350M or 50% of the original."),
    params: str = typer.Option(None, "--params", help="Upper bound on parameters, same forms."),
    latency: str = typer.Option(None, "--latency", help="Upper bound on predicted latency (recipe's deployment)."),
    memory: str = typer.Option(None, "--memory", help="Upper bound on bf16 weights + KV cache: 2GB or 50%."),
    algorithm: str = typer.Option(None, "--algorithm", help="evolve, random or sensitivity (fastnas default)."),
    resume: bool = typer.Option(
        False, "--resume", help="Continue the run directory's unfinished search.pt, under its constraints."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON result on stdout instead of the path."),
) -> None:
    """Find the most accurate subnet within the constraints; writes search.pt, search.json, pareto.png."""
    from nascli.stages.load import load_resumable, load_stage_input
    from nascli.stages.search import search_stage
    from nascli.train.distributed import init_from_env

    constraints = given_constraints(flops=flops, params=params, latency=latency, memory=memory)
    ranks = init_from_env()
    source, overrides = source_and_overrides(source, overrides)
    if algorithm is not None:
        overrides.append(f"search.algorithm={algorithm}")
    if resume:
        model, _, checkpoint, recipe, state = load_resumable(input_path(source), overrides, "search")
        if state is None:
            raise UserInputError(f"--resume: no unfinished search.pt in {recipe.run_dir}")
    else:
        (model, _, checkpoint, recipe), state = load_stage_input(input_path(source), overrides, "search"), None
    quiet = flags.quiet or not ranks.main
    out = None if quiet else console
    path = search_stage(model, recipe, constraints, out, state, ranks, checkpoint["stage"])
    if ranks.main:
        from nascli.opt.checkpoint import read_checkpoint

        result(path, read_checkpoint(path)["metrics"], json_out)
