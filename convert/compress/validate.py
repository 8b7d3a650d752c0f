"""What did compression cost? Float vs pruned vs int8 on the same aligned chips.

- agreement: cosine between each compressed model's embedding and the float model's, on held-out chips;
- verification on a labelled pair list (default LFW View 2 folds 6-10): AUC, best accuracy, TAR at FAR 1e-2
  and 1e-3, EER;
- the operating threshold for a target FAR, chosen on impostor pairs of the *training* people only (never
  on the test pairs), and what it gives on the test pairs;
- ROC curves as a PNG.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from convert.compress.metrics import Roc, roc_curve, threshold_at_far, verification_report
from convert.datasets import genuine_impostor_pairs
from convert.errors import DataError


@dataclass(frozen=True)
class PairList:
    a: np.ndarray  # (P,) index into `files`
    b: np.ndarray
    same: np.ndarray  # (P,) bool
    files: tuple[str, ...]  # relative paths of every image used by the pairs


def read_pair_list(path: str | Path, folds: set[int] | None = None) -> PairList:
    """A CSV with columns file_a, file_b, same (and optionally fold)."""
    path = Path(path)
    try:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise DataError(f"{path}: cannot read the pair list ({exc.strerror})") from exc
    if not rows or not {"file_a", "file_b", "same"} <= set(rows[0]):
        raise DataError(f"{path}: expected CSV columns file_a,file_b,same[,fold]")
    if folds is not None and "fold" in rows[0]:
        rows = [r for r in rows if int(r["fold"]) in folds]
    files = tuple(sorted({r["file_a"] for r in rows} | {r["file_b"] for r in rows}))
    index = {f: i for i, f in enumerate(files)}
    return PairList(
        a=np.array([index[r["file_a"]] for r in rows]),
        b=np.array([index[r["file_b"]] for r in rows]),
        same=np.array([r["same"].strip() in ("1", "true", "True") for r in rows]),
        files=files,
    )


def pair_scores(embeddings: np.ndarray, found: np.ndarray, pairs: PairList) -> np.ndarray:
    """Cosine per pair; a pair with an image whose face was not found scores -inf (a rejection)."""
    scores = np.einsum("ij,ij->i", embeddings[pairs.a], embeddings[pairs.b])
    ok = found[pairs.a] & found[pairs.b]
    return np.where(ok, scores, -np.inf)


def agreement(reference: np.ndarray, other: np.ndarray) -> dict[str, float]:
    cos = np.einsum("ij,ij->i", reference, other)
    return {"median_cosine": float(np.median(cos)), "p1_cosine": float(np.percentile(cos, 1)),
            "min_cosine": float(cos.min()), "chips": len(cos)}


def choose_threshold(train_embeddings: np.ndarray, train_labels: np.ndarray, target_far: float) -> dict:
    """Operating threshold on training people's impostor pairs, with the FRR it costs on their genuine pairs."""
    genuine, impostor = genuine_impostor_pairs(train_labels)
    g = np.einsum("ij,ij->i", train_embeddings[genuine[:, 0]], train_embeddings[genuine[:, 1]])
    i = np.einsum("ij,ij->i", train_embeddings[impostor[:, 0]], train_embeddings[impostor[:, 1]])
    t = threshold_at_far(i, target_far)
    return {"cosine": t, "target_far": target_far, "train_far": float(np.mean(i >= t)),
            "train_frr": float(np.mean(g < t)) if len(g) else None,
            "genuine_pairs": len(g), "impostor_pairs": len(i)}


def at_threshold(scores: np.ndarray, same: np.ndarray, threshold: float) -> dict[str, float]:
    accept = scores >= threshold
    return {"far": float(np.mean(accept[~same])), "frr": float(np.mean(~accept[same])),
            "accuracy": float(np.mean(accept == same))}


def verification(scores: np.ndarray, same: np.ndarray) -> tuple[dict, Roc]:
    return verification_report(scores, same).as_dict(), roc_curve(scores, same)


def plot_rocs(curves: dict[str, Roc], path: str | Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=110)
    for name, roc in curves.items():
        far = np.clip(roc.far, 1e-5, 1)
        ax.plot(far, roc.tar, label=name, linewidth=1.4)
    ax.set_xscale("log")
    ax.set_xlim(1e-4, 1)
    ax.set_ylim(0.8, 1.001)
    ax.set_xlabel("false accept rate")
    ax.set_ylabel("true accept rate")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
