"""The allocator tuning: applied on glibc, switched off by its environment variable, and it does stop
the page faults of repeatedly allocated large arrays (measured in a fresh process each time)."""

import os
import subprocess
import sys

import pytest

from cropmap.runtime import ENV_SWITCH, heap_tuned, tune_allocator

# 8 malloc'd, written and freed 48 MiB blocks, as PyTorch does with a large temporary (above the 32 MiB
# that glibc's own threshold can reach): ~12k page faults each unless the heap keeps the block.
# Not numpy: it asks for huge pages, which hides the faults.
_PROBE = """
import ctypes, ctypes.util, resource
from cropmap.runtime import tune_allocator
applied = tune_allocator()
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype, libc.malloc.argtypes, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_size_t], [ctypes.c_void_p]
def touch():
    p = libc.malloc(48 << 20); ctypes.memset(p, 1, 48 << 20); libc.free(p)
touch()  # the first allocation faults in either case
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(8):
    touch()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
"""


def _probe(switch: str) -> tuple[bool, int]:
    env = {**os.environ, ENV_SWITCH: switch}
    out = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, check=True)
    applied, faults = out.stdout.split()
    return applied == "True", int(faults)


def test_returns_a_bool_and_can_be_called_twice():
    first = tune_allocator()
    assert isinstance(first, bool) and tune_allocator() == first
    assert heap_tuned() is first  # what streamed prediction asks before trimming after each block


def test_environment_switch_turns_it_off(monkeypatch):
    monkeypatch.setenv(ENV_SWITCH, "0")
    assert tune_allocator() is False


@pytest.mark.skipif(not sys.platform.startswith("linux") or not os.confstr("CS_GNU_LIBC_VERSION"),
                    reason="mallopt tuning is glibc-only")
def test_large_temporaries_stop_faulting():
    tuned_applied, tuned = _probe("1")
    off_applied, off = _probe("0")
    assert tuned_applied and not off_applied
    assert off > 8 * 8_000  # each 48 MiB array mapped and faulted in anew
    assert tuned < 1_000  # the freed block is reused
