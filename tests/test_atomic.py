"""Whole files or none: a write the storage refuses (a full disk, a file-size limit) is one error naming the
file, and leaves the earlier file as it was and no temp file behind.

A full disk is the kernel's own ENOSPC: the temp file is made, but its writes go to ``/dev/full``. A
file-size limit is a real ``RLIMIT_FSIZE``, lowered for the test only (Python ignores SIGXFSZ, so the
write fails with EFBIG instead of killing the process).
"""

import contextlib
import errno
import os
import pickle
import resource
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from nascli.atomic import (
    atomic_append,
    atomic_directory,
    atomic_write,
    elsewhere,
    refused_errno,
    remove_stale_temps,
    writing,
)
from nascli.errors import StorageError

LIMIT = 64 * 1024  # bytes a file may grow to under ``file_size_limit``


@contextlib.contextmanager
def file_size_limit(limit: int = LIMIT):
    """``ulimit -f`` for this process while the block runs."""
    assert signal.getsignal(signal.SIGXFSZ) == signal.SIG_IGN  # else the kernel's SIGXFSZ would kill the tests
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


@contextlib.contextmanager
def disk_full_for(name: str, monkeypatch):
    """A full disk for the file ``name``: its temp file is created, but written to /dev/full (ENOSPC)."""
    real_open = os.open

    def open_(path, flags, mode=0o777, *, dir_fd=None):
        fd = real_open(path, flags, mode, dir_fd=dir_fd)
        if os.path.basename(path).startswith(f".{name}.") and flags & (os.O_WRONLY | os.O_RDWR):
            os.close(fd)
            return real_open("/dev/full", os.O_WRONLY)
        return fd

    with monkeypatch.context() as patched:
        patched.setattr(os, "open", open_)
        yield


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_a_full_disk_is_one_line_naming_the_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    path = atomic_write(tmp_path / "c.pt", lambda f: torch.save({"n": torch.zeros(3)}, f))
    before = path.read_bytes()
    with disk_full_for("c.pt", monkeypatch), pytest.raises(StorageError) as caught:
        atomic_write(path, lambda f: torch.save({"n": torch.zeros(100_000)}, f))
    assert str(caught.value) == f"no space left on device while writing {path}: free space on that disk or " + (
        "write it elsewhere"
    )
    assert caught.value.exit_code == 1 and caught.value.errno == errno.ENOSPC
    assert path.read_bytes() == before and names(tmp_path) == ["c.pt"]


def test_a_file_size_limit_is_one_line_naming_the_file_and_keeps_the_old_one(tmp_path):
    path = atomic_write(tmp_path / "tokens.npz", lambda f: np.savez(f, ids=np.arange(10)))
    before = path.read_bytes()
    with file_size_limit(), pytest.raises(StorageError) as caught:
        atomic_write(path, lambda f: np.savez(f, ids=np.arange(100_000)), hint="set NASCLI_CACHE_DIR to another disk")
    assert str(caught.value) == (
        f"file too large while writing {path}: raise the file-size limit (ulimit -f)"
        " or set NASCLI_CACHE_DIR to another disk"
    )
    assert caught.value.errno == errno.EFBIG
    assert path.read_bytes() == before and names(tmp_path) == ["tokens.npz"]


def test_torchs_rewrapped_write_error_is_still_the_storage_error(tmp_path):
    """torch's zip writer turns the file's OSError into "file write failed"; the file's own error wins."""
    with file_size_limit(), elsewhere("give another run_dir=DIR"), pytest.raises(StorageError, match="run_dir=DIR$"):
        atomic_write(tmp_path / "big.pt", lambda f: torch.save(torch.zeros(100_000), f))
    assert names(tmp_path) == []


def test_a_refused_directory_keeps_the_earlier_one_whole(tmp_path):
    from safetensors.torch import save_file

    def model(size: int):
        def write(folder: Path) -> None:
            (folder / "config.json").write_text(f'{{"size": {size}}}')
            save_file({"w": torch.zeros(size)}, str(folder / "model.safetensors"))  # Rust: errno only in its text

        return write

    directory = atomic_directory(tmp_path / "model", model(10))
    before = {p.name: p.read_bytes() for p in directory.iterdir()}
    with file_size_limit(), pytest.raises(StorageError, match=f"^file too large while writing {directory}: "):
        atomic_directory(directory, model(100_000))
    assert {p.name: p.read_bytes() for p in directory.iterdir()} == before and names(tmp_path) == ["model"]
    atomic_directory(directory, model(20))  # replaced whole, and the old one removed
    assert (directory / "config.json").read_text() == '{"size": 20}' and names(tmp_path) == ["model"]


