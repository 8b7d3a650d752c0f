"""Section 3, the cost curve: accuracy (from each conversion's report) and int8 embed latency (measured
here) against sparsity, one `facelock convert` per sparsity."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from convert.bench.conversions import Conversion
from convert.bench.data import BenchOptions
from convert.bench.speed import tflite_fn, time_per_chip
from convert.bench.util import bar, pyplot


def cost_row(s: float, c: Conversion) -> dict:
    """The figures of one conversion's report (int8 accuracy, sizes, sparsity reached)."""
    v = c.report.get("verification", {})
    q = v.get("int8", {})
    p = v.get("pruned float", v.get("float", {}))
    return {"sparsity_target": s, "sparsity": c.report.get("sparsity", {}).get("overall", 0.0),
            "int8_bytes": c.report["sizes"]["int8_tflite_bytes"],
            "int8_gzip_bytes": c.report["sizes"]["int8_gzip_bytes"],
            "auc": q.get("auc"), "tar_at_far_1e3": q.get("tar_at_far_1e3"),
            "tar_at_far_1e2": q.get("tar_at_far_1e2"), "best_accuracy": q.get("best_accuracy"),
            "float_auc": p.get("auc"), "float_best_accuracy": p.get("best_accuracy"),
            "workdir": str(c.workdir), "cached": c.cached}


def cost_curve(opts: BenchOptions, convs: dict[float, Conversion], chips: np.ndarray, img: Path) -> dict:
    rows = []
    for s, c in bar(sorted(convs.items()), "cost curve latency", opts.progress):
        row = cost_row(s, c)
        for t in opts.threads:
            ms = time_per_chip(tflite_fn(str(c.bundle / "embedder.tflite"), t), chips, opts.repeat)
            row[f"embed_ms_{t}t"] = float(np.median(ms))
        rows.append(row)
    plot = plot_cost(rows, opts.threads, img / "cost_curve.png")
    return {"rows": rows, "plot": plot.name}


def plot_cost(rows: list[dict], threads: tuple[int, ...], path: Path) -> Path:
    plt = pyplot()
    x = [100 * r["sparsity_target"] for r in rows]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(9.6, 4.0), dpi=110)
    for key, label in (("auc", "AUC"), ("best_accuracy", "best accuracy"), ("tar_at_far_1e3", "TAR@FAR 1e-3")):
        ax.plot(x, [r[key] if r[key] is not None else np.nan for r in rows], "o-", label=label)
    ax.set_xlabel("weight sparsity (%)")
    ax.set_ylabel("int8 model, verification")
    ax.set_title("accuracy vs sparsity")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower left")
    for t in threads:
        bx.plot(x, [r[f"embed_ms_{t}t"] for r in rows], "s-", label=f"int8 embed, {t} thread(s)")
    bx.set_xlabel("weight sparsity (%)")
    bx.set_ylabel("median ms per face")
    bx.set_title("int8 embed latency vs sparsity")
    bx.set_ylim(bottom=0)
    bx.grid(True, alpha=0.3)
    bx.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
