"""Passive liveness: does the face in an attempt's frames move like a head, or like a print or a screen?

Evidence comes from the face-landmark model's 468-point mesh of the subject in each frame the decider votes
on (`edge.identity.decide`): `LivenessCheck.sample(face)` per frame (the pipeline's `liveness` stage),
`LivenessCheck.judge(samples)` over the attempt's frames of the candidate. Figures are in face radii (the
mesh's RMS radius, ~0.3 face widths), so they mean the same at 40 px and at 200 px. The checks:

- **parallax** (live) / **planar** (attack): a print or a screen is a plane, and every view of a plane is a
  homography of every other. A head is not flat: as it turns, the nose and the cheeks move against the
  eye plane in proportion to their depth. `parallax()` fits a homography plus that depth term in one DLT
  (the model's z gives the term its shape only) and measures the depth term: ~0 for a plane however it
  moves. The points it is measured on are the face's own texture, tracked in the pixels
  (edge.vision.texture: corners of the eyes, brows, nostrils, lips), not the mesh: the mesh is the
  model's guess of a face's shape, and it takes part of a tilted print's foreshortening for a head turn
  (up to 0.06 face radii of depth term on hand-held prints, as much as a head turned 8 degrees), while
  the print's texture moves as a plane (on 420 prints and screens of LFW train people at most 0.012
  over three frames: `LivenessOptions.live_texture`). A face that tilted (its mesh's homography far from
  a similarity) while the texture's depth term stayed small is a plane. Samples made from meshes alone
  (no frame) fall back to the mesh's depth term and its own bars.
- **blink** / **mouth** (live): the eyes' opening (lid gap over eye width) dropping well below its median
  over the run; the mouth's opening changing (speech, a smile; off by default: the mesh's mouth moves on
  tilted prints too).
- **static** (attack): a face whose points stayed put over many frames (a print on a stand, a paused
  screen); a living face always drifts.
- continuity: a frame without the face, or one that jumps from the previous frame (a second photo of the
  person in another pose swapped in), starts the run afresh, so two stills never pass as one turning head.

The bars were set on LFW `train` people's sequences of the attack benchmark (convert/bench/attacks.py);
its figures on `test` people are in docs/liveness.md.

What it stops: prints and photos on a screen, held still or moved by hand. What it does not: a video of
the person replayed on a screen moves like a head (that needs the active challenge or IR), nor a print bent
around a cylinder moved so that it looks like a turning head, nor a good 3D mask.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from edge.options import MAX_COUNT, check
from edge.types import Face, LivenessState, LivenessVerdict
from edge.vision.planar import apply_homography, fit_similarity, parallax, radius, rms
from edge.vision.texture import TexturePatch, face_patch, texture_corners, texture_depth, tracked_pairs

# The eye-opening points of the face mesh (MediaPipe's FACEMESH_RIGHT_EYE / LEFT_EYE contours): the eye
# corners (width) and two pairs of upper / lower lid points (gap).
RIGHT_EYE_CORNERS = (33, 133)
LEFT_EYE_CORNERS = (263, 362)
RIGHT_EYE_LIDS = ((159, 145), (158, 153))
LEFT_EYE_LIDS = ((386, 374), (385, 380))
MOUTH_CORNERS = (61, 291)
MOUTH_LIPS = (13, 14)


@dataclass(frozen=True)
class LivenessOptions:
    """The passive liveness checks; the `[liveness]` config section. Figures are in face radii (the mesh's
    RMS radius, about 0.3 face widths), so they mean the same at 40 px and at 200 px."""

    enabled: bool = True
    """Accept a face only when its frames show a living head: a print or a photo on a screen, held still
    or moved, does not open the door. Costs the owner a small head movement (a few degrees) or a blink:
    on the attack benchmark (LFW test people, docs/liveness.md) 4.2% of live-like heads that open without
    it never showed enough, and the median time to open rose by 0.6 s. On by default: a door lock is safe
    out of the box. Needs a bundle with the face-landmark model (`facelock run` refuses to start on an
    older one and says so). Off: any face that matches opens the door, photos of the owner included."""
    min_frames: int = 3
    """Frames of the person's face (in one run, `max_jump`) needed before any verdict."""
    live_parallax: float = 0.045
    """(Samples without a frame only: the mesh's parallax.) A frame whose points moved from the first
    frame's by at least this much in the way depth makes them move (`parallax()`) shows a head. The
    mesh of a print tilted by up to 25 degrees each way gives up to 0.024 on the portraits (0.06 on LFW
    people), taking part of its foreshortening for a head turn; a head gives 0.045 after turning about
    6-7 degrees from the run's first frame."""
    live_texture: float = 0.013
    """A frame whose tracked face texture moved from the first frame's by at least this much in the way
    depth makes points move (`edge.vision.texture`; running median of three frames) shows a head. Set on
    the attack benchmark's sequences of 84 LFW train people: a print moved by hand reached 0.0138 in one
    frame, screens (moire) 0.011-0.012 over three; 0.013 refused all 420 prints and screens and passed 94%
    of the 216 live-like heads that open without liveness (0.010: 2.4% of hand-held screens passed)."""
    live_frames: int = 2
    """... in at least this many frames (one odd frame is not evidence)."""
    plane_motion: float = 0.035
    """A frame whose homography from the first differs from a similarity by at least this (the face tilted
    or turned: a head would show parallax) ..."""
    texture_plane_ratio: float = 0.2
    """... while its texture parallax is under this fraction of that is a plane: attack suspected (a
    tilted print's is under 0.1x, a turning head's about 1x)."""
    plane_ratio: float = 0.8
    """... (samples without a frame to track: the mesh's parallax under this fraction; a turning head's is
    1.4x or more, a tilted print's 0.6x or less)."""
    blink_ratio: float = 0.6
    """A frame whose eye opening (lid gap over eye width) is under this fraction of the run's median is a
    blink: live. Tilting a print by 25 degrees shortens it by 9%; the mesh's jitter on prints: 0.89-1.1."""
    mouth_change: float = 0.0
    """The mouth's opening (inner-lip gap over mouth width) ranging by at least this over the run (speech,
    a smile) is non-rigid motion: live (0: off, the default). Off because the mesh's mouth moves on prints
    too: on hand-held prints of LFW train people it ranged 0.15 or more in 3% of the sequences, each of
    which then opened the door."""
    static_motion: float = 0.02
    """A face whose points all stay within this (RMS) of the first frame's ... (the mesh of a print on a
    stand, with sensor noise, moved 0.009-0.016, at 45 px once 0.020; a living face drifts more) ..."""
    static_frames: int = 15
    """... over this many frames is static: attack suspected."""
    max_jump: float = 0.1
    """A frame whose parallax from the previous frame is over this (a head turning 14 degrees between two
    frames; more like a second photo of the person swapped in) starts the run afresh ..."""
    max_shift: float = 1.0
    """... as does one whose centre moved by more than this many face radii, or whose size changed by more
    than this fraction, from the previous frame."""
    max_frames: int = 30
    """At most this many of the attempt's most recent frames are looked at (3 s at 10 fps; the judge runs
    on every frame that has the votes but not yet a verdict, and costs ~0.3 ms a frame looked at here)."""

    def validate(self) -> LivenessOptions:
        return check("liveness", self, [
            ("min_frames", 2 <= self.min_frames <= MAX_COUNT, f"2-{MAX_COUNT}"),
            ("live_parallax", 0.0 < self.live_parallax < 1.0, "in (0, 1)"),
            ("live_texture", 0.0 < self.live_texture < 1.0, "in (0, 1)"),
            ("texture_plane_ratio", 0.0 <= self.texture_plane_ratio <= 10.0, "0-10"),
            ("live_frames", 1 <= self.live_frames < self.min_frames, f"1 to min_frames - 1 ({self.min_frames - 1})"),
            ("plane_motion", 0.0 < self.plane_motion < 1.0, "in (0, 1)"),
            ("plane_ratio", 0.0 <= self.plane_ratio <= 10.0, "0-10"),
            ("blink_ratio", 0.0 <= self.blink_ratio < 1.0, "in [0, 1)"),
            ("mouth_change", 0.0 <= self.mouth_change <= 10.0, "0 (off) to 10"),
            ("static_motion", 0.0 <= self.static_motion < 1.0, "in [0, 1)"),
            ("static_frames", self.min_frames <= self.static_frames <= MAX_COUNT,
             f"min_frames ({self.min_frames}) to {MAX_COUNT}"),
            ("max_jump", self.live_parallax < self.max_jump <= 10.0, f"> live_parallax ({self.live_parallax}), <= 10"),
            ("max_shift", 0.0 < self.max_shift <= 10.0, "in (0, 10]"),
            ("max_frames", self.min_frames <= self.max_frames <= MAX_COUNT,
             f"min_frames ({self.min_frames}) to {MAX_COUNT}"),
        ])


