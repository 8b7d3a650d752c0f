"""The lock's malloc settings (edge.service.heap): with them, arrays the size of a frame that the frame loop
frees go back to the system; without them glibc keeps them resident. Each case runs in a fresh interpreter,
since the settings are process-wide and `facelock` (imported by other tests) applies them."""

from __future__ import annotations

import platform
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                                reason="the malloc thresholds are glibc's (and RSS is read from /proc)")

CHILD = textwrap.dedent("""
    import sys
    if sys.argv[1] == "bound":
        from edge.service.heap import bound_heap
        assert bound_heap(), "bound_heap() did not set glibc's thresholds"
    elif sys.argv[1] == "facelock":
        import facelock  # what every `facelock` command imports first
    import numpy as np

    def rss_mib():
        return int(next(x for x in open("/proc/self/status") if x.startswith("VmRSS")).split()[1]) / 1024

    big = np.ones(8 * 2**20 // 8)
    del big  # freed: glibc raises its mmap threshold to 8 MiB unless it was fixed
    before = rss_mib()
    frames, kept = [], []
    for _ in range(10):  # 30 MiB of frame-sized arrays, each followed by a small one that stays
        frames.append(np.ones(3 * 2**20 // 8))
        kept.append(np.ones(1000))
    del frames
    print(rss_mib() - before)
""")


def held_mib(mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def test_freed_frame_sized_arrays_leave_the_process_only_with_the_thresholds_fixed():
    assert held_mib("plain") > 20  # glibc's default: the holes stay resident (the case the module is for)
    assert held_mib("bound") < 3
    assert held_mib("facelock") < 3  # importing the composition root applies it
