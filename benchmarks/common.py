"""Helpers shared by the benchmark scripts: the checkout, LFW (where it is, its pair list and split: from
convert.datasets), pretty tables.

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
