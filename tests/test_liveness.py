"""Passive liveness (edge.vision.liveness) and how the decider uses it. The head is the landmark model's own
3D mesh of a real portrait (the astronaut, through the real FaceLandmarker), turned in 3D and projected
through a pinhole camera; the print is the same mesh flattened onto a plane and moved with the homographies
a hand-held print makes. Last, a photo attack end to end: real detector and landmark model on frames made
by warping the portrait as a plane, through the real FacePipeline, matcher and decider."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from test_landmarks import Embedder  # the coarse-chip stand-in: these tests are about liveness

from convert.bench.attacks import rotation
from edge.errors import ConfigError
from edge.identity.decide import DecideOptions, Decider, Outcome
from edge.identity.gallery import Gallery
from edge.identity.match import Match, Matcher
from edge.service.config import parse_config, render_example
from edge.types import LivenessState
from edge.vision.build import liveness_stage
from edge.vision.liveness import LivenessCheck, LivenessOptions, sample_from_mesh

FOCAL = 700.0  # px: a 640x480 door camera with a ~50 degree field of view



def head(mesh, yaw, pitch, roll=0.0, shift=(0.0, 0.0), scale=1.0):
    """The mesh as a 3D head turned about a pivot half a face width behind it (the neck), at FOCAL."""
    c = mesh.mean(0)
    pivot = np.array([0.0, 0.0, 0.5 * np.ptp(mesh[:, 0]) * scale])
    x = ((mesh - c) * scale - pivot) @ rotation(yaw, pitch, roll).T + pivot
    z = FOCAL + x[:, 2]
    return np.column_stack([FOCAL * x[:, 0] / z + 320 + shift[0], FOCAL * x[:, 1] / z + 240 + shift[1], x[:, 2]])


def plane_homography(centre, scale, yaw, pitch, roll=0.0, at=(320.0, 240.0)):
    """Image px of a print -> frame px: the print (centred on `centre`, `scale` frame px per print px at
    FOCAL) turned in 3D and projected."""
    r = rotation(yaw, pitch, roll)
    k = np.array([[FOCAL, 0, at[0]], [0, FOCAL, at[1]], [0, 0, 1.0]])
    a = np.array([[scale, 0, -scale * centre[0]], [0, scale, -scale * centre[1]], [0, 0, 1.0]])
    return k @ np.column_stack([r[:, 0], r[:, 1], [0, 0, FOCAL]]) @ a


def flat(mesh, h):
    """The print's mesh in the frame: the model's mesh on a flat print keeps a face's depth (it is trained
    on faces), so the depth goes along unchanged while the points move as a plane."""
    p = np.column_stack([mesh[:, :2], np.ones(len(mesh))]) @ h.T
    return np.column_stack([p[:, :2] / p[:, 2:], mesh[:, 2]])


def samples(meshes, rng, noise=0.3):
    """Samples with the mesh's own jitter (0.3 px per point, what the model shows on a still print)."""
    return [sample_from_mesh(m + np.column_stack([rng.normal(0, noise, (len(m), 2)), np.zeros(len(m))]))
            for m in meshes]


HEAD_MOVES = {
    "yaw sweep +-4": [(-4 + 8 * t / 9, 0, 0, (0, 0)) for t in range(10)],
    "nod +-4": [(0, -4 + 8 * t / 9, 0, (0, 0)) for t in range(10)],
    "turn 9 while stepping in": [(9 * t / 9, 1.0 * math.sin(t), 0, (3 * t, -2 * t)) for t in range(10)],
    "wobble with roll": [(5 * math.sin(t / 2), 4 * math.cos(t / 3), 3 * math.sin(t), (0, 0)) for t in range(10)],
}


@pytest.mark.parametrize("move", sorted(HEAD_MOVES))
@pytest.mark.parametrize("face_px", [60, 120])
def test_a_head_turning_in_3d_is_live(mesh, move, face_px):
    scale = face_px / np.ptp(mesh[:, 0])
    meshes = [head(mesh, y, p, r, s, scale) for y, p, r, s in HEAD_MOVES[move]]
    v = LivenessCheck().judge(samples(meshes, np.random.default_rng(face_px)))
    assert v.state is LivenessState.LIVE and v.check == "parallax", (v.reason, v.figures)
    assert v.figures["parallax"] >= 0.045


