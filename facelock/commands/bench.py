"""`facelock bench`: measure accuracy, speed, memory, the cost of sparsity, match scaling and the figure of
merit on this machine, and write docs/benchmarks.md with PNG plots."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

EPILOG = """\
examples:
  facelock bench                       # full: LFW View 2 folds 6-10, sparsity 0/30/50/70%, peer included
  facelock bench --quick --out /tmp/b  # CI: embedded demo faces, sparsity 0/50%, a few minutes
  facelock bench --lfw ~/data/lfw --threads 1,2,4 --json

Full mode needs LFW (default ../shared/data/lfw, or $FACELOCK_LFW): pairs_view2.csv, split.csv and one
folder per person. Conversions are cached in --work (one folder per sparsity), and an earlier `facelock
convert` run in out/full (bundle/ + work/) is reused when its options match, so reruns are cheap.
The peer (face_recognition's pipeline on dlib) is a benchmark-only dependency (the `dev` extra); without
dlib it is skipped with a note.
"""


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def _fractions(text: str) -> tuple[float, ...]:
    vals = tuple(float(x) for x in text.split(",") if x.strip())
    return tuple(v / 100 if v > 1 else v for v in vals)  # 30 or 0.3


def run(args: argparse.Namespace) -> int:
    from convert.bench.data import BenchOptions
    from convert.bench.report import summary
    from convert.bench.run import run_bench

    opts = BenchOptions(
        out=Path(args.out), work=Path(args.work), lfw=Path(args.lfw) if args.lfw else None,
        model=Path(args.model) if args.model else None, quick=args.quick, threads=_ints(args.threads),
        sparsities=_fractions(args.sparsities) if args.sparsities else None, frames=args.frames,
        repeat=args.repeat, peer=not args.no_peer,
        reuse=tuple(Path(p) for p in args.reuse) if args.reuse is not None else (Path("out/full"),),
        progress=not args.no_progress,
    )
    res = run_bench(opts)
    if args.json:
        print(json.dumps(res, indent=2, default=str))
    else:
        print(summary(res))
        print(f"written: {Path(args.out) / 'benchmarks.md'}, plots in {Path(args.out) / 'img'}: "
              f"{res['accuracy']['plot']}, {res['cost']['plot']}, {res['scaling']['plot']}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmark accuracy, speed and memory against face_recognition; write docs",
                       description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="CI mode: demo faces (no LFW), fewer repeats, sparsity 0/50%%")
    p.add_argument("--out", default="docs", help="where benchmarks.md and img/*.png go (default docs)")
    p.add_argument("--work", default="out/bench", help="cache of conversions and embeddings (default out/bench)")
    p.add_argument("--lfw", help="LFW folder for full mode (default ../shared/data/lfw or $FACELOCK_LFW)")
    p.add_argument("--model", help="Keras embedder to convert (default: the dlib ResNet port)")
    p.add_argument("--threads", default="1,2", help="interpreter thread counts to time (default 1,2)")
    p.add_argument("--sparsities", help="comma list, e.g. 0,30,50,70 (default; quick: 0,50)")
    p.add_argument("--frames", type=int, help="frames for the per-stage timings (default 100; quick 12)")
    p.add_argument("--repeat", type=int, help="passes over those frames (default 3; quick 2)")
    p.add_argument("--reuse", nargs="*", metavar="DIR",
                   help="earlier convert runs (DIR/bundle + DIR/work) to reuse when options match (default out/full)")
    p.add_argument("--no-peer", action="store_true", help="skip face_recognition's pipeline")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print every figure as JSON instead of the tables")
    p.set_defaults(handler=run)
