"""Median time of one `Matcher.match` against 10 ... 100,000 templates (random unit 128-d embeddings,
5 templates per person, one person in ten with 2 negative examples), with the default scoring (einsum:
numpy's own single-threaded loops) and with BLAS (`MatchOptions.use_blas`; its thread count follows
OPENBLAS_NUM_THREADS). Target: 10,000 templates <= 1 ms.

    python benchmarks/match_bench.py [--repeat 300] [--sizes 10,100,1000,10000,100000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.gallery import GallerySnapshot
from edge.match import Matcher, MatchOptions
from edge.types import EMBEDDING_DIM

PER_PERSON = 5


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.standard_normal((n, EMBEDDING_DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def snapshot(n_templates: int, rng: np.random.Generator) -> GallerySnapshot:
    people = max(1, n_templates // PER_PERSON)
    offsets = np.minimum(np.arange(people + 1) * PER_PERSON, n_templates)
    offsets[-1] = n_templates
    neg_owner = np.repeat(np.arange(0, people, 10), 2)
    return GallerySnapshot(
        names=tuple(f"person{i}" for i in range(people)), templates=unit(rng, n_templates),
        template_offsets=offsets.astype(np.int64), negatives=unit(rng, len(neg_owner)),
        negative_owner=neg_owner.astype(np.int64), revision=0, dim=EMBEDDING_DIM,
    )


def time_matches(matcher: Matcher, probes: np.ndarray, warmup: int = 10) -> list[float]:
    """Milliseconds of each `matcher.match(probe)`, after `warmup` untimed ones."""
    for p in probes[:warmup]:
        matcher.match(p)
    ms = []
    for p in probes:
        t = time.perf_counter()
        matcher.match(p)
        ms.append((time.perf_counter() - t) * 1e3)
    return ms


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=300)
    ap.add_argument("--sizes", default="10,100,1000,10000,100000")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    print(f"numpy {np.__version__}; {EMBEDDING_DIM}-d float32; median of {args.repeat} matches")
    print(f"{'templates':>10} {'people':>7} {'negatives':>9} {'scoring':>8} {'median ms':>10} {'p95 ms':>8}")
    for n, blas in ((int(s), b) for s in args.sizes.split(",") for b in (False, True)):
        snap = snapshot(n, rng)
        matcher = Matcher(snap, MatchOptions(use_blas=blas))
        times = time_matches(matcher, unit(rng, args.repeat))
        print(f"{n:>10} {len(snap.names):>7} {len(snap.negatives):>9} {'blas' if blas else 'einsum':>8} "
              f"{np.median(times):>10.4f} "
              f"{np.percentile(times, 95):>8.4f}")


if __name__ == "__main__":
    main()
