"""``nascli finetune [CHECKPOINT] [key=value ...]``: train the searched subnet alone."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from nascli.cli.common import console, flags, handle_errors, input_path, result, source_and_overrides
from nascli.cli.train import relaunch_with_torchrun
from nascli.errors import UserInputError

if TYPE_CHECKING:
    from nascli.recipe.schema import Recipe


@handle_errors
def finetune(
    source: Path = typer.Argument(None, help="search.pt; read from stdin when omitted."),
    overrides: list[str] = typer.Argument(None, help="Recipe overrides as key=value (e.g. finetune.epochs=5)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run directory's unfinished finetune.pt."),
    nproc: int = typer.Option(
        1, "--nproc", min=1, help="Processes on this machine, student and teacher sharded (runs torchrun for you)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON result on stdout instead of the path."),
) -> None:
    """Fine-tune the selected subnet as a plain model and evaluate it on the test split; writes finetune.pt.

    Under torchrun (or --nproc N) the student and the teacher are sharded across the processes
    with FSDP2, each process computing its share of every batch; one process writes.
    """
    if nproc > 1 and "WORLD_SIZE" not in os.environ:
        relaunch_with_torchrun("finetune", nproc, source, overrides, _refuse_sharded_lora)
        return
    from nascli.opt.checkpoint import read_checkpoint
    from nascli.stages.finetune import finetune_stage, resumable
    from nascli.stages.load import load_stage_input
    from nascli.train.distributed import init_from_env

    ranks = init_from_env()
    source, overrides = source_and_overrides(source, overrides)
    model, _, checkpoint, recipe = load_stage_input(input_path(source), overrides, "finetune")
    unfinished = None
    if resume:
        unfinished = resumable(recipe, checkpoint)
        if unfinished is None:
            if ranks.main:
                result(Path(recipe.run_dir) / "finetune.pt", {"resumed": False, "finished": True}, json_out)
            return
    path = finetune_stage(model, recipe, None if flags.quiet else console, ranks, unfinished)
    if ranks.main:
        result(path, read_checkpoint(path)["metrics"], json_out)


def _refuse_sharded_lora(recipe: Recipe) -> None:
    from nascli.stages.finetune import SHARDED_LORA

    if recipe.finetune.lora is not None:
        raise UserInputError(SHARDED_LORA)
