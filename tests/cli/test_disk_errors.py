"""A full disk (ENOSPC) or a file-size limit (EFBIG) during a stage, through the CLI on the digits recipe:
one line naming the file and what to do, exit 1, no traceback, no temp file, earlier results intact.

A full disk is the kernel's ENOSPC: the file's temp file is made, but written to ``/dev/full``. A
file-size limit is a real ``ulimit -f`` on a ``python -m nascli`` process, with SIGXFSZ ignored so the
write fails with EFBIG (as in a shell that ignores it) instead of killing the process.
"""

import errno
import hashlib
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nascli.cli.app import app
from nascli.opt.checkpoint import read_checkpoint
from tests.stages.common import RECIPE, convert
from tests.test_atomic import disk_full_for

runner = CliRunner()
SEARCH = ["search.population=4", "search.parents=2", "search.iterations=1", "search.bn_calib_batches=1"]
LIMIT = 128 * 1024  # the ulimit -f: below model.pt2 (about 410 KB)
RUN_DIR_HINT = "give another run_dir=DIR"


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A digits run directory holding a converted model, a search and its pt2 export."""
    run = tmp_path_factory.mktemp("disk") / "run"
    convert(run)
    for args in (["search", str(run / "convert.pt"), *SEARCH], ["export", str(run / "search.pt")]):
        result = runner.invoke(app, ["-q", *args])
        assert result.exit_code == 0, result.stderr
    return run


def contents(run: Path) -> dict[str, str]:
    """Every file of ``run`` but the lock (a stage records its pid there), by content hash."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in run.iterdir() if p.name != ".lock"}


COMMANDS = {"search": ["search", "{run}/convert.pt", *SEARCH], "export": ["export", "{run}/search.pt"]}


@pytest.mark.parametrize(
    "command, target, hint",
    [
        ("search", "search.pt", RUN_DIR_HINT),
        ("search", "pareto.png", RUN_DIR_HINT),
        ("export", "model.pt2", "give another --output"),
    ],
)
def test_a_full_disk_is_one_line_naming_the_file(run, monkeypatch, command, target, hint):
    before = contents(run)
    with disk_full_for(target, monkeypatch):
        result = runner.invoke(app, ["-q", *(a.format(run=run) for a in COMMANDS[command])])
    assert isinstance(result.exception, SystemExit), result.exception  # no uncaught exception, so no traceback
    assert result.exit_code == 1 and result.stdout == ""
    line = f"error: no space left on device while writing {run / target}: free space on that disk or {hint}"
    assert result.stderr == line + "\n"
    after = contents(run)
    assert after.keys() == before.keys()  # no temp file, nothing half-written under another name
    assert after[target] == before[target]
    rewritten = {name for name in before if after[name] != before[name]}  # whole new files the stage wrote first
    assert rewritten <= {"search.pt", "search.json"} and (target != "search.pt" or not rewritten)
    if rewritten:
        read_checkpoint(run / "search.pt")  # whole: its checksum verifies


def _limited() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def test_a_file_size_limit_is_one_line_naming_the_file(run):
    """``export``: torch's pt2 writer, which given a path reports any failed write as "file write failed"."""
    before = contents(run)
    done = subprocess.run(
        [sys.executable, "-m", "nascli", "-q", "export", str(run / "search.pt")],
        capture_output=True,
        text=True,
        preexec_fn=_limited,
    )
    assert done.returncode == 1 and done.stdout == ""
    line = f"error: file too large while writing {run / 'model.pt2'}: raise the file-size limit (ulimit -f)"
    assert done.stderr == line + " or give another --output\n"
    assert contents(run) == before  # the earlier model.pt2 among them; no temp file


def test_a_refused_write_of_a_librarys_own_is_the_same_line(tmp_path, monkeypatch):
    """The CLI's backstop for a write that did not go through nascli.atomic: the file its OSError names."""

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "cache.bin"))

    monkeypatch.setattr("nascli.stages.convert.write_checkpoint", full)
    result = runner.invoke(app, ["-q", "convert", RECIPE, f"run_dir={tmp_path / 'run'}", "model.kwargs.width=8"])
    assert isinstance(result.exception, SystemExit) and result.exit_code == 1
    line = f"error: no space left on device while writing {tmp_path / 'cache.bin'}: free space on that disk"
    assert result.stderr == line + " or write it elsewhere\n"
