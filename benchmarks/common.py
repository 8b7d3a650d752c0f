"""Helpers shared by the benchmark scripts: where the data is, the LFW pair list, pretty tables."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_LFW = Path(os.environ.get("FACELOCK_LFW", REPO.parent / "shared" / "data" / "lfw"))


@dataclass(frozen=True)
class Pair:
    fold: int
    a: str
    b: str
    same: bool


def lfw_dir(path: str | os.PathLike | None = None) -> Path:
    lfw = Path(path) if path else DEFAULT_LFW
    if not (lfw / "pairs_view2.csv").is_file():
        raise SystemExit(f"LFW not found at {lfw} (expected pairs_view2.csv there); pass --lfw DIR")
    return lfw


def read_pairs(lfw: Path, folds: range = range(6, 11)) -> list[Pair]:
    with open(lfw / "pairs_view2.csv", newline="") as fh:
        rows = [Pair(int(r["fold"]), r["file_a"], r["file_b"], r["same"] == "1") for r in csv.DictReader(fh)]
    return [p for p in rows if p.fold in folds]


def people_of_split(lfw: Path, split: str) -> list[str]:
    with open(lfw / "split.csv", newline="") as fh:
        return sorted(r["name"] for r in csv.DictReader(fh) if r["split"] == split)


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda r: "| " + " | ".join(str(x).ljust(w) for x, w in zip(r, widths)) + " |"
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])
