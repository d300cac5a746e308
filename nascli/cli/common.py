"""What every command shares: stderr console, global flags, error handling, stdout results."""

from __future__ import annotations

import functools
import json
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from nascli.errors import NasCliError, UserInputError

console = Console(stderr=True, soft_wrap=True, highlight=False)


@dataclass
class Flags:
    debug: bool = False
    quiet: bool = False


flags = Flags()


def info(text: str) -> None:
    """Human-facing output: stderr, silenced by --quiet."""
    if not flags.quiet:
        console.print(text, markup=False)


def result(path: Any, payload: dict[str, Any] | None = None, as_json: bool = False) -> None:
    """The one machine-facing line on stdout: the checkpoint path, or a JSON object with --json."""
    if as_json:
        sys.stdout.write(json.dumps({"checkpoint": str(path), **(payload or {})}) + "\n")
    else:
        sys.stdout.write(f"{path}\n")
    sys.stdout.flush()


def handle_errors(command: Callable) -> Callable:
    """Turn exceptions into one line on stderr and an exit code: 1 for a runtime failure, else the
    code of the error type (``nascli.errors``: 2 bad input, 3 constraints unmet), as README's
    Failure behaviour documents. A write the storage refused (a full disk, a file-size limit) is
    a runtime failure, exit 1, whether or not it went through ``nascli.atomic``.

    ``--debug`` adds the traceback above that line but keeps the exit code, so scripts that
    branch on 2 (bad input) or 3 (constraints) behave the same while someone debugs them.
    """

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except NasCliError as exc:
            _fail(f"error: {exc}", exc.exit_code)
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except Exception as exc:
            from nascli.atomic import storage_error

            # a write that did not go through nascli.atomic (one of a library's own): the same line, with
            # the file when the error names it
            refused = storage_error(exc, getattr(exc, "filename", None))
            if refused is not None:
                _fail(f"error: {refused}", refused.exit_code)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            hint = "" if flags.debug else " (run with --debug for the traceback)"
            _fail(f"error: {type(exc).__name__}: {first}{hint}", 1)

    return wrapper


def _fail(line: str, code: int) -> None:
    """Print the error line (after the traceback with --debug) and exit with ``code``."""
    if flags.debug:
        traceback.print_exc(file=sys.stderr)
    console.print(line, markup=False)
    raise typer.Exit(code) from None


def given_constraints(**bounds: str | None) -> dict[str, str]:
    """The bounds given on the command line (``flops="2G"``), each checked now.

    A bad bound is one line before any model is built or any latency is measured.
    """
    from nascli.cost.constraints import parse_bound

    given = {key: value for key, value in bounds.items() if value is not None}
    for key, value in given.items():
        parse_bound(key, value)
    return given


def source_and_overrides(source: Path | None, overrides: list[str] | None) -> tuple[Path | None, list[str]]:
    """With the input piped in, the first positional argument may be an override (key=value)."""
    overrides = list(overrides or [])
    if source is not None and "=" in str(source) and not source.exists():
        return None, [str(source), *overrides]
    return source, overrides


def input_path(argument: Path | None) -> Path:
    """The stage input: the argument, or the last path the previous stage printed on stdin."""
    if argument is not None:
        return argument
    if sys.stdin.isatty():
        raise UserInputError("no input: give a recipe or checkpoint path, or pipe one from the previous stage")
    # only the line break is dropped: a path may begin or end with spaces
    lines = [line for line in sys.stdin.read().splitlines() if line.strip()]
    if not lines:
        raise UserInputError("no input: stdin was empty (did the previous stage fail?)")
    return Path(lines[-1])
