"""Process-level tuning applied once at start-up by the CLI and the benchmarks."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def tune_allocator() -> bool:
    """Keep large freed blocks in glibc's heap instead of unmapping them.

    PyTorch's big temporaries otherwise go to mmap/munmap on every step, and on these machines 30-50 %
    of CPU time went to the resulting page faults. Returns whether the settings were applied (glibc only).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30) == 1
        return ok and libc.mallopt(_M_TRIM_THRESHOLD, 1 << 31 - 1) == 1
    except (OSError, AttributeError):
        return False
