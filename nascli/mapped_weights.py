"""Weights read from memory-mapped files, moved into memory of their own so that freeing one frees it.

transformers maps each ``.safetensors`` file into the process once (copy-on-write) and gives every
tensor a piece of that one mapping, kept alive by every tensor of the file. A tensor freed later
then frees nothing: its pages stay resident until the last tensor of the file is gone. The stages
that shrink a model in place (an export of the active subnet, which copies each layer's slice and
drops the full tensor) therefore held the whole model and the subnet at once: 1.0 GB above the
2.2 GB of a 1.1 B model's weights (docs/benchmarks.md, ``scripts/bench_llm_scale.py``).

``own_mapped_weights`` copies each tensor that lies in such a mapping into an allocation of its
own (one tensor at a time) and tells the kernel it no longer needs the mapped pages
(``madvise(MADV_DONTNEED)``). On a private file mapping that only drops the process's copy of
those pages: anything still reading them reads the file again, which holds the same bytes as long
as nothing was written to the mapping, so it is done right after loading, before any weight
changes. Only pages of a mapping of the named weight files are released, never other memory.
"""

from __future__ import annotations

import ctypes
import mmap
import sys
from pathlib import Path

import torch
from torch import nn

__all__ = ["own_mapped_weights"]

_MADV_DONTNEED = 4  # from Linux's mman.h


def own_mapped_weights(model: nn.Module, files: list[Path]) -> int:
    """Give every parameter and buffer of ``model`` that lies in a mapping of ``files`` memory of its
    own, releasing the mapped pages; the bytes moved (0 where the platform maps nothing so)."""
    if not sys.platform.startswith("linux"):
        return 0
    mappings = _file_mappings({str(Path(f).resolve()) for f in files})
    if not mappings:
        return 0
    madvise = ctypes.CDLL(None, use_errno=True).madvise
    madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    moved: dict[int, torch.Tensor] = {}  # id of a tensor -> its copy: tied weights stay one tensor
    total = 0
    for module in model.modules():
        for table in (module._parameters, module._buffers):
            for name, tensor in table.items():
                if tensor is None or tensor.device.type != "cpu" or not _inside(tensor, mappings):
                    continue
                if id(tensor) not in moved:
                    copy = tensor.detach().clone()
                    if isinstance(tensor, nn.Parameter):
                        copy = nn.Parameter(copy, requires_grad=tensor.requires_grad)
                    moved[id(tensor)] = copy
                    total += _release(tensor, madvise)
                table[name] = moved[id(tensor)]
    return total


def _file_mappings(paths: set[str]) -> list[tuple[int, int]]:
    """(start, end) address ranges of this process's mappings of ``paths``."""
    ranges = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            if len(fields) == 6 and fields[5].strip() in paths:
                start, end = (int(x, 16) for x in fields[0].split("-"))
                ranges.append((start, end))
    return ranges


def _inside(tensor: torch.Tensor, mappings: list[tuple[int, int]]) -> bool:
    storage = tensor.untyped_storage()
    start = storage.data_ptr()
    return storage.nbytes() > 0 and any(lo <= start and start + storage.nbytes() <= hi for lo, hi in mappings)


def _release(tensor: torch.Tensor, madvise: ctypes._CFuncPtr) -> int:
    """Drop the whole pages of ``tensor``'s storage from the process; the bytes it held."""
    storage = tensor.untyped_storage()
    start, size, page = storage.data_ptr(), storage.nbytes(), mmap.PAGESIZE
    first = -(-start // page) * page  # pages shared with a neighbouring tensor are kept
    last = (start + size) // page * page
    if last > first:
        madvise(first, last - first, _MADV_DONTNEED)
    return size
