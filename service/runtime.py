"""Process-wide tuning for the service and CLI, applied once at start-up.

glibc's malloc returns freed memory at the top of the heap to the system as soon as it passes
a (dynamic) trim threshold, and serves large blocks with fresh mmaps. numpy's temporaries in
the planner (tens to hundreds of kilobytes, allocated and freed many times per plan) then pay
page faults on every operation: the 10k-row plan measured about twice as slow. Keeping freed
memory in the process removes that. Other C libraries are left alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3

TRIM_THRESHOLD = 256 * 1024 * 1024
TOP_PAD = 16 * 1024 * 1024
MMAP_THRESHOLD = 32 * 1024 * 1024


def tune_allocator() -> bool:
    """Keep freed memory in the process (glibc only). Returns whether anything was set."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    ok &= mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    ok &= mallopt(M_TOP_PAD, TOP_PAD)
    return bool(ok)