def test_a_failed_check_keeps_the_earlier_file_and_directory(tmp_path):
    def refuse(tmp: Path) -> None:
        assert tmp.exists()
        raise ValueError("differs")

    path = atomic_write(tmp_path / "model.pt2", lambda f: f.write(b"good"))
    directory = atomic_directory(tmp_path / "hf", lambda folder: (folder / "a").write_bytes(b"good"))
    with pytest.raises(ValueError, match="differs"):
        atomic_write(path, lambda f: f.write(b"bad"), check=refuse)
    with pytest.raises(ValueError, match="differs"):
        atomic_directory(directory, lambda folder: (folder / "a").write_bytes(b"bad"), check=refuse)
    assert path.read_bytes() == b"good" and (directory / "a").read_bytes() == b"good"
    assert names(tmp_path) == ["hf", "model.pt2"]


def test_an_append_cut_short_leaves_no_half_record(tmp_path):
    log = atomic_append(tmp_path / "metrics.jsonl", b'{"epoch": 1}\n')
    with file_size_limit(), pytest.raises(StorageError, match=f"^file too large while writing {log}: "):
        atomic_append(log, b'{"epoch": 2, "pad": "' + b"x" * LIMIT + b'"}\n')  # the kernel takes part of it
    assert log.read_bytes() == b'{"epoch": 1}\n'
    atomic_append(log, b'{"epoch": 3}\n')
    assert log.read_bytes() == b'{"epoch": 1}\n{"epoch": 3}\n'


def test_the_errno_is_found_however_a_library_wrapped_it():
    assert refused_errno(OSError(errno.ENOSPC, "No space left on device")) == errno.ENOSPC
    rust = 'Error while serializing: IoError(Os { code: 27, kind: FileTooLarge, message: "File too large" })'
    assert refused_errno(RuntimeError(rust)) == errno.EFBIG
    assert refused_errno(Exception("No space left on device (os error 28)")) == errno.ENOSPC
    copied = shutil.Error([("a", "b", "[Errno 28] No space left on device: 'b'")])  # what copytree raises
    assert refused_errno(copied) == errno.ENOSPC
    try:
        try:
            raise OSError(errno.EDQUOT, "Disk quota exceeded")
        except OSError as exc:
            raise RuntimeError("file write failed") from exc
    except RuntimeError as wrapped:
        assert refused_errno(wrapped) == errno.EDQUOT
    assert refused_errno(OSError(errno.EACCES, "Permission denied")) is None
    assert refused_errno(FileNotFoundError(errno.ENOENT, "No such file")) is None


def test_other_errors_pass_unchanged_and_the_innermost_file_is_named(tmp_path):
    with pytest.raises(PermissionError), writing(tmp_path / "a"):
        raise PermissionError(errno.EACCES, "Permission denied")
    with pytest.raises(StorageError, match="writing /inner"), writing(tmp_path / "outer"), writing("/inner"):
        raise OSError(errno.ENOSPC, "No space left on device")


def test_temp_directories_of_a_killed_writer_are_stale(tmp_path):
    (tmp_path / ".model.0a1b2c3d.tmp").mkdir()
    (tmp_path / ".model.0a1b2c3d.old.tmp").mkdir()
    (tmp_path / "model").mkdir()
    remove_stale_temps(tmp_path)
    assert names(tmp_path) == ["model"]


def test_an_earlier_directory_moved_aside_by_a_killed_writer_is_put_back(tmp_path):
    aside = tmp_path / ".model.0a1b2c3d.old.tmp"
    aside.mkdir()
    (aside / "config.json").write_text("{}")
    (tmp_path / ".model.0a1b2c3d.tmp").mkdir()  # the new one, not yet in place
    remove_stale_temps(tmp_path)
    assert names(tmp_path) == ["model"]
    assert (tmp_path / "model" / "config.json").read_text() == "{}"


def test_the_storage_error_survives_pickling():
    error = pickle.loads(pickle.dumps(StorageError("no space left on device while writing x", "x", errno.ENOSPC)))
    assert (str(error), error.path, error.errno) == ("no space left on device while writing x", "x", errno.ENOSPC)
