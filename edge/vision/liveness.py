"""Passive liveness: does the face in an attempt's frames move like a head, or like a print or a screen?

Evidence comes from the face-landmark model's 468-point mesh of the subject in each frame the decider votes
on (`edge.identity.decide`): `LivenessCheck.sample(face)` per frame (the pipeline's `liveness` stage),
`LivenessCheck.judge(samples)` over the attempt's frames of the candidate. Figures are in face radii (the
mesh's RMS radius, ~0.3 face widths), so they mean the same at 40 px and at 200 px. The checks:

- **parallax** (live) / **planar** (attack): a print or a screen is a plane, and every view of a plane is a
  homography of every other, so the mesh of each frame fits the first frame's through one 3x3 homography
  to within the mesh's jitter. A head is not flat: as it turns, the nose and the cheeks move against the
  eye plane in proportion to their depth. `parallax()` fits a homography plus that depth term in one DLT
  and measures the depth term: ~0 for a plane however it moves, 0.045 for a head turned ~6 degrees. (The
  plain homography residual says the same but carries the jitter of all 468 points; the depth term is one
  2D vector fitted over them, so jitter hardly feeds it.) The model's own z is used only as the shape of
  that term: it gives a photo a face's depth too, so z alone tells nothing about the print. A face that
  tilted (its homography far from a similarity) while the depth term stayed small is a plane.
- **blink** / **mouth** (live): the eyes' opening (lid gap over eye width) dropping well below its median
  over the run; the mouth's opening changing (speech, a smile). A print can do neither.
- **static** (attack): a face whose points stayed put over many frames (a print on a stand, a paused
  screen); a living face always drifts.
- continuity: a frame without the face, or one that jumps from the previous frame (a second photo of the
  person in another pose swapped in), starts the run afresh, so two stills never pass as one turning head.

Measured on the astronaut portrait warped as a plane through the real detector and landmark model (45
sequences: 45-100 px faces, tilts up to 25 degrees each way, drift, hand shake, sensor noise): no print was
taken for live; largest parallax 0.024, blink ratio >= 0.86, mouth range <= 0.067. The model takes part of
a tilted print's foreshortening for a head turn, which is why the live bar sits at 0.045, not lower.

What it stops: prints and photos on a screen, held still or moved by hand. What it does not: a video of
the person replayed on a screen moves like a head (that needs the active challenge or IR), nor a print bent
around a cylinder moved so that it looks like a turning head, nor a good 3D mask.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edge.options import MAX_COUNT, check
from edge.types import Face, LivenessState, LivenessVerdict

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

    enabled: bool = False
    """Accept a face only when its frames show a living head: a print or a photo on a screen, held still
    or moved, does not open the door. Costs the owner a small head movement or a blink. Off by default
    until its false rejections of real owners are measured (the attack benchmark); off: any face that
    matches opens it, photos of the owner included."""
    min_frames: int = 3
    """Frames of the person's face (in one run, `max_jump`) needed before any verdict."""
    live_parallax: float = 0.045
    """A frame whose points moved from the first frame's by at least this much in the way depth makes
    them move (`edge.vision.liveness.parallax`) shows a head. The face-landmark model gives a print tilted
    by up to 25 degrees each way up to 0.024 (0.030 seen in one sweep), taking part of its foreshortening
    for a head turn; a head gives 0.045 after turning about 6-7 degrees from the run's first frame."""
    live_frames: int = 2
    """... in at least this many frames (one odd frame is not evidence)."""
    plane_motion: float = 0.035
    """A frame whose homography from the first differs from a similarity by at least this (the face tilted
    or turned: a head would show parallax) ..."""
    plane_ratio: float = 0.8
    """... while its parallax is under this fraction of that (a turning head's is 1.4x or more, a tilted
    print's 0.6x or less) is a plane: attack suspected."""
    blink_ratio: float = 0.6
    """A frame whose eye opening (lid gap over eye width) is under this fraction of the run's median is a
    blink: live. Tilting a print by 25 degrees shortens it by 9%; the mesh's jitter on prints: 0.89-1.1."""
    mouth_change: float = 0.15
    """The mouth's opening (inner-lip gap over mouth width) ranging by at least this over the run
    (speech, a smile) is non-rigid motion: live."""
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
            ("live_frames", 1 <= self.live_frames < self.min_frames, f"1 to min_frames - 1 ({self.min_frames - 1})"),
            ("plane_motion", 0.0 < self.plane_motion < 1.0, "in (0, 1)"),
            ("plane_ratio", 0.0 <= self.plane_ratio <= 10.0, "0-10"),
            ("blink_ratio", 0.0 <= self.blink_ratio < 1.0, "in [0, 1)"),
            ("mouth_change", 0.0 < self.mouth_change <= 10.0, "in (0, 10]"),
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
    (the model's z), and the opening of the eyes and of the mouth."""

    points: np.ndarray  # (468, 2) float64
    depth: np.ndarray  # (468,) float64
    eye_opening: float
    mouth_opening: float


def eye_opening(mesh: np.ndarray) -> float:
    """Lid gap over eye width, averaged over both eyes and two lid pairs each (0 for a degenerate mesh)."""
    ratios = []
    for corners, lids in ((RIGHT_EYE_CORNERS, RIGHT_EYE_LIDS), (LEFT_EYE_CORNERS, LEFT_EYE_LIDS)):
        width = float(np.hypot(*(mesh[corners[0], :2] - mesh[corners[1], :2])))
        gap = np.mean([np.hypot(*(mesh[a, :2] - mesh[b, :2])) for a, b in lids])
        ratios.append(gap / width if width > 1e-9 else 0.0)
    return float(np.mean(ratios))


def sample_from_mesh(mesh: np.ndarray) -> LivenessSample:
    """A (468, 3) mesh (frame pixels, z in the same scale) as a sample; a (468, 2) one has no depth."""
    mesh = np.asarray(mesh, dtype=np.float64)
    depth = mesh[:, 2].copy() if mesh.shape[1] > 2 else np.zeros(len(mesh))
    return LivenessSample(mesh[:, :2].copy(), depth, eye_opening(mesh), mouth_opening(mesh))


def _normaliser(pts: np.ndarray) -> np.ndarray:
    """Hartley's normalisation (3, 3): centroid to the origin, mean distance sqrt(2)."""
    c = pts.mean(0)
    d = float(np.sqrt(((pts - c) ** 2).sum(1)).mean())
    s = math.sqrt(2.0) / max(d, 1e-12)
    return np.array([[s, 0, -s * c[0]], [0, s, -s * c[1]], [0, 0, 1.0]])


def _apply(h: np.ndarray, pts: np.ndarray) -> np.ndarray:
    x, y = pts[:, 0], pts[:, 1]  # written out: a BLAS call per tiny product costs more than the sums
    w = h[2, 0] * x + h[2, 1] * y + h[2, 2]
    return np.column_stack([(h[0, 0] * x + h[0, 1] * y + h[0, 2]) / w, (h[1, 0] * x + h[1, 1] * y + h[1, 2]) / w])


def _null_vector(rows: np.ndarray) -> np.ndarray:
    """The unit vector v minimising |rows @ v|: the normal equations' smallest eigenvector (11 x 11 at most;
    well conditioned on Hartley-normalised points, and ~20x cheaper than the SVD of the 936-row system)."""
    return np.linalg.eigh(rows.T @ rows)[1][:, 0]


def fit_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 3x3 least-squares similarity taking `src` to `dst` (Umeyama, no reflection)."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    u, d, vt = np.linalg.svd(xd.T @ xs)
    s = np.array([1.0, 1.0 if np.linalg.det(u) * np.linalg.det(vt) >= 0 else -1.0])
    r = (u * s) @ vt
    c = (d * s).sum() / max(float((xs**2).sum()), 1e-12)
    m = np.eye(3)
    m[:2, :2], m[:2, 2] = c * r, mu_d - c * r @ mu_s
    return m


def radius(pts: np.ndarray) -> float:
    """The face's size: RMS distance of the mesh points from their centroid (about 0.3 face widths)."""
    return float(np.sqrt(((pts - pts.mean(0)) ** 2).sum(1).mean()))


def _rms(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(((a - b) ** 2).sum(1).mean()))


def depth_fit(ref: np.ndarray, ref_z: np.ndarray, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The joint fit of `parallax()`: (the homography part applied to `ref`, that plus the depth term),
    both (N, 2) frame px. Their difference is how each point moved because of its depth: on a turning head
    the nose's points move the way the head turned, against the eye plane."""
    ts, td = _normaliser(ref), _normaliser(pts)
    a, b = _apply(ts, ref), _apply(td, pts)
    z = (ref_z - ref_z.mean()) * ts[0, 0]
    n = len(a)
    rows = np.zeros((2 * n, 11))
    rows[0::2, 0:2], rows[0::2, 2] = a, 1.0
    rows[0::2, 6:8], rows[0::2, 8], rows[0::2, 9] = -b[:, :1] * a, -b[:, 0], z
    rows[1::2, 3:5], rows[1::2, 5] = a, 1.0
    rows[1::2, 6:8], rows[1::2, 8], rows[1::2, 10] = -b[:, 1:] * a, -b[:, 1], z
    theta = _null_vector(rows)
    h = theta[:9].reshape(3, 3)
    w = h[2, 0] * a[:, 0] + h[2, 1] * a[:, 1] + h[2, 2]
    u = h[0, 0] * a[:, 0] + h[0, 1] * a[:, 1] + h[0, 2]
    v = h[1, 0] * a[:, 0] + h[1, 1] * a[:, 1] + h[1, 2]
    back = np.linalg.inv(td)
    flat = _apply(back, np.column_stack([u / w, v / w]))
    full = _apply(back, np.column_stack([(u + z * theta[9]) / w, (v + z * theta[10]) / w]))
    return flat, full


def parallax(ref: np.ndarray, ref_z: np.ndarray, pts: np.ndarray) -> tuple[float, float, np.ndarray]:
    """How far `pts` (N, 2) moved from `ref` (N, 2) in the way depth makes points move, and what is left.

    Any view of a rigid 3D point set is, to first order, a homography of another plus a shift proportional
    to each point's depth (z x a 2D vector: the out-of-plane turn). One linear DLT fits both (11 unknowns,
    Hartley-normalised; `ref_z` is the model's depth of the reference points, used only as the shape of
    that shift). Returns (the depth term's RMS size, the joint fit's RMS residual) in face radii, and the
    fit's homography part applied to `ref` (frame px). On a plane the depth term is ~0 however the plane
    moves; the jitter of the mesh, spread over 468 points, hardly feeds it (it is one 2D vector), which is
    why this is steadier than the plain homography residual. `depth_fit` gives the term itself."""
    flat, full = depth_fit(ref, ref_z, pts)
    size = radius(pts)
    return _rms(full, flat) / size, _rms(full, pts) / size, flat


def mouth_opening(mesh: np.ndarray) -> float:
    """Inner-lip gap (13-14) over mouth width (61-291)."""
    width = float(np.hypot(*(mesh[MOUTH_CORNERS[0], :2] - mesh[MOUTH_CORNERS[1], :2])))
    gap = float(np.hypot(*(mesh[MOUTH_LIPS[0], :2] - mesh[MOUTH_LIPS[1], :2])))
    return gap / width if width > 1e-9 else 0.0


@dataclass(frozen=True)
class Figures:
    """Per frame of the run judged, against its first frame, in face radii: `parallax` (the depth term,
    `parallax()`), `plane` (what the fit's homography adds to the best similarity: tilt, perspective),
    `residual` (left after both: non-rigid motion and jitter), `motion` (no fit at all)."""

    parallax: tuple[float, ...]
    plane: tuple[float, ...]
    residual: tuple[float, ...]
    motion: tuple[float, ...]


def figures(samples: Sequence[LivenessSample]) -> Figures:
    ref, ref_z = samples[0].points, samples[0].depth
    out = [(0.0, 0.0, 0.0, 0.0)]
    for s in samples[1:]:
        size = radius(s.points)
        par, res, flat = parallax(ref, ref_z, s.points)
        plane = _rms(flat, _apply(fit_similarity(ref, s.points), ref)) / size
        out.append((par, plane, res, _rms(ref, s.points) / size))
    return Figures(*(tuple(col) for col in zip(*out)))


class LivenessCheck:
    """The liveness stage: `sample(face)` per frame (None without a mesh), `judge(samples)` per attempt."""

    def __init__(self, options: LivenessOptions | None = None):
        self.options = (options or LivenessOptions()).validate()

    def sample(self, face: Face | None, frame: np.ndarray | None = None,
               ir: np.ndarray | None = None) -> LivenessSample | None:
        """The frame's sample from the face's mesh (`frame`, `ir`: not needed by these checks)."""
        mesh = None if face is None else face.mesh
        return None if mesh is None else sample_from_mesh(mesh)

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
        par = sorted(f.parallax, reverse=True)[o.live_frames - 1]
        eyes = np.array([s.eye_opening for s in run])
        median = float(np.median(eyes))
        blink = float(eyes.min()) / median if median > 0 else 1.0
        mouths = [s.mouth_opening for s in run]
        mouth = max(mouths) - min(mouths)
        tilt = max(range(n), key=lambda i: f.plane[i])
        figs = {"parallax": round(par, 5), "plane": round(f.plane[tilt], 5),
                "plane_parallax": round(f.parallax[tilt], 5), "residual": round(max(f.residual), 5),
                "motion": round(max(f.motion), 5), "blink": round(blink, 3), "mouth": round(mouth, 3)}
        if par >= o.live_parallax:
            return LivenessVerdict(LivenessState.LIVE, "parallax", f"points moved off a plane by {par:.3f} in "
                                   f"{o.live_frames} of {n} frames (>= {o.live_parallax:g})", n, figs)
        if blink < o.blink_ratio:
            return LivenessVerdict(LivenessState.LIVE, "blink", f"eyes closed to {blink:.2f} of their median "
                                   f"opening (< {o.blink_ratio:g})", n, figs)
        if mouth >= o.mouth_change:
            return LivenessVerdict(LivenessState.LIVE, "mouth", f"mouth opening ranged {mouth:.2f} "
                                   f"(>= {o.mouth_change:g})", n, figs)
        if f.plane[tilt] >= o.plane_motion and f.parallax[tilt] < o.plane_ratio * f.plane[tilt]:
            return LivenessVerdict(LivenessState.ATTACK, "planar", f"the face tilted ({f.plane[tilt]:.3f}) but "
                                   f"moved as a plane (parallax {f.parallax[tilt]:.3f})", n, figs)
        if n >= o.static_frames and max(f.motion) < o.static_motion:
            return LivenessVerdict(LivenessState.ATTACK, "static", f"no motion over {n} frames "
                                   f"({max(f.motion):.3f} < {o.static_motion:g})", n, figs)
        return LivenessVerdict(LivenessState.UNDECIDED, "motion", f"not enough motion yet over {n} frames "
                               f"(parallax {par:.3f}, tilt {f.plane[tilt]:.3f})", n, figs)