@dataclass(frozen=True, eq=False)
class LivenessSample:
    """What one frame gives the liveness checks: the subject's mesh points in frame pixels, their depth
    (the model's z), the opening of the eyes and of the mouth, and the face's grey patch for the texture
    parallax (edge.vision.texture; None without the frame)."""

    points: np.ndarray  # (468, 2) float64
    depth: np.ndarray  # (468,) float64
    eye_opening: float
    mouth_opening: float
    patch: TexturePatch | None = None
    memo: dict = field(default_factory=dict, repr=False)  # texture work done once per sample (corners, tracks)


def eye_opening(mesh: np.ndarray) -> float:
    """Lid gap over eye width, averaged over both eyes and two lid pairs each (0 for a degenerate mesh)."""
    ratios = []
    for corners, lids in ((RIGHT_EYE_CORNERS, RIGHT_EYE_LIDS), (LEFT_EYE_CORNERS, LEFT_EYE_LIDS)):
        width = float(np.hypot(*(mesh[corners[0], :2] - mesh[corners[1], :2])))
        gap = np.mean([np.hypot(*(mesh[a, :2] - mesh[b, :2])) for a, b in lids])
        ratios.append(gap / width if width > 1e-9 else 0.0)
    return float(np.mean(ratios))


def sample_from_mesh(mesh: np.ndarray, frame: np.ndarray | None = None) -> LivenessSample:
    """A (468, 3) mesh (frame pixels, z in the same scale) as a sample; a (468, 2) one has no depth. With
    the `frame` (RGB) the sample keeps the face's grey patch for the texture parallax."""
    mesh = np.asarray(mesh, dtype=np.float64)
    depth = mesh[:, 2].copy() if mesh.shape[1] > 2 else np.zeros(len(mesh))
    points = mesh[:, :2].copy()
    return LivenessSample(points, depth, eye_opening(mesh), mouth_opening(mesh), face_patch(frame, points))


