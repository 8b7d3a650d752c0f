"""Verification metrics against hand-computable cases."""

import numpy as np
import pytest

from convert.compress.metrics import (
    auc,
    best_accuracy,
    eer,
    roc_curve,
    tar_at_far,
    threshold_at_far,
    verification_report,
)


def test_perfect_separation():
    scores = np.array([0.9, 0.8, 0.7, 0.2, 0.1, 0.0])
    same = np.array([1, 1, 1, 0, 0, 0], bool)
    roc = roc_curve(scores, same)
    assert auc(roc) == pytest.approx(1.0)
    assert tar_at_far(roc, 0.0) == 1.0
    acc, thr = best_accuracy(scores, same)
    assert acc == 1.0 and 0.2 < thr <= 0.7
    assert eer(roc) == 0.0


def test_known_auc_and_tar():
    # genuine: 0.9, 0.4 ; impostor: 0.5, 0.1 -> 3 of 4 orderings correct
    scores = np.array([0.9, 0.4, 0.5, 0.1])
    same = np.array([1, 1, 0, 0], bool)
    roc = roc_curve(scores, same)
    assert auc(roc) == pytest.approx(0.75)
    assert tar_at_far(roc, 0.0) == 0.5
    assert tar_at_far(roc, 0.5) == 1.0
    assert verification_report(scores, same).best_accuracy == pytest.approx(0.75)


def test_ties_are_accepted_together():
    roc = roc_curve(np.array([0.5, 0.5]), np.array([1, 0], bool))
    assert list(roc.far) == [0.0, 1.0] and list(roc.tar) == [0.0, 1.0]


def test_threshold_at_far_respects_the_rate():
    rng = np.random.default_rng(1)
    impostors = rng.normal(size=10_000)
    t = threshold_at_far(impostors, 1e-3)
    assert np.mean(impostors >= t) <= 1e-3
    assert np.mean(impostors >= np.nextafter(np.sort(impostors)[-11], -np.inf)) > 1e-3


def test_needs_both_classes():
    with pytest.raises(ValueError):
        roc_curve(np.array([0.1, 0.2]), np.array([1, 1], bool))
