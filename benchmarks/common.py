"""Helpers shared by the benchmark scripts: the checkout, LFW (where it is, its pair list and split: from
convert.datasets), pretty tables, the command line of the scripts that tune on door frames of train people.

The scripts import the package (edge, convert; installed with `pip install -e`) and this module (the
script's own folder is on sys.path when it runs); the package never imports them.
"""

from __future__ import annotations

import os
from pathlib import Path

from convert.datasets import DEFAULT_LFW, Pair, people_of_split, read_pairs

REPO = Path(__file__).resolve().parents[1]
__all__ = ["DEFAULT_LFW", "REPO", "Pair", "lfw_dir", "people_of_split", "read_pairs", "table"]


def lfw_dir(path: str | os.PathLike | None = None) -> Path:
    lfw = Path(path) if path else DEFAULT_LFW
    if not (lfw / "pairs_view2.csv").is_file():
        raise SystemExit(f"LFW not found at {lfw} (expected pairs_view2.csv there); pass --lfw DIR")
    return lfw


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda r: "| " + " | ".join(str(x).ljust(w) for x, w in zip(r, widths)) + " |"
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def train_door_main(doc: str, measure, report) -> int:
    """The command line of the scripts that place a setting on door frames of LFW `train` people
    (quality_gates.py, first_run.py): --bundle, --lfw, --people, --threads, --json. Prints the CPU, the
    bundle's threshold and the people (`measure(bundle, lfw, people, threads)` gives them), then
    `report(result)` prints the tables and returns the figures (written to --json when asked)."""
    import argparse
    import json

    from convert.bench.machine import machine

    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", default="out/full/bundle", help="model bundle (default out/full/bundle)")
    ap.add_argument("--lfw", help="LFW folder (default ../shared/data/lfw)")
    ap.add_argument("--people", type=int, default=300, help="train people drawn at random (default 300)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args()
    root = Path(args.lfw) if args.lfw else DEFAULT_LFW
    if not (root / "split.csv").is_file():
        raise SystemExit(f"LFW with split.csv not found at {root}; pass --lfw DIR")
    m = machine()
    print(f"CPU: {m['cpu']}, {m['usable_cores']} usable cores, SIMD {m['simd'] or 'unknown'}")
    res = measure(Path(args.bundle), root, args.people, args.threads)
    print(f"bundle {args.bundle}: threshold {res['threshold']:.4f}; {res['people']} LFW train people\n")
    out = report(res)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=float))
    return 0
