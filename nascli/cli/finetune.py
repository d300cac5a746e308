"""``nascli finetune [CHECKPOINT] [key=value ...]``: train the searched subnet alone."""

from __future__ import annotations

from pathlib import Path

import typer

from nascli.cli.common import console, flags, handle_errors, input_path, result, source_and_overrides


@handle_errors
def finetune(
    source: Path = typer.Argument(None, help="search.pt; read from stdin when omitted."),
    overrides: list[str] = typer.Argument(None, help="Recipe overrides as key=value (e.g. finetune.epochs=5)."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON result on stdout instead of the path."),
) -> None:
    """Fine-tune the selected subnet as a plain model and evaluate it on the test split; writes finetune.pt."""
    from nascli.opt.checkpoint import read_checkpoint
    from nascli.stages.finetune import finetune_stage
    from nascli.stages.load import load_stage_input

    source, overrides = source_and_overrides(source, overrides)
    model, _, _, recipe = load_stage_input(input_path(source), overrides, "finetune")
    path = finetune_stage(model, recipe, None if flags.quiet else console)
    result(path, read_checkpoint(path)["metrics"], json_out)
