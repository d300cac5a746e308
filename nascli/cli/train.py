"""``nascli train [RECIPE_OR_CHECKPOINT] [key=value ...]``: train the supernet, write train.pt."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from nascli.cli.common import console, flags, handle_errors, input_path, result, source_and_overrides
from nascli.errors import UserInputError

if TYPE_CHECKING:
    from nascli.recipe.schema import Recipe


@handle_errors
def train(
    source: Path = typer.Argument(None, help="Recipe, convert.pt or train.pt; read from stdin when omitted."),
    overrides: list[str] = typer.Argument(None, help="Recipe overrides as key=value (e.g. train.epochs=3)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run directory's unfinished train.pt."),
    nproc: int = typer.Option(1, "--nproc", min=1, help="Processes on this machine (runs torchrun for you)."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON result on stdout instead of the path."),
) -> None:
    """Train every subnet (sandwich rule, in-place distillation); evaluates max and min subnets each epoch."""
    if nproc > 1 and "WORLD_SIZE" not in os.environ:
        relaunch_with_torchrun("train", nproc, source, overrides)
        return
    from nascli.opt.checkpoint import read_checkpoint
    from nascli.stages.load import load_resumable, load_stage_input
    from nascli.stages.train import train_stage
    from nascli.train.distributed import init_from_env
    from nascli.train.trainer import stderr_is_terminal

    ranks = init_from_env()
    source, overrides = source_and_overrides(source, overrides)
    if resume:
        model, path, checkpoint, recipe, state = load_resumable(input_path(source), overrides, "train")
        if checkpoint["stage"] != "train":
            raise UserInputError(f"--resume: no train.pt in {recipe.run_dir} to resume from")
        if state is None:
            result(path, {"resumed": False, "finished": True}, json_out)
            return
    else:
        (model, path, checkpoint, recipe), state = load_stage_input(input_path(source), overrides, "train"), None
    out = train_stage(
        model, recipe, state, ranks, None if flags.quiet else console, stderr_is_terminal() and not flags.quiet
    )
    if ranks.main:
        metrics = read_checkpoint(out)["metrics"]
        shown = ("epoch", "acc_max", "acc_min", "ppl_max", "ppl_min", "loss")
        result(out, {k: metrics[k] for k in shown if k in metrics}, json_out)


def relaunch_with_torchrun(
    command: str,
    nproc: int,
    source: Path | None,
    overrides: list[str] | None,
    check: Callable[[Recipe], None] | None = None,
) -> None:
    """Run this same ``nascli <command>`` under torchrun with ``nproc`` processes, passing the exit code on.

    The input is checked here first (and its recipe by ``check``): a bad one is one line and
    exit 2, not the error of every process followed by torchrun's report.
    """
    from nascli.stages.load import check_stage_input

    source, overrides = source_and_overrides(source, overrides)
    path = input_path(source)
    recipe = check_stage_input(path, overrides, command)
    if check is not None:
        check(recipe)
    args = list(sys.argv[1:])
    index = next(i for i, a in enumerate(args) if a.startswith("--nproc"))
    del args[index : index + (1 if "=" in args[index] else 2)]
    if source is None:  # the input came from a pipe: pass it on, the processes cannot share stdin
        args.insert(args.index(command) + 1, str(path))
    # --standalone: a rendezvous on a free local port, so two jobs on one machine never collide
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    command = [*torchrun, "-m", "nascli", *args]
    raise typer.Exit(subprocess.run(command).returncode)
