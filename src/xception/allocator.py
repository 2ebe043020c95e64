"""Keep freed memory for reuse on glibc, instead of handing it back to the OS after every step.

glibc's malloc returns large freed blocks to the OS (``munmap``, heap trimming) and maps them
again on the next allocation, so every training step on CPU re-faults its activation memory page
by page, a sizeable share of the step's time on a small CPU (as measured: benchmarks/RESULTS.md,
"Figures moved out of code comments"; per step: "CPU training speed: this version against the
previous one (measured)", item 3). Raising
the mmap and trim thresholds (``mallopt``, what ``MALLOC_MMAP_THRESHOLD_`` and
``MALLOC_TRIM_THRESHOLD_`` set) keeps the memory in the process. Nothing computed changes; the
resident memory stays at the run's peak instead of shrinking between steps.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 2**20   # glibc's largest allowed value on 64-bit systems
TRIM_THRESHOLD = 2**30

_done: bool | None = None


def keep_freed_memory() -> bool:
    """Apply the thresholds once per process; True where it took effect (glibc on Linux)."""
    global _done
    if _done is None:
        _done = False
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                mallopt = libc.mallopt
            except (OSError, AttributeError):  # musl and other C libraries: leave them be
                return False
            mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
            _done = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
                mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _done
