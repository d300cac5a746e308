"""``nascli train [RECIPE_OR_CHECKPOINT] [key=value ...]``: train the supernet, write train.pt."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import typer

from nascli.cli.common import console, flags, handle_errors, input_path, result, source_and_overrides
from nascli.errors import UserInputError


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
        _relaunch_with_torchrun(nproc)
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
        result(out, {k: metrics.get(k) for k in ("epoch", "acc_max", "acc_min", "loss")}, json_out)


def _relaunch_with_torchrun(nproc: int) -> None:
    """Run this same command under torchrun with ``nproc`` processes, passing the exit code on."""
    args = list(sys.argv[1:])
    index = next(i for i, a in enumerate(args) if a.startswith("--nproc"))
    del args[index : index + (1 if "=" in args[index] else 2)]
    position = args.index("train") + 1
    first = Path(args[position]) if position < len(args) and not args[position].startswith("-") else None
    source, _ = source_and_overrides(first, [])
    if source is None:  # the input comes from a pipe: read it here, the ranks cannot share stdin
        args.insert(position, str(input_path(None)))
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}", "-m", "nascli", *args]
    raise typer.Exit(subprocess.run(command).returncode)