def test_frames_whose_texture_cannot_be_tracked_give_no_parallax_not_the_mesh_s(mesh):
    """With frames, the parallax evidence is the tracked texture's: a face that cannot be tracked (here a
    featureless frame; in life a print blurred or darkened on purpose) shows none, even while its mesh turns
    like a head. Falling back to the mesh would hand the attacker the weaker check."""
    scale = 120 / np.ptp(mesh[:, 0])
    meshes = [head(mesh, y, p, r, s, scale) for y, p, r, s in HEAD_MOVES["turn 9 while stepping in"]]
    assert LivenessCheck().judge(samples(meshes, np.random.default_rng(0))).check == "parallax"  # mesh alone
    blank = np.full((480, 640, 3), 128, np.uint8)
    textured = [sample_from_mesh(m, blank) for m in meshes]
    assert all(t.patch is not None for t in textured)
    v = LivenessCheck().judge(textured)
    assert v.state is not LivenessState.LIVE and v.figures["textured"] == 0, (v.reason, v.figures)


def print_moves(rng):
    return {
        "tilt yaw -25..25": [(-25 + 50 * t / 11, 0, 0, (0, 0)) for t in range(12)],
        "tilt pitch -25..25": [(0, -25 + 50 * t / 11, 0, (0, 0)) for t in range(12)],
        "wobble 25 with drift": [(25 * math.sin(t / 2), 25 * math.cos(t / 3), 5 * math.sin(t), (6 * t, 3 * t))
                                 for t in range(12)],
        "hand shake": [(*rng.normal(0, [4, 4, 2]), tuple(rng.normal(0, 5, 2))) for _ in range(12)],
        "slow drift": [(0.5 * t, -0.3 * t, 0, (2 * t, 1 * t)) for t in range(12)],
    }


@pytest.mark.parametrize("face_px", [45, 60, 120])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_flat_print_moved_in_3d_is_never_live(mesh, face_px, seed):
    rng = np.random.default_rng(seed)
    scale = face_px / np.ptp(mesh[:, 0])
    centre = mesh[:, :2].mean(0)
    check = LivenessCheck()
    verdicts = {}
    for name, moves in print_moves(rng).items():
        meshes = [flat(mesh, plane_homography(centre, scale, y, p, r, (320 + s[0], 240 + s[1])))
                  for y, p, r, s in moves]
        verdicts[name] = v = check.judge(samples(meshes, rng, noise=0.3 + 0.2 * rng.random()))
        assert v.state is not LivenessState.LIVE, (name, v.reason, v.figures)
        # geometry alone: jitter only (a shake of a small face can also break the run: no figures then)
        assert v.figures.get("parallax", 0.0) < 0.02, (name, v.figures)
    for name in ("tilt yaw -25..25", "tilt pitch -25..25", "wobble 25 with drift"):
        assert verdicts[name].state is LivenessState.ATTACK and verdicts[name].check == "planar", name


def test_a_face_that_does_not_move_is_static(mesh):
    v = LivenessCheck().judge(samples([head(mesh, 0, 0)] * 15, np.random.default_rng(3), noise=0.1))
    assert v.state is LivenessState.ATTACK and v.check == "static" and v.frames == 15
    few = LivenessCheck().judge(samples([head(mesh, 0, 0)] * 14, np.random.default_rng(3), noise=0.1))
    assert few.state is LivenessState.UNDECIDED  # not yet: an honest user may just be still for a moment


