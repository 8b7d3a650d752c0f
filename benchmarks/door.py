"""Door distance: facelock against face_recognition on LFW test people placed in 640x480 door frames.

    .venv/bin/python benchmarks/door.py [--bundle out/full/bundle] [--people N] [--no-peer] [--json OUT]

Prints the CPU (and its SIMD features), then per face width (40/60/80/120/160 px) and variant (clean,
low light, blur): frames that lose the face and TAR at FAR 1e-2 / 1e-3 against an enrolment photo, for
facelock (the bundle), facelock before the landmark model (same model, once per chip) and face_recognition,
all on the same frames in this run; the same-portrait stability figure; and the targets with verdicts. How
the frames are made and scored: convert/bench/door.py. The same section is `facelock bench`'s section 7.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import lfw_dir, table

from convert.bench.door_section import door_rows, run_door, verdicts
from convert.bench.machine import machine
from convert.bench.peer import dlib_available


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", default="out/full/bundle", help="model bundle (default out/full/bundle)")
    ap.add_argument("--lfw", help="LFW folder (default ../shared/data/lfw)")
    ap.add_argument("--people", type=int, help="only N test people, drawn at random (default: all with 2+ photos)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-peer", action="store_true", help="skip face_recognition")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args()
    bundle = Path(args.bundle)
    if not (bundle / "manifest.json").is_file():
        raise SystemExit(f"{bundle}: no bundle there; run `facelock convert` first (or pass --bundle)")
    m = machine()
    print(f"machine: {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable), SIMD: {m['simd'] or 'n/a'}; "
          f"load {m['load_1min']}")
    res = run_door(lfw_dir(args.lfw), bundle, args.threads, peer=not args.no_peer and dlib_available(),
                   limit=args.people, progress=True)
    res["machine"] = m
    print(f"{res['people']} LFW test people, enrolled from photo 1: "
          + ", ".join(f"{n} {k}" for n, k in res["enrolled"].items()))
    header, rows = door_rows(res)
    print(table(rows, header))
    print()
    print(table([[n, f"{s['median_cosine']:.4f}", f"{s['min_cosine']:.4f}", s["frames"]]
                 for n, s in res["stability"].items()],
                ["same-portrait stability", "median cosine", "lowest", "frames"]))
    print()
    print(table(verdicts(res), ["target", "measured", "goal", "verdict"]))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
