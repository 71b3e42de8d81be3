"""Process-level tuning applied once at start-up by the CLI and the benchmarks."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4
# 1 GiB keeps every activation of a 512 px window (~200 MB) out of mmap; setting it also stops glibc's
# dynamic threshold, which would otherwise keep sending blocks above 32 MiB to mmap.
_MMAP_THRESHOLD = 1 << 30
# -1 reaches glibc as SIZE_MAX (the int is widened to size_t): freed memory is never handed back mid-run.
# INT_MAX is not enough: U-TAE at 256 px frees > 2 GiB at once, and re-faulted it on every call.
_TRIM_THRESHOLD = -1
ENV_SWITCH = "CROPMAP_MALLOC_TUNING"  # "0" turns the tuning off (to measure it, or on a foreign libc)
_tuned = False  # set by tune_allocator when glibc took the settings


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """The C library, looked up once (find_library runs ldconfig: ~2.5 ms, and trim_heap runs per block)."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def tune_allocator() -> bool:
    """Keep large freed blocks in glibc's heap instead of unmapping them.

    PyTorch's big temporaries otherwise go to mmap/munmap on every call, and each new mapping is
    faulted in page by page: on these machines 30-50 % of CPU time went to those page faults, and
    inference ran ~2.5x slower. Returns whether the settings were applied: False off glibc (a no-op
    there), or when ``CROPMAP_MALLOC_TUNING=0``. Peak memory is unchanged; the process keeps it until exit.
    """
    if os.environ.get(ENV_SWITCH, "1").strip() == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = _libc().mallopt
    except AttributeError:  # no C library found, or musl and other libcs, which have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # no mmap at all: U-TAE at 256 px still faulted 1.4 M pages a call on its > 1 GiB temporaries
    global _tuned
    _tuned = (mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD) == 1 and mallopt(_M_MMAP_MAX, 0) == 1
              and mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD) == 1)
    return _tuned


def heap_tuned() -> bool:
    """Whether :func:`tune_allocator` took effect in this process (freed memory is then kept until trimmed)."""
    return _tuned


def trim_heap() -> bool:
    """Hand the heap's free memory back to the system now (glibc ``malloc_trim``): with the tuning above
    nothing is returned otherwise, so a long-lived process that measures per-task peak memory (the
    benchmarks) calls this between tasks. Returns whether anything was released."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return bool(_libc().malloc_trim(0))
    except AttributeError:
        return False
