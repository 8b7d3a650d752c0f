"""Small helpers every section of `facelock bench` uses: progress messages and bars, latency statistics,
matplotlib without a display."""

from __future__ import annotations

import sys

import numpy as np

from convert.progress import bar as progress_bar


def say(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def bar(items, desc: str, enabled: bool = True, total: int | None = None):
    """A progress bar over `items`, on a terminal only (convert.progress)."""
    return progress_bar(items, enabled=enabled, desc=desc, total=total, leave=False, dynamic_ncols=True)


def stats(ms: list[float]) -> dict:
    """Median, 95th percentile and count of a list of milliseconds (None for an empty list)."""
    a = np.asarray(ms, dtype=np.float64)
    if not len(a):
        return {"median": None, "p95": None, "n": 0}
    return {"median": float(np.median(a)), "p95": float(np.percentile(a, 95)), "n": len(a)}


def pyplot():
    """matplotlib.pyplot on the Agg backend (PNG files, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
