"""The Typer application and the ``nascli`` entry point."""

from __future__ import annotations

import sys
import warnings

import typer

from nascli import __version__
from nascli.cli.common import flags
from nascli.cli.convert import convert
from nascli.cli.export import export
from nascli.cli.finetune import finetune
from nascli.cli.process_memory import return_freed_memory_to_os
from nascli.cli.profile import profile
from nascli.cli.search import search
from nascli.cli.train import train

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Neural architecture search and pruning for PyTorch models.",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"nascli {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No human-facing output on stderr."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    flags.debug, flags.quiet = debug, quiet


app.command()(convert)
app.command()(profile)
app.command()(train)
app.command()(search)
app.command()(finetune)
app.command()(export)


GLOBAL_FLAGS = ("--debug", "--quiet", "-q")


def main() -> None:
    """Entry point; global flags may also follow the command (``nascli convert r.yaml -q``)."""
    warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
    return_freed_memory_to_os()
    args = sys.argv[1:]
    moved = [a for a in args if a in GLOBAL_FLAGS]
    app(args=moved + [a for a in args if a not in GLOBAL_FLAGS], prog_name="nascli")