def test_a_blink_is_live_and_a_still_head_is_undecided(mesh):
    from edge.vision.liveness import LEFT_EYE_LIDS, RIGHT_EYE_LIDS

    frames = [head(mesh, 0.3 * t, 0) for t in range(6)]
    still = LivenessCheck().judge(samples(frames, np.random.default_rng(4)))
    assert still.state is LivenessState.UNDECIDED and still.check == "motion"
    closed = frames[3].copy()
    for upper, lower in RIGHT_EYE_LIDS + LEFT_EYE_LIDS:
        mid = (closed[upper] + closed[lower]) / 2
        closed[upper], closed[lower] = mid + 0.1 * (closed[upper] - mid), mid + 0.1 * (closed[lower] - mid)
    v = LivenessCheck().judge(samples(frames[:3] + [closed] + frames[4:], np.random.default_rng(4)))
    assert v.state is LivenessState.LIVE and v.check == "blink" and v.figures["blink"] < 0.6


def test_two_stills_swapped_in_do_not_make_a_turning_head(mesh):
    """A print of the person facing front, then one turned 20 degrees (two photos): the jump between them
    starts the run afresh, so each is judged alone (flat); a gap (a frame without the face) does too."""
    check = LivenessCheck()
    rng = np.random.default_rng(5)
    front = [head(mesh, 0, 0)] * 4
    turned = [head(mesh, 20, 0)] * 4
    v = check.judge(samples(front + turned, rng))
    assert v.state is LivenessState.UNDECIDED and v.frames == 4, v.reason
    gap = check.judge(samples(front, rng) + [None] + samples([head(mesh, 4, 0), head(mesh, 8, 0)], rng))
    assert gap.state is LivenessState.UNDECIDED and gap.frames == 2


def test_options_are_checked_and_in_the_example_config():
    with pytest.raises(ConfigError, match=r"liveness\.live_frames"):
        LivenessOptions(live_frames=3, min_frames=3).validate()
    with pytest.raises(ConfigError, match=r"liveness\.max_jump"):
        LivenessOptions(max_jump=0.01).validate()
    text = render_example()
    section = text.split("[liveness]")[1].split("\n[")[0]
    assert "enabled = true" in section  # on by default: a door lock is safe out of the box
    assert parse_config({}).liveness.enabled is True
    assert parse_config({"liveness": {"enabled": False}}).liveness.enabled is False
    assert liveness_stage(LivenessOptions(enabled=False), None) is None
    with pytest.raises(ConfigError, match=r"face-landmark model.*\[liveness\] enabled = false"):
        liveness_stage(LivenessOptions(), None)  # a bundle without the landmark model: said, not a dead lock


def vote(person="owner", score=0.95):
    return Match(person, score, None, -1.0, -1.0, score + 1.0)


def decide(meshes, rng, options=None):
    d = Decider(options or DecideOptions(state_path="/nonexistent/unused"), liveness=LivenessCheck())
    return [d.update(vote(), 0.1 * i, s) for i, s in enumerate(samples(meshes, rng))], d


def test_the_decider_accepts_a_live_head_and_refuses_a_print(mesh):
    rng = np.random.default_rng(6)
    live, _ = decide([head(mesh, -4 + t, 0) for t in range(10)], rng)
    outcomes = [d.outcome for d in live]
    assert Outcome.ACCEPT in outcomes and outcomes.index(Outcome.ACCEPT) >= 2
    accept = live[outcomes.index(Outcome.ACCEPT)]
    assert accept.liveness.check == "parallax" and "live (parallax)" in accept.reason
    assert all(d.outcome is Outcome.PENDING and "waiting for liveness" in d.reason
               for d in live[2:outcomes.index(Outcome.ACCEPT)])

    centre, scale = mesh[:, :2].mean(0), 1.0
    tilted = [flat(mesh, plane_homography(centre, scale, -25 + 5 * t, 0)) for t in range(11)]
    attack, d = decide(tilted, rng)
    assert Outcome.ACCEPT not in [x.outcome for x in attack]
    refused = next(x for x in attack if x.outcome is Outcome.ATTACK)
    assert refused.reason.startswith("attack suspected: planar") and refused.liveness.check == "planar"
    assert d.recent_failures >= 1  # counted toward the lockout like a failed attempt (the print stays: more)


