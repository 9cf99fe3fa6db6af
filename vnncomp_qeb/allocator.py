"""Keep numpy's large temporaries on the heap instead of fresh mmaps.

The bound computations allocate and free arrays of a few MB thousands of times a second. glibc
serves each with a new mmap (its threshold starts at 128 KB) and returns it at free, so every
array costs page faults: measured 12 ms per ACAS Xu box with the defaults, 6 ms with these
settings (``scripts/bench_dra.py``-style batches of 16–32 boxes). Only glibc has ``mallopt``;
elsewhere this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameter numbers (malloc.h)
MMAP_THRESHOLD = 32 * 2**20  # glibc's largest allowed value on 64-bit
TRIM_THRESHOLD = 256 * 2**20  # memory above this free at the top of the heap goes back


def tune() -> bool:
    """Raise glibc's mmap and trim thresholds for this process; True when applied."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
