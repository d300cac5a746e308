"""The run directory: resolved recipe, stage checkpoints and the metrics log, one writer at a time."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from nascli.atomic import atomic_append, atomic_write_text, elsewhere, remove_stale_temps, storage_error, writing
from nascli.errors import UserInputError
from nascli.recipe.load import recipe_to_yaml
from nascli.recipe.schema import Recipe

LOCK_FILE = ".lock"

#: what a stage's refused write (a full disk, a file-size limit) tells the user besides freeing space
ANOTHER_RUN_DIR = "give another run_dir=DIR"

#: run directories this process holds locked, with how many nested holders each has
_held: dict[Path, int] = {}


def append_metrics(run_dir: Path, record: dict[str, Any]) -> None:
    """Append one JSON line to ``metrics.jsonl``: a log that survives crashes line by line.

    Appended in place (``tail -f`` follows it), whole or not at all (``nascli.atomic.atomic_append``).
    """
    line = json.dumps({"time": round(time.time(), 3), **record})
    atomic_append(run_dir / "metrics.jsonl", (line + "\n").encode())


def write_recipe(recipe: Recipe) -> Path:
    """The run directory's ``recipe.yaml``, written atomically once a stage has succeeded.

    Written earlier, a failed stage would leave a recipe that no checkpoint in the directory
    was made with.
    """
    return atomic_write_text(Path(recipe.run_dir) / "recipe.yaml", recipe_to_yaml(recipe))


@contextmanager
def run_dir_lock(run_dir: str | os.PathLike) -> Iterator[Path]:
    """Hold ``run_dir`` for one stage: a second nascli process writing there is refused (exit 2).

    ``flock`` on ``run_dir/.lock``, which the kernel releases when its holder dies, so a killed
    run never blocks the next. The holder's pid is written into the file for the error message.
    Once the lock is held, temp files left by a killed writer are removed. Nested holders in
    one process (a stage that converts its recipe first) share the lock. A directory made here
    that holds nothing but the lock when the stage ends (it failed before writing) is removed.
    A write refused by the storage while it is held tells the user to free space or give another
    ``run_dir`` (``nascli.atomic.elsewhere``).
    """
    run_dir = Path(run_dir)
    key = run_dir.resolve()
    if key in _held:
        _held[key] += 1
        try:
            yield run_dir
        finally:
            _held[key] -= 1
        return
    created = _make_run_dir(run_dir)
    try:
        with _open_lock(run_dir) as lock:
            _acquire(lock, run_dir)
            _held[key] = 1
            try:
                with elsewhere(ANOTHER_RUN_DIR):
                    remove_stale_temps(run_dir)
                    yield run_dir
            finally:
                del _held[key]
    finally:
        if created:
            _remove_if_only_lock(run_dir)


def _make_run_dir(run_dir: Path) -> bool:
    """Create ``run_dir`` if needed (True when it was made here); a path that cannot be one is bad input."""
    if run_dir.is_dir():
        return False
    if run_dir.exists():
        raise UserInputError(f"run_dir: {run_dir} is a file, not a directory")
    try:
        run_dir.mkdir(parents=True)
    except FileExistsError:  # made by another process meanwhile
        return False
    except OSError as exc:
        if (refused := storage_error(exc, run_dir, ANOTHER_RUN_DIR)) is not None:
            raise refused from exc  # a full disk is a runtime failure (exit 1), not bad input
        raise UserInputError(f"run_dir: cannot create {run_dir} ({exc.strerror})") from exc
    return True


def _open_lock(run_dir: Path) -> Any:
    """``run_dir/.lock`` open for appending (made if needed); a full disk is one line naming it.

    Unbuffered: a pid that cannot be written fails at its write, not again when the file closes.
    """
    with writing(run_dir / LOCK_FILE, ANOTHER_RUN_DIR):
        return open(run_dir / LOCK_FILE, "a+b", buffering=0)


def _remove_if_only_lock(run_dir: Path) -> None:
    """Remove a run directory a failed stage made and left with nothing in it but its lock."""
    if {p.name for p in run_dir.iterdir()} <= {LOCK_FILE}:
        (run_dir / LOCK_FILE).unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # another process wrote there meanwhile: keep it
            run_dir.rmdir()


def _acquire(lock: Any, run_dir: Path) -> None:
    """Take the lock without waiting, or fail naming its holder; record this process as holder."""
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().decode(errors="replace").strip() or "unknown"
        raise UserInputError(
            f"{run_dir}: in use by another nascli run (pid {holder}); wait for it to end or use another run_dir"
        ) from None
    # the pid is only for the message above, but a disk too full for it is better said now than
    # at the stage's first checkpoint, hours later
    with writing(run_dir / LOCK_FILE, ANOTHER_RUN_DIR):
        lock.seek(0)
        lock.truncate()
        lock.write(str(os.getpid()).encode())