def texture_figure(ref: LivenessSample, cur: LivenessSample) -> float | None:
    """The texture parallax of `cur` against `ref` (edge.vision.texture), worked out once per pair: None
    when either has no patch or too few points could be tracked."""
    if ref.patch is None or cur.patch is None:
        return None
    if ref is cur:
        return 0.0
    hit = cur.memo.get("pair")  # (reference, figure): one reference at a time, the run's first frame
    if hit is not None and hit[0] is ref:
        return hit[1]
    if "corners" not in ref.memo:
        ref.memo["corners"] = texture_corners(ref.patch, ref.points, ref.depth)
    pairs = tracked_pairs(ref.patch, ref.points, ref.memo["corners"], cur.patch, cur.points)
    value = None if pairs is None else texture_depth(*pairs, cur.points)
    cur.memo["pair"] = (ref, value)
    return value


def mouth_opening(mesh: np.ndarray) -> float:
    """Inner-lip gap (13-14) over mouth width (61-291)."""
    width = float(np.hypot(*(mesh[MOUTH_CORNERS[0], :2] - mesh[MOUTH_CORNERS[1], :2])))
    gap = float(np.hypot(*(mesh[MOUTH_LIPS[0], :2] - mesh[MOUTH_LIPS[1], :2])))
    return gap / width if width > 1e-9 else 0.0


@dataclass(frozen=True)
class Figures:
    """Per frame of the run judged, against its first frame, in face radii: `parallax` (the mesh's depth
    term, `parallax()`), `plane` (what the fit's homography adds to the best similarity: tilt, perspective),
    `residual` (left after both: non-rigid motion and jitter), `motion` (no fit at all), `texture` (the depth
    term of the face's tracked texture, edge.vision.texture; None where it could not be measured)."""

    parallax: tuple[float, ...]
    plane: tuple[float, ...]
    residual: tuple[float, ...]
    motion: tuple[float, ...]
    texture: tuple[float | None, ...]


def figures(samples: Sequence[LivenessSample]) -> Figures:
    ref, ref_z = samples[0].points, samples[0].depth
    out = [(0.0, 0.0, 0.0, 0.0, texture_figure(samples[0], samples[0]))]
    for s in samples[1:]:
        size = radius(s.points)
        par, res, flat = parallax(ref, ref_z, s.points)
        plane = rms(flat, apply_homography(fit_similarity(ref, s.points), ref)) / size
        out.append((par, plane, res, rms(ref, s.points) / size, texture_figure(samples[0], s)))
    return Figures(*(tuple(col) for col in zip(*out)))


def running_median3(xs: Sequence[float]) -> list[float]:
    """Each value's median with its two neighbours (the ends with the one they have: their smaller)."""
    if len(xs) < 3:
        return [min(xs)] * len(xs) if xs else []
    a = np.asarray(xs, np.float64)
    mid = np.median(np.stack([a[:-2], a[1:-1], a[2:]]), axis=0)
    return [min(a[0], a[1]), *mid.tolist(), min(a[-2], a[-1])]


