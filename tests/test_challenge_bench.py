"""The challenge benchmark's attempts (convert.bench.challenge) played against the real detector and
landmark model (a stand-in embedder: the coarse chip), the real Decider and ChallengeJudge: the owner who
answers gets in, the same owner without a challenge is the baseline, a blind video passes only when its
move happens to be the one asked; and the summary's arithmetic."""

from __future__ import annotations

import numpy as np
from test_landmarks import Embedder

from convert.bench import challenge as C


def _pipeline(stages, portraits, mesh, tmp_path):
    from convert.bench.attacks import HeadRenderer
    from edge.identity.gallery import Gallery
    from edge.identity.match import Matcher
    from edge.vision.align import FaceAligner
    from edge.vision.build import Stages
    from edge.vision.liveness import LivenessCheck

    detector, landmarker = stages
    pipeline = Stages(detector, FaceAligner(landmarker=landmarker), Embedder(), landmarker).pipeline(
        liveness=LivenessCheck())
    rng = np.random.default_rng(0)
    frontal = HeadRenderer(portraits[0], mesh, rng, 110.0).render((0, 0, 0), 0.0, 1.0, False, rng)[0]
    gallery = Gallery(tmp_path / "g.db")
    gallery.enroll("eileen", pipeline.embed_image(frontal)[None])
    pipeline.matcher = Matcher(gallery)
    return pipeline, gallery


def test_attempts_played_against_the_lock(stages, portraits, mesh, tmp_path):
    pipeline, gallery = _pipeline(stages, portraits, mesh, tmp_path)
    rng = np.random.default_rng(3)
    still = C.play(pipeline, portraits[0], mesh, "eileen", C.OWNER_STILL, 0.8, rng)
    assert still.opened_s is not None and still.asked is None and still.made is None
    for _ in range(2):
        answered = C.play(pipeline, portraits[0], mesh, "eileen", C.OWNER_ANSWERS, 0.8, rng)
        assert answered.asked in C.DIRECTION and answered.made == answered.asked
        assert answered.opened_s is not None, answered.why
        assert 0.5 < answered.answer_s < 3.0 and "live (challenge)" in answered.why
    videos = [C.play(pipeline, portraits[0], mesh, "eileen", C.VIDEO, 0.8, rng) for _ in range(3)]
    for v in videos:
        assert v.asked is not None and v.made in C.DIRECTION
        assert (v.opened_s is not None) == (v.made == v.asked), v
    gallery.close()
    res = C.summarise_played([still, answered] + videos)
    assert res[C.OWNER_STILL]["opened"] == 1.0 and res[C.OWNER_ANSWERS]["bpcer"] == 0.0
    assert res[C.OWNER_ANSWERS]["rise_s"] == answered.opened_s - still.opened_s
    assert res[C.VIDEO]["apcer"] == res[C.VIDEO]["move_was_asked"]