def test_an_attempt_that_never_shows_life_ends_as_a_reject_that_says_so(mesh):
    options = DecideOptions(attempt_max_s=1.0, state_path="/nonexistent/unused")
    decisions, _ = decide([head(mesh, 0.2 * (t % 3), 0) for t in range(12)], np.random.default_rng(7), options)
    outcomes = [d.outcome for d in decisions]
    assert Outcome.ACCEPT not in outcomes
    reject = decisions[outcomes.index(Outcome.REJECT)]
    assert "liveness undecided (motion" in reject.reason




def test_a_face_failing_only_the_pose_gates_gives_a_liveness_sample_and_no_embedding(stages, portraits):
    """A head turned past the yaw limit is not recognised, but its mesh is what a challenge reads; a face
    that fails another gate too (here: size) gives nothing."""
    from edge.vision.align import FaceAligner
    from edge.vision.pipeline import FacePipeline
    from edge.vision.quality import YAW, QualityGate, QualityOptions

    detector, landmarker = stages
    frame = cv2.resize(portraits[0], (640, 480))
    for options, sampled in [(QualityOptions(max_yaw_deg=0.01, max_roll_deg=0.01), True),
                             (QualityOptions(max_yaw_deg=0.01, min_face_px=1000), False)]:
        pipeline = FacePipeline(detector, FaceAligner(landmarker=landmarker), Embedder(), QualityGate(options),
                                landmarker=landmarker, liveness=LivenessCheck())
        a = pipeline.process(frame)
        assert a.face is not None and not a.usable and a.embedding is None and YAW in a.quality.failures
        assert a.quality.pose_only is sampled and (a.liveness is not None) is sampled, a.quality.reason
        assert ("liveness" in a.times.extra) is sampled


def test_a_photo_held_up_and_tilted_is_refused_end_to_end(stages, portraits, tmp_path):
    """The owner's portrait as a print, tilted up to 25 degrees each way and drifting, in front of the real
    detector and landmark model: the pipeline recognises the owner in every frame, and without the
    liveness stage the door would open; with it the attempt ends as an attack, naming the check."""
    from edge.vision.align import FaceAligner
    from edge.vision.pipeline import FacePipeline
    from edge.vision.quality import QualityGate

    detector, landmarker = stages
    portrait = portraits[0]
    check = LivenessCheck()
    pipeline = FacePipeline(detector, FaceAligner(landmarker=landmarker), Embedder(), QualityGate(),
                            landmarker=landmarker, liveness=check)
    gallery = Gallery(tmp_path / "gallery.db")
    gallery.enroll("owner", pipeline.embed_image(portrait)[None])
    pipeline.matcher = Matcher(gallery)
    rng = np.random.default_rng(8)
    frames = []
    for t in range(14):
        h = plane_homography((256, 120), 1.0, -25 + 50 * t / 13, 8 * math.sin(t / 2), 2 * math.sin(t),
                             (320 + 2 * t, 250 - t))
        f = cv2.warpPerspective(portrait, h, (640, 480), flags=cv2.INTER_AREA, borderValue=(110, 110, 110))
        frames.append(np.clip(f + rng.normal(0, 3, f.shape), 0, 255).astype(np.uint8))
    analyses = [pipeline.process(f) for f in frames]
    assert all(a.usable and a.match.person == "owner" and a.liveness is not None for a in analyses)
    assert all("liveness" in a.times.extra for a in analyses)
    options = DecideOptions(state_path=str(tmp_path / "lockout.json"))

    def outcomes(liveness):
        d = Decider(options, liveness=liveness)
        return [d.update(a.match, 0.1 * i, a.liveness) for i, a in enumerate(analyses)]

    assert Outcome.ACCEPT in [x.outcome for x in outcomes(None)]  # the attack works without the check
    refused = outcomes(check)
    assert Outcome.ACCEPT not in [x.outcome for x in refused]
    attack = next(x for x in refused if x.outcome is Outcome.ATTACK)
    assert attack.liveness.check == "planar" and attack.reason.startswith("attack suspected: planar")
    gallery.close()
