"""Verification metrics on scored pairs (higher score = more alike). Pure numpy: benchmarks use it too."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Roc:
    far: np.ndarray  # false accept rate at each threshold, ascending
    tar: np.ndarray  # true accept rate at each threshold
    thresholds: np.ndarray  # accept when score >= threshold


def roc_curve(scores: np.ndarray, same: np.ndarray) -> Roc:
    scores = np.asarray(scores, dtype=np.float64)
    same = np.asarray(same, dtype=bool)
    if same.all() or not same.any():
        raise ValueError("a ROC needs both genuine and impostor pairs")
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], same[order]
    # One point per distinct score: ties are accepted together.
    last_of_run = np.r_[s[1:] != s[:-1], True]  # not np.diff: -inf - -inf is nan
    tp = np.cumsum(y)[last_of_run]
    fp = np.cumsum(~y)[last_of_run]
    tar = np.r_[0.0, tp / y.sum()]
    far = np.r_[0.0, fp / (~y).sum()]
    thresholds = np.r_[np.inf, s[last_of_run]]
    return Roc(far=far, tar=tar, thresholds=thresholds)


def auc(roc: Roc) -> float:
    trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy < 2 (Raspberry Pi OS) has only trapz
    return float(trapezoid(roc.tar, roc.far))


def tar_at_far(roc: Roc, far: float) -> float:
    """Highest TAR whose FAR does not exceed `far` (no interpolation: an honest step function)."""
    ok = roc.far <= far + 1e-12
    return float(roc.tar[ok].max())


def eer(roc: Roc) -> float:
    frr = 1.0 - roc.tar
    i = int(np.argmin(np.abs(frr - roc.far)))
    return float((frr[i] + roc.far[i]) / 2)


def best_accuracy(scores: np.ndarray, same: np.ndarray) -> tuple[float, float]:
    """(accuracy, threshold) of the best single threshold on these pairs (an optimistic, oracle figure)."""
    roc = roc_curve(scores, same)
    same = np.asarray(same, dtype=bool)
    n_pos, n_neg = same.sum(), (~same).sum()
    acc = (roc.tar * n_pos + (1 - roc.far) * n_neg) / (n_pos + n_neg)
    i = int(np.argmax(acc))
    return float(acc[i]), float(roc.thresholds[i])


def threshold_at_far(impostor_scores: np.ndarray, far: float) -> float:
    """The lowest threshold at which at most `far` of these impostor scores are accepted (score >= t)."""
    s = np.sort(np.asarray(impostor_scores, dtype=np.float64))[::-1]
    allowed = int(np.floor(far * len(s)))
    if allowed >= len(s):
        return float(s[-1])
    # Accept strictly above the (allowed+1)-th highest impostor score.
    return float(np.nextafter(s[allowed], np.inf))


@dataclass(frozen=True)
class VerificationReport:
    pairs: int
    auc: float
    best_accuracy: float
    best_threshold: float
    tar_at_far_1e2: float
    tar_at_far_1e3: float
    eer: float

    def as_dict(self) -> dict:
        return asdict(self)


def verification_report(scores: np.ndarray, same: np.ndarray) -> VerificationReport:
    roc = roc_curve(scores, same)
    acc, thr = best_accuracy(scores, same)
    return VerificationReport(
        pairs=len(scores),
        auc=auc(roc),
        best_accuracy=acc,
        best_threshold=thr,
        tar_at_far_1e2=tar_at_far(roc, 1e-2),
        tar_at_far_1e3=tar_at_far(roc, 1e-3),
        eer=eer(roc),
    )
