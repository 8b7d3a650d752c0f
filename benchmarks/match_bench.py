"""Median time of one `Matcher.match` against 10 ... 100,000 templates (random unit 128-d embeddings,
5 templates per person, one person in ten with 2 negative examples), with the default scoring (einsum:
numpy's own single-threaded loops) and with BLAS (`MatchOptions.use_blas`; its thread count follows
OPENBLAS_NUM_THREADS). Target: 10,000 templates <= 1 ms.

    python benchmarks/match_bench.py [--repeat 300] [--sizes 10,100,1000,10000,100000]
"""

from __future__ import annotations

import argparse

import numpy as np

from convert.bench.scaling import snapshot, time_matches, unit
from edge.identity.match import Matcher, MatchOptions
from edge.types import EMBEDDING_DIM


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
