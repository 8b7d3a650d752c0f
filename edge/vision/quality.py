"""Pick the subject among the detected faces, then decide whether its picture is good enough to recognise.

Subject: the face a person at the door presents is a sure face, large and near the middle of the picture;
someone passing behind them is small or off to a side, and a detector's false positive (a patch of wall, a
coat) is unsure. Each face gets a score: its confidence (detector score x the landmark model's face
presence, `Face.confidence`) times a mix of its size (side relative to the largest face's) and its
closeness to the frame centre; the best one is the subject. Size alone does not win: the landmark model
drops what it does not take for a face (presence < 0.5: a wall scores ~0.0001), and one that half-fools it
(presence 0.6) at a detector score of 0.71, twice the size of the real face (0.97), still loses to it in
the middle of the frame with the real face 150 px off to the side. (Without a landmark model, only the
detector's score weighs against size.)
Only the subject is aligned and embedded, so a frame costs one embedding however many people are in view.

Gates (all measured; the verdict lists every one that failed, first failure first):
- size: the shorter side of the box, and the distance between the eyes (alignment needs both eyes well
  apart: a 20 px face upscaled to a 150 px chip gives an embedding of blur);
- contrast: the standard deviation of the grey face box's pixels (0-255): a face in too little light (or
  washed out) is refused as too dark;
- sharpness: the standard deviation of the Laplacian over the face box over the box's own contrast, after
  resizing the box to a fixed square: how much of the face's contrast is fine detail. Neither the face's
  size (near or far) nor the light (the Laplacian and the pixels dim together) changes it; blur does. (The
  Laplacian's variance alone falls with the square of the light: a dim face was refused as "blurry", and
  a dim face with sensor noise, which the Laplacian takes for detail, passed.)
- pose from the keypoints (the landmark model's eye centres and nose tip when it has run, BlazeFace's
  otherwise): roll is the angle of the eye line; yaw is estimated twice, from where the nose tip sits
  between the eyes and between the ear tragions, with an average head's proportions, and the two are
  averaged (degrees are approximate; the thresholds are what matter and are set in degrees);
- framing: the box and every keypoint lie inside the frame, away from its border (the detector clips boxes
  to the frame, so a half-visible face touches the border).

Dim and soft faces are tried at higher bars, blurrier ones refused: at the bundle's threshold they all let
strangers through more often (soft faces, a little out of focus: see `soft_sharpness`). `benchmarks/quality_gates.py` (door frames of 300 LFW train people, faces 60 and 120
px, every probe against every other person's enrolment, full bundle, 2026-12-07): in good light 0.09% of
stranger comparisons pass the threshold (it was chosen for 1e-3); at a quarter of the light (contrast ~11)
0.18-0.21%, at an eighth (~5.6) 0.24-0.32%, though the owner still passes in 86-90% and 55-74% of those
frames. So a face under `dim_contrast` is *dim* (`QualityVerdict.dim`): it votes only at the bundle's
dim-light threshold, chosen by `facelock convert` for the same false-accept rate on dim door frames of its
training people (at a quarter of the light the owner then still passes in 80-87% of frames); one under
`min_contrast`, darker than that threshold was chosen on, is refused as too dark. A door that must open at
night still needs light on the face (a porch light, or an IR lamp with a camera that sees it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from edge.options import MAX_PX, check
from edge.types import Face, FaceCondition, Keypoint, Landmark

# Average head proportions used by the yaw estimates (ratios, so the face's size does not matter):
# how far the nose tip stands in front of the eyes, relative to half the eye distance, and in front of the
# ear tragions, relative to half the tragion distance.
NOSE_DEPTH_OVER_HALF_EYE_DISTANCE = 0.8
NOSE_DEPTH_OVER_HALF_TRAGION_DISTANCE = 1.4

# Rejection codes, in the order gates are reported.
TOO_SMALL = "too_small"
EYES_TOO_CLOSE = "eyes_too_close"
OUTSIDE_FRAME = "outside_frame"
LOW_CONTRAST = "low_contrast"
BLURRY = "blurry"
YAW = "yaw"
ROLL = "roll"


@dataclass(frozen=True)
class QualityOptions:
    """Subject selection and the quality gates a face must pass before it is embedded."""

    min_face_px: float = 32.0
    """Smallest accepted face: the shorter side of the detector's box, in frame pixels. A person 2 m from a
    640x480 door camera shows a face about 40 px wide: on such faces (LFW test people, `facelock bench`'s
    door section) the pipeline still recognises >= 85% at FAR 1e-2, and 95% of their boxes are >= 36 px."""
    min_eye_distance_px: float = 12.0
    """Smallest accepted distance between the two eye centres, in frame pixels (40-px faces: 5th
    percentile 14 px)."""
    min_contrast: float = 8.0
    """Smallest accepted contrast: the standard deviation of the grey face box's pixels, 0-255; a darker face
    is refused as too dark. On door frames (`benchmarks/quality_gates.py`): well lit ~43, a quarter of the
    light ~11, an eighth ~5.6. Under `dim_contrast` a face is *dim*: it votes only at the bundle's dim-light
    threshold, which `facelock convert` chose on dim door frames at this floor (edge.models.bundle)."""
    dim_contrast: float = 20.0
    """Faces under this contrast (and at least `min_contrast`) are dim. At the bundle's threshold stranger
    comparisons pass 0.09-0.12% from 20 up, 0.13-0.20% at 10-20 and 0.22-0.28% at 6-10 (300 LFW train
    people's door frames): dim faces need a higher bar to keep the false-accept rate the threshold promises
    (+0.004 cosine: 0.087% of strangers, 83% of owners' frames at contrast 8-20). Enrolment takes no dim face.
    Without a dim-light threshold (an older bundle, a bare model) the service refuses dim faces as too dark,
    unless the config sets `min_contrast` itself."""
    min_sharpness: float = 0.16
    """Smallest accepted sharpness: the standard deviation of the Laplacian of the grey face box, resized to
    `sharpness_size`, over the box's contrast (dimensionless; see edge/vision/quality.py). On door frames
    (`benchmarks/quality_gates.py`): sharp faces 0.37-0.41; Gaussian blur sigma 1.2 px 0.18 (60-px faces) /
    0.30 (120 px), sigma 2 px 0.13 / 0.22. Stranger comparisons passing the threshold, well lit: 0.18-0.21%
    under 0.14, 0.15% at 0.14-0.18, 0.08-0.12% from 0.18 up. (0.16 is the old gate, a Laplacian variance of
    50, at a well-lit face's contrast: blur is refused as before. A value over 2 is refused as one written
    in that old unit.)"""
    soft_sharpness: float = 0.25
    """Faces under this sharpness (and at least `min_sharpness`) are *soft*: they vote only at the bundle's
    soft-face threshold (edge.identity.vote), which `facelock convert` chose for the same false-accept rate
    on the blurriest of them (under 0.2) in door frames of its training people. Without one (an older bundle,
    a bare model) they vote at the threshold, as before. 0: no face is soft. Well lit, strangers pass the
    threshold 0.13-0.19% of the time under 0.25 against 0.11-0.12% from there up (826 LFW train people's
    door frames, `benchmarks/quality_gates.py`); with soft faces at their bar the lock lets 10% fewer
    stranger comparisons through (0.1145 -> 0.1027%; test people: 0.1206 -> 0.1088%) for 0.2-0.3 points
    of the owner's frames (53.3 -> 53.1% of found faces), where refusing faces under 0.25 outright would
    cost 12 points. Blurred 60-px faces: strangers 0.158 -> 0.110% (test people 0.167 -> 0.118%)."""
    sharpness_size: int = 64
    """Side of the square the face box is resized to before measuring sharpness and contrast (size
    normalisation)."""
    max_yaw_deg: float = 35.0
    """Largest accepted left/right head turn, estimated from the keypoints, in degrees. On door frames of
    826 LFW train people (`benchmarks/quality_gates.py --people 826`, faces 60 and 120 px in six lights and
    blurs; faces every other gate passes, each at the lock's bar), strangers pass as often at 30-35 degrees
    (0.112% of comparisons) as at 0-30 (0.106-0.124%), more often from there (35-40: 0.139%, 40-50: 0.190%,
    over 50: 0.30%); the owner passes in 85% at 30-35 against 87-90% at 0-30. So 35, not 30: the lock
    votes on 7% more of its owner's frames (49.7 -> 53.1% of all found faces there; clean frames of 40-120
    px, a scratch run of the same kind: 80.5 -> 86.8%) for the same stranger rate (0.1135 -> 0.1134%).
    Enrolment takes the same limit (templates turned 30-35 degrees did nearly as well as frontal ones)."""
    max_roll_deg: float = 25.0
    """Largest accepted head tilt (angle of the eye line against the horizontal), in degrees."""
    border_px: float = 2.0
    """The face box and keypoints must be at least this far inside the frame's edges, in pixels."""
    center_weight: float = 0.5
    """Subject selection: 0 picks the largest face, 1 the most central; in between mixes the two. (0.5:
    on LFW's photos, where the person is the one in the middle, 0.35 picked a face at the edge in 7 of
    3,890, 0.5 in 1; the same at the door.)"""

    def validate(self) -> QualityOptions:
        """Raise ConfigError naming the first field out of range."""
        return check("quality", self, [
            ("min_face_px", 0 <= self.min_face_px <= MAX_PX, f"0-{MAX_PX} pixels"),
            ("min_eye_distance_px", 0 <= self.min_eye_distance_px <= MAX_PX, f"0-{MAX_PX} pixels"),
            ("min_contrast", 0 <= self.min_contrast <= 255, "0-255"),
            ("dim_contrast", self.min_contrast <= self.dim_contrast <= 255,
             f"from min_contrast ({self.min_contrast:g}) to 255"),
            ("min_sharpness", 0 <= self.min_sharpness <= 2,
             "0-2 (the Laplacian's standard deviation over the contrast, 0.16 by default; no longer its variance, e.g. 50)"),
            ("soft_sharpness", 0 <= self.soft_sharpness <= 2, "0-2 (0: no face is soft)"),
            ("sharpness_size", 8 <= self.sharpness_size <= 512, "between 8 and 512"),
            ("max_yaw_deg", 0 < self.max_yaw_deg <= 90, "in (0, 90]"),
            ("max_roll_deg", 0 < self.max_roll_deg <= 180, "in (0, 180]"),
            ("border_px", 0 <= self.border_px <= MAX_PX, f"0-{MAX_PX} pixels"),
            ("center_weight", 0 <= self.center_weight <= 1, "in [0, 1]"),
        ])


@dataclass(frozen=True)
class QualityVerdict:
    """What the gates measured on one face and whether it passed. `failures` holds rejection codes
    (TOO_SMALL, EYES_TOO_CLOSE, OUTSIDE_FRAME, LOW_CONTRAST, BLURRY, YAW, ROLL); `reason` says the same for
    people."""

    ok: bool
    failures: tuple[str, ...]
    reason: str  # "" when ok, else one clause per failed gate, "; "-separated
    face_px: float
    eye_distance_px: float
    sharpness: float
    contrast: float
    yaw_deg: float
    roll_deg: float
    dim: bool = False  # passed, but under `dim_contrast`: it votes at the dim-light threshold, never enrols
    soft: bool = False  # passed, but under `soft_sharpness`: it votes at the soft-face threshold

    @property
    def conditions(self) -> frozenset[FaceCondition]:
        """The conditions whose higher threshold this face's vote needs (edge.identity.vote)."""
        return frozenset(c for c, on in ((FaceCondition.DIM, self.dim), (FaceCondition.SOFT, self.soft)) if on)

    @property
    def pose_only(self) -> bool:
        """Whether the face failed only the pose gates (YAW, ROLL): a whole, sharp face turned too far to
        recognise, as a head answering a liveness challenge may be."""
        return bool(self.failures) and set(self.failures) <= {YAW, ROLL}


def selection_scores(faces: list[Face] | tuple[Face, ...], frame_shape: tuple[int, ...],
                     center_weight: float = QualityOptions.center_weight) -> np.ndarray:
    """One score per face in [0, 1]: confidence (`Face.confidence`) * ((1 - w) * side / largest side + w *
    (1 - distance from the frame centre / half the frame diagonal)); side = sqrt(area)."""
    if not faces:
        return np.zeros(0)
    h, w = frame_shape[:2]
    sides = np.sqrt([f.area for f in faces])
    size_term = sides / sides.max() if sides.max() > 0 else np.ones_like(sides)
    cx, cy = (w - 1) / 2, (h - 1) / 2
    half_diag = max(math.hypot(w, h) / 2, 1e-9)
    dist = np.array([math.hypot(f.center[0] - cx, f.center[1] - cy) for f in faces]) / half_diag
    confidence = np.array([f.confidence for f in faces], dtype=np.float64)
    return confidence * ((1 - center_weight) * size_term + center_weight * np.clip(1 - dist, 0, 1))


def select_subject(faces: list[Face] | tuple[Face, ...], frame_shape: tuple[int, ...],
                   center_weight: float = QualityOptions.center_weight) -> Face | None:
    """The face to recognise (surest, largest and most central, see `selection_scores`), or None."""
    if not faces:
        return None
    return faces[int(np.argmax(selection_scores(faces, frame_shape, center_weight)))]


def gate_keypoints(face: Face) -> np.ndarray:
    """The six keypoints the gates measure: the detector's, with the eyes, nose tip and mouth centre
    replaced by the landmark model's when the face has landmarks (they are the precise ones)."""
    kp = np.array(face.keypoints, dtype=np.float64)
    if face.landmarks is not None:
        lm = np.asarray(face.landmarks, dtype=np.float64)
        kp[Keypoint.RIGHT_EYE] = lm[Landmark.RIGHT_EYE]
        kp[Keypoint.LEFT_EYE] = lm[Landmark.LEFT_EYE]
        kp[Keypoint.NOSE_TIP] = lm[Landmark.NOSE_TIP]
        kp[Keypoint.MOUTH_CENTER] = (lm[Landmark.RIGHT_MOUTH_CORNER] + lm[Landmark.LEFT_MOUTH_CORNER]) / 2
    return kp


def head_pose(keypoints: np.ndarray) -> tuple[float, float]:
    """(yaw, roll) in degrees from BlazeFace keypoints (6, 2). Roll is the eye line's angle, positive
    when the subject's left eye (image right) is lower. Yaw is positive when the nose has moved toward the
    subject's left eye (image right), i.e. the head turned to the subject's left; 0 is frontal."""
    kp = np.asarray(keypoints, dtype=np.float64)
    r_eye, l_eye = kp[Keypoint.RIGHT_EYE], kp[Keypoint.LEFT_EYE]
    nose = kp[Keypoint.NOSE_TIP]
    r_ear, l_ear = kp[Keypoint.RIGHT_EAR_TRAGION], kp[Keypoint.LEFT_EAR_TRAGION]
    eye_vec = l_eye - r_eye
    eye_dist = float(np.hypot(*eye_vec))
    if eye_dist < 1e-6:
        return 90.0, 0.0  # eyes on top of each other: a profile, or garbage; either way not usable
    roll = math.degrees(math.atan2(eye_vec[1], eye_vec[0]))
    axis = eye_vec / eye_dist  # unit vector along the eye line, pointing to the subject's left eye
    # Nose offset along the eye line from the eyes' midpoint, in half eye distances: tan(yaw) * depth ratio.
    off_eyes = float((nose - (r_eye + l_eye) / 2) @ axis) / (eye_dist / 2)
    yaw_eyes = math.degrees(math.atan(off_eyes / NOSE_DEPTH_OVER_HALF_EYE_DISTANCE))
    ear_span = float((l_ear - r_ear) @ axis)
    if ear_span > 1e-6:
        off_ears = float((nose - (r_ear + l_ear) / 2) @ axis) / (ear_span / 2)
        yaw_ears = math.degrees(math.atan(off_ears / NOSE_DEPTH_OVER_HALF_TRAGION_DISTANCE))
        yaw = (yaw_eyes + yaw_ears) / 2
    else:
        yaw = yaw_eyes
    return yaw, roll


def sharpness_and_contrast(frame: np.ndarray, box: tuple[float, float, float, float],
                           size: int = 64) -> tuple[float, float]:
    """(sharpness, contrast) of the grey face box resized to size x size: contrast is its pixels' standard
    deviation (0-255), sharpness its Laplacian's standard deviation over that (0.0 for an empty or
    perfectly flat box). See the module docstring."""
    import cv2

    h, w = frame.shape[:2]
    x0, y0 = max(0, math.floor(box[0] + 0.5)), max(0, math.floor(box[1] + 0.5))
    x1, y1 = min(w, math.ceil(box[2] + 0.5)), min(h, math.ceil(box[3] + 0.5))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return 0.0, 0.0
    region = frame[y0:y1, x0:x1]
    grey = cv2.cvtColor(region, cv2.COLOR_RGB2GRAY) if region.ndim == 3 else region
    shrinking = (x1 - x0) > size or (y1 - y0) > size
    grey = cv2.resize(grey, (size, size), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    contrast = float(grey.std())
    if contrast < 1e-6:
        return 0.0, contrast
    return float(cv2.Laplacian(grey, cv2.CV_64F).std()) / contrast, contrast


class QualityGate:
    """`check(frame, face)` -> QualityVerdict; `select(faces, frame)` picks the subject."""

    def __init__(self, options: QualityOptions | None = None):
        self.options = (options or QualityOptions()).validate()

    def select(self, faces: list[Face] | tuple[Face, ...], frame: np.ndarray) -> Face | None:
        return select_subject(faces, np.shape(frame), self.options.center_weight)

    def check(self, frame: np.ndarray, face: Face) -> QualityVerdict:
        o = self.options
        h, w = frame.shape[:2]
        kp = gate_keypoints(face)
        face_px = float(min(face.width, face.height))
        eye_px = float(np.hypot(*(kp[Keypoint.LEFT_EYE] - kp[Keypoint.RIGHT_EYE])))
        yaw, roll = head_pose(kp)
        sharp, contrast = sharpness_and_contrast(frame, face.box, o.sharpness_size)
        lo_x, lo_y = o.border_px - 0.5, o.border_px - 0.5  # pixel centres on integers: edges at -0.5
        hi_x, hi_y = w - 0.5 - o.border_px, h - 0.5 - o.border_px
        x0, y0, x1, y1 = face.box
        inside = (x0 >= lo_x and y0 >= lo_y and x1 <= hi_x and y1 <= hi_y
                  and bool(np.all((kp[:, 0] >= lo_x) & (kp[:, 0] <= hi_x)
                                  & (kp[:, 1] >= lo_y) & (kp[:, 1] <= hi_y))))
        failures: list[tuple[str, str]] = []
        if face_px < o.min_face_px:
            failures.append((TOO_SMALL, f"face {face_px:.0f} px, need >= {o.min_face_px:g} px"))
        if eye_px < o.min_eye_distance_px:
            failures.append((EYES_TOO_CLOSE, f"eyes {eye_px:.0f} px apart, need >= {o.min_eye_distance_px:g} px"))
        if not inside:
            failures.append((OUTSIDE_FRAME, f"face not fully inside the frame ({o.border_px:g} px border)"))
        if contrast < o.min_contrast:
            need = f"need >= {o.min_contrast:g} (more light on the face)"
            failures.append((LOW_CONTRAST, f"face too dark or washed out: contrast {contrast:.1f}, {need}"))
        elif sharp < o.min_sharpness:  # a face too dark to measure is not called blurry as well
            failures.append((BLURRY, f"sharpness {sharp:.2f}, need >= {o.min_sharpness:g}"))
        if abs(yaw) > o.max_yaw_deg:
            failures.append((YAW, f"head turned {yaw:+.0f} deg, limit {o.max_yaw_deg:g}"))
        if abs(roll) > o.max_roll_deg:
            failures.append((ROLL, f"head tilted {roll:+.0f} deg, limit {o.max_roll_deg:g}"))
        return QualityVerdict(
            ok=not failures, failures=tuple(c for c, _ in failures), reason="; ".join(m for _, m in failures),
            face_px=face_px, eye_distance_px=eye_px, sharpness=sharp, contrast=contrast, yaw_deg=yaw,
            roll_deg=roll, dim=contrast < o.dim_contrast, soft=sharp < o.soft_sharpness,
        )
