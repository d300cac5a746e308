"""Files written whole or not at all: a temp file next to the target, flushed, then renamed over it.

A reader (or the next stage) therefore sees the old file or the new one, never half of one,
whatever happens mid-write: a full disk, a file-size limit, a crash, a SIGKILL. Every file
nascli writes during a stage goes through here (a directory through ``atomic_directory``, the
metrics log through ``atomic_append``), so the storage refusing a write (``ENOSPC``,
``EDQUOT``, ``EFBIG``) is always the same one line, a ``StorageError`` naming the file and what
to do (exit 1), however deep in torch, numpy, matplotlib, safetensors or transformers it came.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Any, BinaryIO

from nascli.errors import StorageError

#: the names of temp files; whatever matches in a run directory no nascli process holds open
#: once its lock is ours, so it is left by a killed writer (see nascli.stages.rundir)
TEMP_GLOB = ".*.tmp"

#: the errors by which the storage refuses a write: what happened, and the first thing to do
REFUSALS = {
    errno.ENOSPC: ("no space left on device", "free space on that disk"),
    errno.EDQUOT: ("disk quota exceeded", "free space within the quota"),
    errno.EFBIG: ("file too large", "raise the file-size limit (ulimit -f)"),
}

#: an OS error in the text of another exception: Rust's io::Error, which safetensors and tokenizers
#: raise as their own types ("No space left on device (os error 28)", "Os { code: 28"), and the
#: errors of each file that ``shutil.copytree`` gathers into one ``shutil.Error`` ("[Errno 28] ...")
_OS_ERROR_TEXT = re.compile(r"os error (\d+)|Os \{ code: (\d+)|\[Errno (\d+)\]")

_ELSEWHERE: ContextVar[str] = ContextVar("elsewhere", default="write it elsewhere")


@contextlib.contextmanager
def elsewhere(hint: str) -> Iterator[None]:
    """Within it, a refused write tells the user ``hint``: how to send this output to another disk.

    Only the caller knows that (``run_dir=DIR`` for a stage, ``--output`` for an export), not
    the writer deep below it; a writer's explicit ``hint`` (a cache's ``NASCLI_CACHE_DIR``) wins.
    """
    token = _ELSEWHERE.set(hint)
    try:
        yield
    finally:
        _ELSEWHERE.reset(token)


def refused_errno(exc: BaseException) -> int | None:
    """The ``REFUSALS`` errno behind ``exc`` or the exceptions it was raised from, else None.

    Libraries rewrap the OS error of a failed write: torch's zip writer as a RuntimeError that has
    lost it (``atomic_write`` keeps it from the file object), safetensors and tokenizers as their
    own types with the errno only in the text.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in REFUSALS:
            return current.errno
        for match in _OS_ERROR_TEXT.finditer(str(current)):
            number = int(next(group for group in match.groups() if group))
            if number in REFUSALS:
                return number
        current = current.__cause__ or current.__context__
    return None


def storage_error(exc: BaseException, path: str | os.PathLike | None, hint: str | None = None) -> StorageError | None:
    """The one-line error for ``exc`` if the storage refused a write of ``path``, else None."""
    if isinstance(exc, StorageError):
        return exc
    number = refused_errno(exc)
    if number is None:
        return None
    what, first = REFUSALS[number]
    where = f" while writing {path}" if path is not None else ""
    return StorageError(f"{what}{where}: {first} or {hint or _ELSEWHERE.get()}", path, number)


@contextlib.contextmanager
def writing(path: str | os.PathLike, hint: str | None = None) -> Iterator[None]:
    """Within it, a write the storage refuses raises a ``StorageError`` naming ``path``.

    ``path`` is what the user will look for (the target, not its temp file); a ``StorageError``
    raised by a nested ``writing`` keeps the file it names. ``hint``: see ``elsewhere``.
    """
    try:
        yield
    except StorageError:
        raise
    except Exception as exc:
        error = storage_error(exc, path, hint)
        if error is None:
            raise
        raise error from exc


def atomic_write(
    path: str | os.PathLike,
    write: Callable[[BinaryIO], None],
    check: Callable[[Path], None] | None = None,
    hint: str | None = None,
) -> Path:
    """Call ``write`` on a temp file next to ``path``, fsync it, then rename it over ``path``.

    The temp file is created with mode 0666 less the umask, as ``open`` would create ``path``
    (``mkstemp``'s 0600 would make checkpoints unreadable to the group). ``check`` reads the
    finished temp file (an export loaded back) before it replaces anything: what fails it never
    takes the place of an earlier good file. A refused write (``REFUSALS``) is a ``StorageError``
    naming ``path`` (exit 1); whatever fails, the previous ``path`` is left as it was and the
    temp file is removed.
    """
    path = Path(path)
    tmp = _temp_name(path)
    try:
        with writing(path, hint):
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            with os.fdopen(fd, "wb") as f:
                _write_keeping_os_error(write, f)
                f.flush()
                os.fsync(f.fileno())
        if check is not None:
            check(tmp)
        with writing(path, hint):
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str, hint: str | None = None) -> Path:
    """``atomic_write`` of a UTF-8 text."""
    return atomic_write(path, lambda f: f.write(text.encode()), hint=hint)


