"""Keep the lock's resident memory to what it uses: glibc's malloc told not to hold freed memory.

Why: glibc serves a large block (over its mmap threshold, 128 KiB to start) with a fresh mapping and gives it
back when freed, but each time such a block is freed it raises that threshold to the block's size (up to 32
MiB on 64-bit). After the first few frames, the frame loop's arrays (a 640x480 frame is 0.9 MB, a float
copy of it 3.7 MB) come from the heap instead, and what they leave free at its top stays resident unless it
exceeds the trim threshold, which rises with it. Fixing both thresholds stops that: the peak resident set of
`facelock run` (benchmarks/edge_targets.py, int8 bundle, 640x480 frames) fell from 153 to 130 MB. The cost
is a fresh mapping per large array, microseconds against a frame's milliseconds.

Off glibc (musl, macOS) there is nothing to set, and nothing is changed.
"""

from __future__ import annotations

import ctypes
import logging
import platform

log = logging.getLogger(__name__)

# glibc's <malloc.h> parameter numbers for mallopt().
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
THRESHOLD_BYTES = 128 * 1024  # glibc's own starting value for both


def bound_heap(threshold: int = THRESHOLD_BYTES) -> bool:
    """Fix glibc's mmap and trim thresholds at `threshold` bytes for the rest of the process; whether both
    were set (False off glibc)."""
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own C library
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    done = mallopt(M_MMAP_THRESHOLD, threshold) == 1 and mallopt(M_TRIM_THRESHOLD, threshold) == 1
    log.debug("malloc: mmap and trim thresholds %s at %d bytes", "fixed" if done else "NOT fixed", threshold)
    return done
