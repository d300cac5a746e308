"""The nascli process hands freed tensors back to the operating system (nascli/cli/process_memory.py)."""

import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's allocator"
)

# Frees a 28 MB block (glibc then raises its mmap threshold to 28 MB), then holds and frees two
# of 20 MB; prints the resident bytes they leave behind. Python's bytearrays take their memory
# from malloc as torch's CPU tensors do, without the seconds of importing torch.
RETAINED = """
import sys
from nascli.cli.process_memory import return_freed_memory_to_os
if sys.argv[1] == "fixed":
    assert return_freed_memory_to_os()
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096
big = bytearray(28 << 20); del big
before = rss()
held = [bytearray(20 << 20) for _ in range(2)]
del held
print(rss() - before)
"""


def _retained(setting: str) -> int:
    done = subprocess.run([sys.executable, "-c", RETAINED, setting], capture_output=True, text=True, check=True)
    return int(done.stdout)


def test_freed_blocks_leave_the_process_once_the_threshold_is_fixed():
    assert _retained("default") > 35e6  # glibc's own choice keeps both in its heap
    assert _retained("fixed") < 5e6


def test_the_command_fixes_the_threshold(monkeypatch):
    from nascli.cli import app as cli_app

    called = []
    monkeypatch.setattr(cli_app, "return_freed_memory_to_os", lambda: called.append(True))
    monkeypatch.setattr(sys, "argv", ["nascli", "--version"])
    with pytest.raises(SystemExit):
        cli_app.main()
    assert called == [True]
