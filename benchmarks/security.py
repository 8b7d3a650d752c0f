"""Security figures (convert/bench/security.py) for one bundle, facelock against face_recognition in one
run: verification over all pairs of LFW `test` people, the 10-person household, and strangers against the
real decider. Prints the CPU, then the tables.

    .venv/bin/python benchmarks/security.py --bundle out/full/bundle [--households 100] [--no-peer]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

from convert.bench.data import BenchOptions, dataset
from convert.bench.machine import machine
from convert.bench.peer import dlib_available
from convert.bench.security import render_security, security


@dataclass(frozen=True)
class _Bundle:
    bundle: Path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", type=Path, required=True, help="model bundle folder (from facelock convert)")
    p.add_argument("--lfw", type=Path, default=None)
    p.add_argument("--work", type=Path, default=Path("out/bench"), help="embedding cache")
    p.add_argument("--households", type=int, default=100)
    p.add_argument("--attempts", type=int, default=5, help="attempts per stranger and household")
    p.add_argument("--no-peer", action="store_true")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args()
    opts = BenchOptions(work=args.work, lfw=args.lfw, peer=not args.no_peer, progress=False).resolved()
    m = machine()
    print(f"CPU: {m.get('cpu')}; SIMD: {m.get('simd')}; cores: {m.get('cores')}")
    res = security(opts, dataset(opts), _Bundle(args.bundle), peer_ok=opts.peer and dlib_available(),
                   homes_count=args.households, attempts=args.attempts)
    print("\n".join(render_security(res)))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
