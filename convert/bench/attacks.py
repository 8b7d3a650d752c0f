"""The attack benchmark: do prints and screens of an enrolled person open the door, and does liveness keep
the owner waiting?

Sequences: 640x480 RGB frames at 10 fps, 2-4 s, the face 60-160 px wide (the width of the landmark model's
mesh of the photo, cheek to cheek), on a smooth grey wall with sensor noise, each frame saved as JPEG
(quality 85), as in convert/bench/door.py. Each person gives, from one photo (LFW `test` people: photo 2;
a portrait: itself):
- `print, hand-held`: the photo on paper (contrast lost to 60-85%, lifted blacks, a white margin, a little
  blur) as a plane turned in 3D through a 700 px pinhole camera: tilts of 10-25 degrees each way (yaw and
  pitch, smooth), roll up to 8, drift, a 10% change of distance, and hand shake (1.5 px, 1 degree a frame);
- `print, held still`: the same print on a stand, tilted up to 10 degrees, only the sensor noise changing;
- `screen, hand-held` / `screen, held still`: the photo on a phone screen (a dark bezel, display gamma
  0.8-1.25, moire from the pixel grid beating with the sensor's: 3-7 px fringes at 3-8%, refresh banding
  rolling down the picture: 40-120 px bands at 3-8%), moved as the print (tilts up to 20) or on a stand;
- `live, turning` (and `+ blink`): the photo turned as a head, with the landmark model's own 3D mesh of it:
  the 468 points, a ring just outside the face at the depth of its edge, and fixed anchors on the photo's
  border are triangulated (Delaunay on the 2D points); the mesh and ring are rotated about a pivot half a
  face width behind the face (yaw 3-10 degrees each way, a sweep, a glance or a nod, pitch 1-5 degrees,
  jitter 0.3 degrees), projected with the camera's perspective, and the photo is warped triangle by triangle
  (piecewise affine, nearest triangle drawn last) while the person steps in (15% closer, drifting). `+
  blink`: in two frames the upper lids close 85% of the way onto the lower ones.

Scoring: each frame through the bundle's stages (`bundle_stages`, FacePipeline with the lock's quality gates
and `LivenessCheck(LivenessOptions(enabled=True))`), the person enrolled (alone) from another photo (LFW:
photo 1; a portrait: itself), the real `Decider` at the bundle's thresholds (a dim or soft face at its own,
with the lock's gates for that bundle), frames 0.1 s apart; the same frames decided twice, with the liveness
judge and without. Per kind: APCER (attack sequences with an ACCEPT), BPCER (live sequences without one), and
why the rest were refused (the first ATTACK's check: planar / static; else `undecided`: the votes came but
liveness never said live; else `not recognised`). `BPCER of liveness`: of the live sequences that open without
liveness, those that do not with it. Time to open: from the sequence's first frame to the ACCEPT frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from convert.bench.door import CONDITIONS, _wall, placed_face

FPS = 10.0
FRAME_SIZE, FOCAL = (640, 480), 700.0  # the door camera's frame and focal length (px)
WIDTHS = (60.0, 160.0)
PRINT_MOVING, PRINT_STILL = "print, hand-held", "print, held still"
SCREEN_MOVING, SCREEN_STILL = "screen, hand-held", "screen, held still"
LIVE, LIVE_BLINK = "live, turning", "live, turning + blink"
ATTACKS = (PRINT_MOVING, PRINT_STILL, SCREEN_MOVING, SCREEN_STILL)
LIVES = (LIVE, LIVE_BLINK)
PER_PERSON = {PRINT_MOVING: 2, PRINT_STILL: 1, SCREEN_MOVING: 1, SCREEN_STILL: 1, LIVE: 2, LIVE_BLINK: 1}
# The eye contours' upper and lower lid points, in pairs (MediaPipe's FACEMESH_RIGHT_EYE / LEFT_EYE).
UPPER_LIDS = (246, 161, 160, 159, 158, 157, 173, 466, 388, 387, 386, 385, 384, 398)
LOWER_LIDS = (7, 163, 144, 145, 153, 154, 155, 249, 390, 373, 374, 380, 381, 382)


@dataclass(frozen=True, eq=False)
class Sequence:
    """One attempt's frames and where the face was put in each (frame px)."""

    kind: str
    frames: list[np.ndarray]
    centres: np.ndarray  # (n, 2)
    width_px: float


