"""Section 4, scaling: one `Matcher.match` against 10 ... 100,000 templates (random unit 128-d embeddings,
5 templates per person, one person in ten with 2 negative examples), with the default scoring (einsum:
numpy's own single-threaded loops) and with BLAS (`MatchOptions.use_blas`). The synthetic galleries and the
timing loop are shared with benchmarks/match_bench.py and benchmarks/edge_targets.py."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from convert.bench.data import BenchOptions
from convert.bench.util import bar, pyplot, stats

GALLERY_SIZES = (10, 100, 1_000, 10_000, 100_000)
PER_PERSON = 5


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    """`n` random unit embeddings."""
    from edge.types import EMBEDDING_DIM

    x = rng.standard_normal((n, EMBEDDING_DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def snapshot(n_templates: int, rng: np.random.Generator):
    """A synthetic GallerySnapshot of `n_templates` templates, PER_PERSON per person, and 2 negative examples
    for one person in ten."""
    from edge.identity.templates import GallerySnapshot
    from edge.types import EMBEDDING_DIM

    people = max(1, n_templates // PER_PERSON)
    offsets = np.minimum(np.arange(people + 1) * PER_PERSON, n_templates)
    offsets[-1] = n_templates
    neg_owner = np.repeat(np.arange(0, people, 10), 2)
    return GallerySnapshot(
        names=tuple(f"person{i}" for i in range(people)), templates=unit(rng, n_templates),
        template_offsets=offsets.astype(np.int64), negatives=unit(rng, len(neg_owner)),
        negative_owner=neg_owner.astype(np.int64), revision=0, dim=EMBEDDING_DIM,
    )


def time_matches(matcher, probes: np.ndarray, warmup: int = 10) -> list[float]:
    """Milliseconds of each `matcher.match(probe)`, after `warmup` untimed ones."""
    for p in probes[:warmup]:
        matcher.match(p)
    ms = []
    for p in probes:
        t = time.perf_counter()
        matcher.match(p)
        ms.append((time.perf_counter() - t) * 1e3)
    return ms


def scaling(opts: BenchOptions, img: Path) -> dict:
    from edge.identity.match import Matcher, MatchOptions

    rng = np.random.default_rng(0)
    rows = []
    for n in bar(GALLERY_SIZES, "gallery scaling", opts.progress):
        snap = snapshot(n, rng)
        probes = unit(rng, opts.match_repeat)
        for blas in (False, True):
            ms = time_matches(Matcher(snap, MatchOptions(use_blas=blas)), probes, warmup=5)
            rows.append({"templates": n, "people": len(snap.names), "scoring": "blas" if blas else "einsum",
                         **stats(ms)})
    path = plot_scaling(rows, img / "match_scaling.png")
    return {"rows": rows, "plot": path.name, "repeat": opts.match_repeat}


def plot_scaling(rows: list[dict], path: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=110)
    for scoring, colour in (("einsum", "tab:blue"), ("blas", "tab:green")):
        r = [x for x in rows if x["scoring"] == scoring]
        ax.plot([x["templates"] for x in r], [x["median"] for x in r], "o-", color=colour, label=f"{scoring}, median")
        ax.plot([x["templates"] for x in r], [x["p95"] for x in r], ":", color=colour, label=f"{scoring}, p95")
    ax.axhline(1.0, color="grey", linewidth=0.8, linestyle="--", label="1 ms")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("templates in the gallery")
    ax.set_ylabel("ms per match")
    ax.set_title("match time vs gallery size (128-d, one probe)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
