"""Files written whole or not at all: a temp file next to the target, flushed, then renamed over it.

A reader (or the next stage) therefore sees the old file or the new one, never half of one,
whatever happens mid-write: a full disk, a crash, a SIGKILL.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from nascli.errors import NasCliError

#: the names of temp files; whatever matches in a run directory no nascli process holds open
#: once its lock is ours, so it is left by a killed writer (see nascli.stages.rundir)
TEMP_GLOB = ".*.tmp"


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write`` on a temp file next to ``path``, then rename it over ``path``.

    The temp file is created with mode 0666 less the umask, as ``open`` would create ``path``
    (``mkstemp``'s 0600 would make checkpoints unreadable to the group). A full disk is one
    line naming the file (exit 1) and leaves the previous ``path`` as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno == errno.ENOSPC:
            raise NasCliError(f"no space left writing {path}") from exc
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """``atomic_write`` of a UTF-8 text."""
    return atomic_write(path, lambda f: f.write(text.encode()))


def remove_stale_temps(directory: Path) -> list[Path]:
    """Delete the temp files and folders (a tokenizer is pinned as a folder renamed whole) that killed
    writers left in ``directory``; the caller must hold its lock."""
    stale = sorted(directory.glob(TEMP_GLOB))
    for path in stale:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return stale