def rotation(yaw: float, pitch: float, roll: float = 0.0) -> np.ndarray:
    y, p, r = map(math.radians, (yaw, pitch, roll))
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rx = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
    rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    return rz @ ry @ rx


def face_geometry(mesh: np.ndarray) -> tuple[np.ndarray, float]:
    """(the face's centre, its width) in the photo: the mesh's centroid and its width cheek to cheek."""
    return mesh[:, :2].mean(0), float(np.ptp(mesh[:, 0]))


def _camera(frame: np.ndarray, rng: np.random.Generator, condition: str = "clean") -> np.ndarray:
    """The picture `condition` (door.CONDITIONS: blur, light, noise of sigma 2 at least), JPEG 85: uint8 RGB."""
    import cv2

    light, noise, blur = CONDITIONS[condition]
    frame = cv2.GaussianBlur(frame, (0, 0), blur) if blur else frame
    noisy = frame * light + max(2.0, noise) * rng.standard_normal(frame.shape, dtype=np.float32)
    noisy = np.clip(noisy, 0, 255).astype(np.uint8)
    _ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(noisy, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
    return cv2.cvtColor(cv2.imdecode(jpeg, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


# -- prints and screens: a plane --------------------------------------------------------------------------

def plane_homography(centre, scale: float, yaw: float, pitch: float, roll: float, at) -> np.ndarray:
    """Media px -> frame px: the media (its point `centre` at `at`, `scale` frame px per media px at FOCAL)
    turned in 3D and projected through the pinhole camera."""
    r = rotation(yaw, pitch, roll)
    k = np.array([[FOCAL, 0, at[0]], [0, FOCAL, at[1]], [0, 0, 1.0]])
    a = np.array([[scale, 0, -scale * centre[0]], [0, scale, -scale * centre[1]], [0, 0, 1.0]])
    return k @ np.column_stack([r[:, 0], r[:, 1], [0, 0, FOCAL]]) @ a


def print_media(photo: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """(the photo printed: contrast loss, paper white, a margin, print blur; the margin in px)."""
    import cv2

    p = photo.astype(np.float32)
    p = p.mean() + rng.uniform(0.6, 0.85) * (p - p.mean())
    p = 18 + 0.9 * p * rng.uniform(0.95, 1.05, 3)
    p = cv2.GaussianBlur(p, (0, 0), 0.6)
    pad = int(0.08 * max(photo.shape[:2]))
    return cv2.copyMakeBorder(p, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(232, 230, 225)), pad


def screen_media(photo: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """(the photo on a screen: display gamma, a dark bezel; the bezel in px)."""
    import cv2

    p = 255.0 * (photo.astype(np.float32) / 255.0) ** rng.uniform(0.8, 1.25)
    pad = int(0.06 * max(photo.shape[:2]))
    return cv2.copyMakeBorder(p, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(12, 12, 14)), pad


def _screen_light(t: int, rng_state: tuple) -> np.ndarray:
    """Moire (a fringe pattern fixed on the screen, as the grids beat) and refresh banding (horizontal
    bands rolling down the frame), as a gain per pixel (h, w, 1)."""
    a_m, period, angle, a_b, band, speed = rng_state
    w, h = FRAME_SIZE
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    moire = 1 + a_m * np.cos((2 * np.pi / period) * (xx * math.cos(angle) + yy * math.sin(angle)))
    return (moire * (1 + a_b * np.sin(2 * np.pi * (yy[:, :1] / band + speed * t))))[..., None]


def plane_sequence(photo: np.ndarray, mesh: np.ndarray, kind: str, rng: np.random.Generator,
                   width_px: float | None = None, frames: int | None = None, condition: str = "clean") -> Sequence:
    """A print or a screen of `photo` (its landmark mesh `mesh`, photo px) before the camera, in `condition`."""
    import cv2

    moving = kind in (PRINT_MOVING, SCREEN_MOVING)
    screen = kind in (SCREEN_MOVING, SCREEN_STILL)
    media, pad = (screen_media if screen else print_media)(photo, rng)
    centre, face_w = face_geometry(mesh)
    centre = centre + pad
    width_px = width_px or rng.uniform(*WIDTHS)
    n = frames or int(rng.integers(20, 41))  # 2-4 s at 10 fps
    w, h = FRAME_SIZE
    scale = width_px / face_w
    at0 = np.array([rng.uniform(0.35, 0.65) * w, rng.uniform(0.35, 0.55) * h])
    wall = _wall(rng, w, h).astype(np.float32)
    most = 20.0 if screen else 25.0
    amp = rng.uniform(10, most, 2) * rng.choice([-1, 1], 2)
    freq, phase = rng.uniform(0.8, 2.0, 3), rng.uniform(0, 2 * np.pi, 3)
    roll_amp, drift, dist = rng.uniform(0, 8), rng.uniform(-15, 15, 2), rng.uniform(-0.1, 0.1)
    still = rng.uniform(-10, 10, 3)
    light = (rng.uniform(0.03, 0.08), rng.uniform(3, 7), rng.uniform(0, np.pi), rng.uniform(0.03, 0.08),
             rng.uniform(40, 120), rng.uniform(0.05, 0.3))
    ones = np.ones(media.shape[:2], np.float32)
    content = np.zeros_like(ones)
    content[pad:-pad, pad:-pad] = 1.0
    out, centres = [], []
    for i in range(n):
        t = i / FPS
        if moving:
            yaw, pitch = amp * np.sin(freq[:2] * t + phase[:2])
            roll = roll_amp * math.sin(freq[2] * t + phase[2])
            shake = rng.normal(0, 1.0, 3)
            at = at0 + drift * t + rng.normal(0, 1.5, 2)
            s = scale * (1 + dist * math.sin(t))
            yaw, pitch, roll = yaw + shake[0], pitch + shake[1], roll + shake[2]
        else:
            (yaw, pitch, roll), at, s = still, at0, scale
        hom = plane_homography(centre, s, yaw, pitch, roll, at)
        layer = cv2.warpPerspective(media, hom, (w, h), flags=cv2.INTER_AREA)
        mask = cv2.warpPerspective(ones, hom, (w, h))[..., None]
        if screen:
            lit = cv2.warpPerspective(content, hom, (w, h))[..., None]
            layer = layer * (1 + lit * (_screen_light(i, light) - 1))
        out.append(_camera(wall + mask * (layer - wall), rng, condition))
        c = hom @ [centre[0], centre[1], 1.0]
        centres.append(c[:2] / c[2])
    return Sequence(kind, out, np.array(centres), float(width_px))


# -- live-like: the photo turned as a head with the landmark model's 3D mesh --------------------------------

def _head_points(mesh: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, int, np.ndarray]:
    """(source points (N, 3): the mesh, a ring just outside the face at its edge's depth, fixed anchors on
    the photo's border; how many of them move (mesh + ring); the triangles)."""
    from scipy.spatial import Delaunay

    h, w = shape
    c, fw = face_geometry(mesh)
    fh = float(np.ptp(mesh[:, 1]))
    a = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    ring = np.column_stack([c[0] + 0.66 * fw * np.cos(a), c[1] + 0.62 * fh * np.sin(a)])
    ring = np.clip(ring, 2, [w - 3, h - 3])
    ring = np.column_stack([ring, np.full(len(a), np.percentile(mesh[:, 2], 95))])
    e = np.linspace(0, 1, 6)
    ex, ey = e * (w - 1), e * (h - 1)
    border = np.unique(np.concatenate([np.column_stack(xy) for xy in
                                       ((ex, 0 * e), (ex, 0 * e + h - 1), (0 * e, ey), (0 * e + w - 1, ey))]), axis=0)
    pts = np.vstack([mesh, ring, np.column_stack([border, np.full(len(border), 1e6)])])
    return pts, len(mesh) + len(ring), Delaunay(pts[:, :2]).simplices


def warp_head(photo: np.ndarray, src: np.ndarray, dst: np.ndarray, depth: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """The photo warped piecewise-affinely so that points `src` (N, 2) land on `dst` (N, 2); where
    triangles overlap (the nose over a cheek), the one of the smallest mean `depth` is drawn last."""
    import cv2

    h, w = photo.shape[:2]
    index = np.full((h, w), -1, np.int32)
    for t in np.argsort(-depth[tris].mean(1)):  # far first, near last
        cv2.fillConvexPoly(index, np.round(dst[tris[t]] * 16).astype(np.int32), int(t), cv2.LINE_8, 4)
    d = np.concatenate([dst[tris], np.ones((len(tris), 3, 1))], axis=2)  # (T, 3, 3): rows x, y, 1
    m = np.einsum("tki,tkj->tij", src[tris], np.linalg.pinv(d).transpose(0, 2, 1))  # (T, 2, 3): dst -> src
    # Pixels no triangle covers keep their place: the identity map, appended as triangle -1.
    m = np.concatenate([m, [[[1, 0, 0], [0, 1, 0]]]]).astype(np.float32).reshape(-1, 6)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    c = [m[:, j][index] for j in range(6)]
    return cv2.remap(photo, c[0] * xx + c[1] * yy + c[2], c[3] * xx + c[4] * yy + c[5], cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REFLECT)


def head_pose_track(rng: np.random.Generator, n: int, yaw_amp: float | None = None) -> np.ndarray:
    """(n, 3) yaw, pitch, roll in degrees: a sweep, a glance or a nod of 3-10 degrees, with jitter."""
    t = np.arange(n) / max(n - 1, 1)
    a = (yaw_amp if yaw_amp is not None else rng.uniform(3, 10)) * rng.choice([-1, 1])
    p = rng.uniform(1, 5) * rng.choice([-1, 1])
    style = rng.integers(3)
    if style == 0:  # a sweep across
        yaw, pitch = a * (t - 0.5), p * np.sin(np.pi * t)
    elif style == 1:  # a glance aside and back
        yaw, pitch = a * np.sin(np.pi * t), p * (t - 0.5)
    else:  # a nod while turning a little
        yaw, pitch = 0.5 * a * t, 2 * p * np.sin(np.pi * t)
    return np.column_stack([yaw, pitch, np.zeros(n)]) + rng.normal(0, 0.3, (n, 3))


class HeadRenderer:
    """The photo turned as a head (see the module docstring), one frame at a time: `render(pose, t, grow,
    blink, rng)` for a pose the caller chooses frame by frame (the live sequences' track, or a person
    answering the lock's challenge). Draws from `rng` where the person stands and how they drift."""

    def __init__(self, photo: np.ndarray, mesh: np.ndarray, rng: np.random.Generator, width_px: float,
                 condition: str = "clean"):
        import cv2

        self.condition = condition  # the picture condition of every frame (`_camera`)
        mesh = np.asarray(mesh, np.float64)
        shrink = min(1.0, 1.5 * width_px / face_geometry(mesh)[1])  # warp at 1.5x the frame's scale, not more
        if shrink < 1.0:
            photo = cv2.resize(photo, None, fx=shrink, fy=shrink, interpolation=cv2.INTER_AREA)
            mesh = mesh * shrink  # (pixel centres move by (shrink - 1) / 2 px: immaterial here)
        self.width_px = width_px
        self.n_mesh = len(mesh)
        self.pts, self.moving, self.tris = _head_points(mesh, photo.shape[:2])
        self.c, self.face_w = face_geometry(mesh)
        self.c3 = np.array([self.c[0], self.c[1], mesh[:, 2].mean()])
        self.pivot = np.array([0.0, 0.0, 0.5 * self.face_w])
        w, h = FRAME_SIZE
        self.at0 = np.array([rng.uniform(0.35, 0.65) * w, rng.uniform(0.35, 0.55) * h])
        self.drift, self.angle = rng.uniform(-20, 20, 2), rng.uniform(-3, 3)
        self.wall = _wall(rng, w, h).astype(np.float32)
        self.shape = photo.shape[:2]
        self.src = photo.astype(np.float32)

    def render(self, pose, t: float, grow: float, blink: bool, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(the camera's frame at time `t` s with the head at `pose` (yaw, pitch, roll degrees; yaw > 0 turns
        to the person's right, pitch > 0 looks down), `grow` times its size (stepping in), eyes shut when
        `blink`; where the face's centre is in it)."""
        import cv2

        w, h = FRAME_SIZE
        ph, pw = self.shape
        pts, moving, c = self.pts, self.moving, self.c
        s = self.width_px / self.face_w * grow
        dist = FOCAL / s  # the camera's distance in photo px
        x = pts[:moving] - self.c3
        r = (x - self.pivot) @ rotation(*pose).T + self.pivot
        xy = c + r[:, :2] * ((dist + x[:, 2]) / (dist + r[:, 2]))[:, None]  # unturned: the photo as it is
        dst = np.vstack([xy, pts[moving:, :2]])
        if blink:
            dst[list(UPPER_LIDS)] += 0.85 * (dst[list(LOWER_LIDS)] - dst[list(UPPER_LIDS)])
        turned = warp_head(self.src, pts[:, :2], dst, np.concatenate([r[:, 2], pts[moving:, 2]]), self.tris)
        m = cv2.getRotationMatrix2D((float(c[0]), float(c[1])), self.angle, s)
        m[:, 2] += self.at0 + self.drift * t - c
        flags = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
        layer = cv2.warpAffine(turned, m, (w, h), flags=flags)
        mask = cv2.warpAffine(np.ones((ph, pw), np.float32), m, (w, h))
        mask = cv2.GaussianBlur(mask, (0, 0), max(1.0, 2 * s))[..., None]  # the photo's edge fades into the wall
        frame = _camera(self.wall + mask * (layer - self.wall), rng, self.condition)
        return frame, m[:, :2] @ xy[:self.n_mesh].mean(0) + m[:, 2]


def live_sequence(photo: np.ndarray, mesh: np.ndarray, rng: np.random.Generator, blink: bool = False,
                  width_px: float | None = None, frames: int | None = None, yaw_amp: float | None = None,
                  condition: str = "clean") -> Sequence:
    """The photo turned as a head (module docstring) as the person steps up to the door, in `condition`."""
    width_px = width_px or rng.uniform(*WIDTHS)
    n = frames or int(rng.integers(20, 41))  # 2-4 s at 10 fps
    poses = head_pose_track(rng, n, yaw_amp)
    blinks = {int(b) + k for b in [rng.integers(3, n - 3)] for k in (0, 1)} if blink else set()
    head = HeadRenderer(photo, mesh, rng, width_px, condition)
    out, centres = [], []
    for i in range(n):
        grow = 0.85 + 0.15 * i / max(n - 1, 1)  # stepping in
        frame, centre = head.render(poses[i], i / FPS, grow, i in blinks, rng)
        out.append(frame)
        centres.append(centre)
    return Sequence(LIVE_BLINK if blink else LIVE, out, np.array(centres), float(width_px))


def sequences(photo: np.ndarray, mesh: np.ndarray, rng: np.random.Generator, per_person: dict | None = None,
              condition: str = "clean"):
    """Every kind of sequence for one photo, `per_person` of each, in `condition` (a generator: big frames)."""
    for kind, count in (per_person or PER_PERSON).items():
        for _ in range(count):
            yield (live_sequence(photo, mesh, rng, blink=kind == LIVE_BLINK, condition=condition) if kind in LIVES
                   else plane_sequence(photo, mesh, kind, rng, condition=condition))


# -- scoring ----------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Scored:
    """One sequence through the pipeline: per frame (match or None, liveness sample or None, the face's
    conditions); `placed`: frames whose subject is where the face was put (convert.bench.door.placed_face)."""

    kind: str
    person: str
    width_px: float
    frames: int
    placed: int
    trace: tuple


def score(pipeline, seq: Sequence, person: str) -> Scored:
    trace, placed = [], 0
    for frame, centre in zip(seq.frames, seq.centres):
        a = pipeline.process(frame)
        placed += a.face is not None and placed_face(a.face.center, centre, seq.width_px)
        trace.append((a.match if a.usable else None, a.liveness, a.quality.conditions if a.usable else ()))
    return Scored(seq.kind, person, seq.width_px, len(seq.frames), placed, tuple(trace))


def decide(trace, threshold: float, liveness, bars=None) -> tuple[float | None, str, dict]:
    """(seconds from the first frame to the ACCEPT, or None; why: the liveness check that passed it
    (parallax / blink / mouth; "" without a judge), or why not: planar / static / undecided / not
    recognised; the figures of the verdict behind it (the ACCEPT's, else the last one seen)) through the
    real Decider, with `liveness` (a LivenessCheck) or without (None); a dim or soft face at its `bars`."""
    from edge.identity.decide import Decider, Outcome
    from edge.identity.decide_options import at_operating_point
    from edge.types import LivenessState

    d = Decider(at_operating_point(threshold, bars), liveness=liveness)
    refusal, undecided, figs = "", False, {}
    for i, (match, sample, conditions) in enumerate(trace):
        out = d.update(match, i / FPS, sample, conditions)
        v = out.liveness
        figs = v.figures if v is not None else figs
        if out.outcome is Outcome.ACCEPT:
            return i / FPS, "" if v is None else v.check, figs
        if v is not None and v.state is LivenessState.ATTACK and not refusal:
            refusal = v.check
        undecided |= v is not None and v.state is LivenessState.UNDECIDED
    return None, refusal or ("undecided" if undecided else "not recognised"), figs


def summarise(scored: list[Scored], threshold: float, options=None, bars=None) -> dict:
    """Per kind: n, accepted with / without liveness, why refused; live kinds also BPCERs, median times to
    open, the median rise over those opening both ways. `options`: LivenessOptions (default: enabled)."""
    from edge.vision.liveness import LivenessCheck, LivenessOptions

    check = LivenessCheck(options or LivenessOptions(enabled=True))
    out: dict = {}
    for kind in ATTACKS + LIVES:
        rows = [(decide(s.trace, threshold, check, bars), decide(s.trace, threshold, None, bars))
                for s in scored if s.kind == kind]
        if not rows:
            continue
        n = len(rows)
        on = [a[0] for a, _ in rows]
        off = [b[0] for _, b in rows]
        why = [a[1] for a, _ in rows if a[0] is None]
        by = [a[1] for a, _ in rows if a[0] is not None]
        cell = {"n": n, "accepted": sum(t is not None for t in on) / n,
                "accepted_off": sum(t is not None for t in off) / n,
                "refused": {r: why.count(r) / n for r in ("planar", "static", "undecided", "not recognised")},
                "opened_by": {c: by.count(c) / n for c in ("parallax", "blink", "mouth")}}
        if kind in LIVES:
            opened_off = [i for i in range(n) if off[i] is not None]
            both = [i for i in opened_off if on[i] is not None]
            med = lambda xs: float(np.median(xs)) if xs else None
            cell.update(bpcer=1 - cell["accepted"], bpcer_off=1 - cell["accepted_off"],
                        bpcer_liveness=(1 - len(both) / len(opened_off)) if opened_off else None,
                        open_s=med([t for t in on if t is not None]), open_off_s=med([t for t in off if t is not None]),
                        rise_s=med([on[i] - off[i] for i in both]))
        out[kind] = cell
    return out

