"""Freed tensors go back to the operating system: the ``nascli`` process fixes glibc's mmap threshold.

glibc serves an allocation below its mmap threshold from heap arenas, which keep what is freed
for reuse, and it raises that threshold (up to 32 MB) each time a larger block is freed. The
forward passes of a 1 B language model free temporaries of 8 to 65 MB per layer, so after a few
batches the arenas held 0.9 GB of freed activations above the 2.2 GB of weights
(``scripts/bench_llm_scale.py``, the search stage's importance pass; docs/benchmarks.md). With the
threshold fixed at 1 MB every larger tensor is its own mapping, unmapped when freed.

Only the command does this: a library leaves the allocator of its caller's process alone.
"""

from __future__ import annotations

import ctypes
import sys

_M_MMAP_THRESHOLD = -3  # mallopt's parameter, from glibc's malloc.h
THRESHOLD = 1 << 20


def return_freed_memory_to_os(threshold: int = THRESHOLD) -> bool:
    """Serve allocations of ``threshold`` bytes or more by mmap from now on; whether glibc took it."""
    if not sys.platform.startswith("linux"):
        return False
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    return mallopt is not None and mallopt(_M_MMAP_THRESHOLD, threshold) == 1