def atomic_directory(
    path: str | os.PathLike,
    write: Callable[[Path], None],
    check: Callable[[Path], None] | None = None,
    hint: str | None = None,
) -> Path:
    """Call ``write`` on an empty temp directory next to ``path``, fsync what it wrote, then put
    it in place of ``path`` (replaced whole).

    For libraries that write a folder of files (transformers' ``save_pretrained``). ``check``,
    refusals and clean-up as in ``atomic_write``; the refused file is reported as ``path``, the
    directory the user asked for. An earlier ``path`` is renamed aside until the new one is in
    its place, and put back if that fails (or, after a kill, by ``remove_stale_temps``).
    """
    path = Path(path)
    tag = secrets.token_hex(4)
    tmp, old = path.with_name(f".{path.name}.{tag}.tmp"), path.with_name(f".{path.name}.{tag}.old.tmp")
    try:
        with writing(path, hint):
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.mkdir()
            write(tmp)
            _fsync_tree(tmp)
        if check is not None:
            check(tmp)
        with writing(path, hint):
            if path.exists() or path.is_symlink():
                path.rename(old)
            try:
                tmp.rename(path)
            except BaseException:
                if old.exists() or old.is_symlink():
                    old.rename(path)
                raise
        _remove(old)  # only once the new one is in place: a failed swap keeps the earlier one
    finally:
        _remove(tmp)
    return path


def atomic_append(path: str | os.PathLike, data: bytes, hint: str | None = None) -> Path:
    """Append ``data`` to ``path`` whole or not at all, in place.

    A log is appended to rather than replaced, so ``tail -f`` keeps following it; a write that
    fails part-way (a full disk, a file-size limit, an interrupt) is cut off again, so the log
    never ends in half a record. Refusals as in ``atomic_write``.
    """
    path = Path(path)
    with writing(path, hint):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            size = os.fstat(fd).st_size
            try:
                rest = memoryview(data)
                while rest:
                    rest = rest[os.write(fd, rest) :]
                os.fsync(fd)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)
                raise
        finally:
            os.close(fd)
    return path


def remove_stale_temps(directory: Path) -> list[Path]:
    """Delete the temp files and folders (a tokenizer or an hf export is written as a folder renamed
    whole) that killed writers left in ``directory``; the caller must hold its lock. An earlier
    directory that ``atomic_directory`` had moved aside when it was killed, before the new one took
    its place, is put back instead."""
    stale = sorted(directory.glob(TEMP_GLOB))
    for path in stale:
        aside = _ASIDE.fullmatch(path.name)
        target = directory / aside.group(1) if aside else None
        if target is not None and not (target.exists() or target.is_symlink()):
            path.rename(target)  # killed between moving it aside and putting the new one in: the earlier one is back
        else:
            _remove(path)
    return stale


#: an earlier directory ``atomic_directory`` moved aside for its new one: ``.NAME.TAG.old.tmp``
_ASIDE = re.compile(r"\.(.+)\.[0-9a-f]{8}\.old\.tmp")


def _temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _fsync_tree(directory: Path) -> None:
    """fsync every file under ``directory`` and the folders themselves: on some file systems
    (NFS, quotas) a refused write shows only here, and the rename must not outrun the data."""
    for folder, _, files in os.walk(directory):
        for path in [*(os.path.join(folder, name) for name in files), folder]:
            try:
                fd = os.open(path, os.O_RDONLY)
            except PermissionError:  # a file its writer made unreadable: nothing to flush that we may read
                continue
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def _write_keeping_os_error(write: Callable[[BinaryIO], None], f: BinaryIO) -> None:
    """Call ``write`` on ``f`` through ``_ErrorKeepingFile``; the OSError the file raised wins over
    whatever a library turned it into (torch's zip writer reports "file write failed" without it)."""
    kept = _ErrorKeepingFile(f)
    try:
        write(kept)  # type: ignore[arg-type]
    except Exception:
        if kept.error is not None:
            raise kept.error from None
        raise


class _ErrorKeepingFile(io.RawIOBase):
    """A writable (and, like its target, seekable) file that remembers the OSError its target raised.

    It has no ``fileno``: a library then writes through it (PIL, for one, would write to the file
    descriptor instead), so every error passes here.
    """

    def __init__(self, target: BinaryIO) -> None:
        super().__init__()
        self.target, self.error = target, None

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self.target.seekable()

    def write(self, data: Any) -> int:
        return self._kept(self.target.write, data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._kept(self.target.seek, offset, whence)

    def tell(self) -> int:
        return self._kept(self.target.tell)

    def flush(self) -> None:
        self._kept(self.target.flush)

    def close(self) -> None:
        """Leaves the target alone: the writer flushes and closes it (when this wrapper is collected,
        IOBase's close would flush a target that may be closed by then)."""

    def _kept(self, call: Callable[..., Any], *args: Any) -> Any:
        try:
            return call(*args)
        except OSError as exc:
            self.error = exc
            raise