class LivenessCheck:
    """The liveness stage: `sample(face)` per frame (None without a mesh), `judge(samples)` per attempt."""

    def __init__(self, options: LivenessOptions | None = None):
        self.options = (options or LivenessOptions()).validate()

    def sample(self, face: Face | None, frame: np.ndarray | None = None,
               ir: np.ndarray | None = None) -> LivenessSample | None:
        """The frame's sample from the face's mesh and, with the `frame`, its grey patch (`ir`: not needed
        by these checks)."""
        mesh = None if face is None else face.mesh
        return None if mesh is None else sample_from_mesh(mesh, frame)

    def run(self, samples: Sequence[LivenessSample | None]) -> list[LivenessSample]:
        """The most recent run of frames without a gap (None: a frame without the person's face) or a jump,
        at most `max_frames` long."""
        o = self.options
        run: list[LivenessSample] = []
        for s in list(samples)[-o.max_frames:]:
            if s is None:
                run = []
                continue
            if run:
                a = run[-1]
                size = radius(a.points)
                shift = float(np.hypot(*(a.points.mean(0) - s.points.mean(0)))) / size
                if shift > o.max_shift or abs(radius(s.points) / size - 1.0) > o.max_shift \
                        or parallax(a.points, a.depth, s.points)[0] > o.max_jump:
                    run = []
            run.append(s)
        return run

    def new_attempt(self) -> None:
        """The decider starts a new attempt (the passive checks keep nothing between calls)."""

    def judge(self, samples: Sequence[LivenessSample | None], now: float = 0.0) -> LivenessVerdict:
        """The verdict on an attempt's frames, oldest first (see the module docstring for the checks);
        `now` (the frame's time) is not needed by these checks."""
        o = self.options
        run = self.run(samples)
        n = len(run)
        if n < o.min_frames:
            return LivenessVerdict(LivenessState.UNDECIDED, "frames", f"{n} frames in a run, need {o.min_frames}",
                                   frames=n)
        f = figures(run)
        textured = [x for x in f.texture[1:] if x is not None]
        # The texture's depth term when the frames were there to track it in, as the running median of
        # three frames: a head's turn lasts, a frame whose tracks went astray (its mesh guessed wrong) does
        # not. Where tracking failed (a blurred or dark face) there is no such evidence, rather than the
        # mesh's: a print made hard to track must not fall back to the weaker check. The mesh's only for
        # samples made from meshes alone.
        by_texture = any(s.patch is not None for s in run)
        depth = (running_median3(textured) if len(textured) >= o.live_frames else [0.0] * o.live_frames) \
            if by_texture else list(f.parallax)
        par = sorted(depth, reverse=True)[o.live_frames - 1]
        bar = o.live_texture if by_texture else o.live_parallax
        eyes = np.array([s.eye_opening for s in run])
        median = float(np.median(eyes))
        blink = float(eyes.min()) / median if median > 0 else 1.0
        mouths = [s.mouth_opening for s in run]
        mouth = max(mouths) - min(mouths)
        tilt = max(range(n), key=lambda i: f.plane[i])
        tracked_tilt = by_texture and f.texture[tilt] is not None
        tilt_depth = f.texture[tilt] if tracked_tilt else f.parallax[tilt]
        ratio = o.texture_plane_ratio if tracked_tilt else o.plane_ratio
        what = "texture" if by_texture else "points"
        figs = {"parallax": round(par, 5), "plane": round(f.plane[tilt], 5), "plane_parallax": round(tilt_depth, 5),
                "mesh_parallax": round(max(f.parallax), 5), "residual": round(max(f.residual), 5),
                "motion": round(max(f.motion), 5), "blink": round(blink, 3), "mouth": round(mouth, 3),
                "textured": len(textured)}
        if par >= bar:
            return LivenessVerdict(LivenessState.LIVE, "parallax", f"the face's {what} moved off a plane by "
                                   f"{par:.3f} in {o.live_frames} of {n} frames (>= {bar:g})", n, figs)
        if blink < o.blink_ratio:
            return LivenessVerdict(LivenessState.LIVE, "blink", f"eyes closed to {blink:.2f} of their median "
                                   f"opening (< {o.blink_ratio:g})", n, figs)
        if o.mouth_change > 0 and mouth >= o.mouth_change:
            return LivenessVerdict(LivenessState.LIVE, "mouth", f"mouth opening ranged {mouth:.2f} "
                                   f"(>= {o.mouth_change:g})", n, figs)
        if f.plane[tilt] >= o.plane_motion and tilt_depth < ratio * f.plane[tilt]:
            return LivenessVerdict(LivenessState.ATTACK, "planar", f"the face tilted ({f.plane[tilt]:.3f}) but "
                                   f"its {what} moved as a plane (parallax {tilt_depth:.3f})", n, figs)
        if n >= o.static_frames and max(f.motion) < o.static_motion:
            return LivenessVerdict(LivenessState.ATTACK, "static", f"no motion over {n} frames "
                                   f"({max(f.motion):.3f} < {o.static_motion:g})", n, figs)
        return LivenessVerdict(LivenessState.UNDECIDED, "motion", f"not enough motion yet over {n} frames "
                               f"(parallax {par:.3f}, tilt {f.plane[tilt]:.3f})", n, figs)
