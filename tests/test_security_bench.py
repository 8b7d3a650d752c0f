"""The security figures of `facelock bench` (convert/bench/security.py) on synthetic embeddings whose answers
are known: all-pairs TAR against a brute-force count, household identification, strangers at the decider."""

from __future__ import annotations

import math

import numpy as np
import pytest

from convert.bench.security import (
    Embedded,
    attempts_per_day,
    household_identification,
    households,
    strangers_at_the_door,
    verification_all_pairs,
)


def _clusters(people: int, per: int, spread: float, dim: int = 16, seed: int = 0) -> Embedded:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(people, dim))
    e = np.repeat(centres, per, axis=0) + spread * rng.normal(size=(people * per, dim))
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    labels = np.repeat(np.arange(people), per)
    return Embedded(e.astype(np.float32), np.ones(len(e), bool), labels, "cosine")


def test_all_pairs_tar_matches_a_brute_force_count():
    emb = _clusters(40, 5, 0.6)
    emb.found[[3, 77]] = False  # two faces not found: their pairs are rejections
    res = verification_all_pairs(emb, fars=(1e-2, 1e-3), block=37)  # blocks that do not divide N
    s = emb.e.astype(np.float64) @ emb.e.T.astype(np.float64)
    s[~emb.found, :] = -np.inf
    s[:, ~emb.found] = -np.inf
    i, j = np.triu_indices(len(emb.labels), 1)
    same = emb.labels[i] == emb.labels[j]
    gen, imp = s[i, j][same], np.sort(s[i, j][~same])[::-1]
    assert res["genuine_pairs"] == same.sum() and res["impostor_pairs"] == (~same).sum()
    for far in (1e-2, 1e-3):
        k = math.floor(far * imp.size)
        t = imp[k]
        got = res["tar"][f"{far:g}"]
        assert got["threshold"] == pytest.approx(t)
        assert got["tar"] == pytest.approx((gen > t).mean())
        assert got["impostors_accepted"] <= k


def test_euclidean_scores_are_negative_distances():
    emb = _clusters(3, 2, 0.1)
    peer = Embedded(emb.e * 2, emb.found, emb.labels, "euclidean")
    s = peer.scores(np.array([0]), np.array([1, 2]))
    assert s[0, 0] == pytest.approx(-np.linalg.norm(peer.e[0] - peer.e[1]), abs=1e-5)


def test_household_identification_and_its_threshold():
    emb = _clusters(60, 4, 0.3)
    homes = households(emb.labels, emb.found, count=30, size=10, seed=1)
    assert all(len(set(p.tolist())) == 10 for p, _ in homes)
    res = household_identification(emb, homes, rates=(1e-2,))
    row = res["rates"]["0.01"]
    assert row["strangers_accepted"] <= math.floor(0.01 * res["stranger_attempts"])
    assert row["identification"] > 0.9  # tight clusters: the household is recognised
    tangled = household_identification(_clusters(60, 4, 3.0), homes, rates=(1e-2,))
    assert tangled["rates"]["0.01"]["identification"] < 0.5  # noise: nobody is


def test_strangers_at_the_real_decider_and_the_peer_rule():
    emb = _clusters(30, 3, 0.05)
    homes = households(emb.labels, emb.found, count=2, size=10, seed=2)
    far = strangers_at_the_door(emb, homes, threshold=0.9, attempts=3)
    assert far["attempts"] == 2 * 20 * 3 and far["opened"] == 0
    assert far["per_million_upper95"] > 0 and far["attempts_per_day_under_lockout"] > 0
    # A stranger who is a copy of an enrolled person opens, through the decider and the one-frame rule.
    twin = Embedded(np.concatenate([emb.e, emb.e[homes[0][1][:1]]]), np.ones(len(emb.e) + 1, bool),
                    np.concatenate([emb.labels, [999]]), "cosine")
    opened = strangers_at_the_door(twin, homes[:1], threshold=0.9, attempts=1)
    assert opened["opened"] >= 1
    assert strangers_at_the_door(twin, homes[:1], threshold=0.9, attempts=1, peer_rule=True)["opened"] >= 1


def test_attempts_per_day_under_lockout():
    from edge.identity.decide import DecideOptions

    o = DecideOptions()
    per_day = attempts_per_day(o)
    assert per_day == pytest.approx(86400 / (o.lockout_failures * (o.attempt_max_s + o.attempt_gap_s)
                                             + o.lockout_max_s) * o.lockout_failures)
    assert per_day < 86400 / o.attempt_gap_s


def test_the_section_renders_for_both_pipelines():
    from convert.bench.security import render_security

    emb = _clusters(30, 3, 0.2)
    homes = households(emb.labels, emb.found, count=3, size=10, seed=3)
    peer = Embedded(emb.e, emb.found, emb.labels, "euclidean")
    sec = {"images": len(emb.labels), "people": 30, "pipelines": {
        "facelock int8": {"verification": verification_all_pairs(emb), "household": household_identification(emb, homes),
                          "door": {**strangers_at_the_door(emb, homes, 0.9, attempts=2), "rule": "k of n"}},
        "face_recognition (dlib)": {"verification": verification_all_pairs(peer),
                                    "household": household_identification(peer, homes),
                                    "door": {**strangers_at_the_door(peer, homes, -0.6, attempts=2, peer_rule=True),
                                             "rule": "one frame"}}}}
    text = "\n".join(render_security(sec))
    assert "TAR@FAR 1e-05" in text and "face_recognition (dlib)" in text and "no limit" in text
