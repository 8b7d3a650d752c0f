"""Landmark refinement: MediaPipe's face mesh on a crop around each detected face.

BlazeFace's six keypoints come from the detector's input (192 px for the whole frame): on a face 40-80 px
wide they are a few pixels off, and a chip cut from them jitters from frame to frame. The face-landmark
model looks at the face alone, on a 192x192 crop cut around the detection (rotated so the eye line is
level), and returns 468 mesh points plus a face-presence score. From the mesh come the five points the
aligner uses (`edge.types.Landmark`): the eye centres (the mean of each eye's 16-point contour: many
points, so the centre is steadier than any one of them), the nose tip and the mouth corners. The presence
score tells a face from the wall or the coat a detector sometimes takes for one. On a small face the
detector's own eye line can be tens of degrees off; such a detection also gets a level crop (`refine`).

The constants are MediaPipe 0.10.14's own, from the graphs compiled into that wheel:
`FaceDetectionFrontDetectionToRoi` (the ROI: the detection box's centre, its longer side x 1.5 as a
square, rotated by the angle of keypoint 0 -> keypoint 1, i.e. right eye -> left eye) and `FaceLandmarkCpu`
(192x192 input in [0, 1]; outputs 468 x (x, y, z) in input pixels and one face-flag logit, sigmoid, 0.5
threshold). The mesh indices of the eye contours and lip corners are those of the wheel's
`face_mesh_connections.py` (FACEMESH_RIGHT_EYE, FACEMESH_LEFT_EYE, the outer corners of FACEMESH_LIPS);
the nose tip is mesh point 4, the point with the smallest depth (nearest the camera) on frontal faces
(measured on both fixture portraits; point 1, often called the tip, sits 2-3 px lower and deeper).

Coordinates: pixel centres on integers, as everywhere in edge.vision.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace

import numpy as np

from edge.errors import ModelError
from edge.options import check
from edge.types import Face, Keypoint
from edge.vision.geometry import invert_similarity, transform_points, warp_chip

INPUT_SIZE = 192
NUM_MESH_POINTS = 468
ROI_SCALE = 1.5
# A detection whose eye line is turned more than this from level also gets a level crop (`refine`): a head
# at a door is rarely rolled that far, a small face's detector keypoints often are (see `refine`).
LEVEL_RETRY_DEG = 25.0
RIGHT_EYE_CONTOUR = (33, 7, 163, 144, 145, 153, 154, 155, 133, 246, 161, 160, 159, 158, 157, 173)
LEFT_EYE_CONTOUR = (263, 249, 390, 373, 374, 380, 381, 382, 362, 466, 388, 387, 386, 385, 384, 398)
NOSE_TIP = 4
RIGHT_MOUTH_CORNER = 61
LEFT_MOUTH_CORNER = 291


# Pixel counts below this are exact in float32 (OpenCV's histograms count in float32).
EXACT_FLOAT32_COUNT = 2**24

# The extra crops of a small face (LandmarkOptions.small_face_crops): (shift x, shift y) as fractions of the
# crop's side, and scale, applied in the crop about its centre.
SMALL_FACE_CROPS = ((0.04, 0.0, 1.0), (-0.04, 0.0, 1.0), (0.0, 0.04, 1.06), (0.0, -0.04, 0.94))


@dataclass(frozen=True)
class LandmarkOptions:
    """The face-landmark stage; the `[landmarks]` config section."""

    min_presence: float = 0.5
    """A detection whose face-presence score is below this is not a face (MediaPipe's threshold)."""
    max_faces: int = 3
    """At most this many detections per frame are looked at, best detector scores first (each costs one
    run of the model, about 1 ms on a desktop core)."""
    passes: int = 2
    """1: one crop from the detection. 2: a second crop, cut around the first pass's mesh, when the first
    crop did not frame the face as the mesh says it should (off by more than `reframe_tolerance`), or was
    not taken for a face. Detections of small faces are off: the full-range box by a few pixels, the
    short-range keypoints by 8-10 degrees of eye-line angle on 60-80 px faces, and a badly framed crop
    costs both points and presence (40-px faces: presence < 0.05 on the first crop, > 0.9 on the second;
    TAR at FAR 1e-2 86% with one pass, 90% with two). Costs a second run of the model where it is needed."""
    reframe_tolerance: float = 0.05
    """With `passes = 2`: the first crop is good enough when the mesh's own crop differs from it by less
    than this in scale (fraction), in centre (fraction of the crop's side), and, times 100, in angle
    (degrees: 0.05 -> 5 degrees), for a face up to 50 px wide; for a wider one the tolerance grows in
    proportion (a 150-px face: 0.15). The model copes with a misframed crop of a large, sharp face
    (measured: the same recognition from 80 px up with tolerance 0.05 or 0.15) but not of a small one
    (40 px: TAR at FAR 1e-2 94.8% at 0.05, 91.2% at 0.15), and most large faces then need one run only."""
    small_face_px: float = 64.0
    """A face narrower than this (2.5 x its eye distance) gets `small_face_crops` more runs of the model, on
    crops shifted by 4% of their side, and its five points (the ones the chip is cut from) are the mean over
    all runs: on a face this small one crop's points move with where the crop falls, and the chip with
    them. Measured (benchmarks/door.py frames, 854 LFW test people, int8 bundle): 40-px faces TAR at FAR
    1e-2 91.9% with no extra crop, 93.3% with 2, 93.6% with 4 (at a quarter of the light 68.7 / 70.6 /
    71.4%); 60 px and up unchanged. 0: never."""
    small_face_crops: int = 2
    """How many more crops a small face gets (0-4; each is one more run of the model, ~2.6 ms on a desktop
    core: a 40-px face's frame took 14 ms with none, 25 ms with 4 here)."""

    def validate(self) -> LandmarkOptions:
        return check("landmarks", self, [
            ("min_presence", 0.0 <= self.min_presence <= 1.0, "in [0, 1]"),
            ("max_faces", 1 <= self.max_faces <= 100, "1-100"),
            ("passes", self.passes in (1, 2), "1 or 2"),
            ("reframe_tolerance", 0.0 <= self.reframe_tolerance <= 1.0, "in [0, 1]"),
            ("small_face_px", 0.0 <= self.small_face_px <= 10_000.0, "0 (never) to 10000 pixels"),
            ("small_face_crops", 0 <= self.small_face_crops <= len(SMALL_FACE_CROPS), f"0-{len(SMALL_FACE_CROPS)}"),
        ])


def roi_matrix(center: np.ndarray, side: float, angle: float, size: int = INPUT_SIZE) -> np.ndarray:
    """Frame -> crop similarity (2, 3) for a square of `side` frame pixels centred on `center`, turned by
    `angle` radians (the crop's x axis along that direction in the frame), sampled at `size` x `size`."""
    c, s = math.cos(angle), math.sin(angle)
    scale = side / size
    # crop pixel q -> frame: center + R(angle) @ ((q + 0.5) / size - 0.5) * side
    a = scale * np.array([[c, -s], [s, c]])
    t = np.asarray(center, dtype=np.float64) - a @ np.full(2, (size - 1) / 2)
    return invert_similarity(np.hstack([a, t[:, None]]))


def _eye_line_deg(face: Face) -> float:
    """The detector's eye line against the frame's horizontal, in degrees."""
    kp = np.asarray(face.keypoints, dtype=np.float64)
    eye = kp[Keypoint.LEFT_EYE] - kp[Keypoint.RIGHT_EYE]
    return math.degrees(math.atan2(eye[1], eye[0]))


def detection_roi(face: Face, size: int = INPUT_SIZE, level: bool = False) -> np.ndarray:
    """MediaPipe's ROI for a detection: box centre, longer side x 1.5, turned so that the detector's eye
    line is level (`level`: not turned, the frame's own horizontal)."""
    side = ROI_SCALE * max(face.width, face.height)
    angle = 0.0 if level else math.radians(_eye_line_deg(face))
    return roi_matrix(np.array(face.center), max(side, 1.0), angle, size)


def mesh_roi(mesh: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """The ROI a mesh gives (MediaPipe's tracking ROI: the mesh's bounding box turned level by the eye
    corners 33 -> 263, its longer side x 1.5)."""
    eye = mesh[263, :2] - mesh[33, :2]
    angle = math.atan2(eye[1], eye[0])
    c, s = math.cos(angle), math.sin(angle)
    rot = mesh[:, :2] @ np.array([[c, -s], [s, c]])  # coordinates along / across the eye line
    lo, hi = rot.min(0), rot.max(0)
    centre = ((lo + hi) / 2) @ np.array([[c, s], [-s, c]])  # back to frame coordinates
    return roi_matrix(centre, max(ROI_SCALE * float((hi - lo).max()), 1.0), angle, size)


def same_framing(a: np.ndarray, b: np.ndarray, tolerance: float, size: int = INPUT_SIZE) -> bool:
    """Whether two crops (frame -> crop similarities) frame the frame alike: scale within `tolerance`
    (as a fraction), centres within `tolerance` of the crop's side, angles within 100 x `tolerance` degrees."""
    rel = np.vstack([a, [0, 0, 1]]) @ np.linalg.inv(np.vstack([b, [0, 0, 1]]))  # crop b -> crop a
    scale = math.sqrt(abs(np.linalg.det(rel[:2, :2])))
    mid = np.full(2, (size - 1) / 2)
    shift = float(np.hypot(*(rel[:2, :2] @ mid + rel[:2, 2] - mid))) / size
    angle = abs(math.degrees(math.atan2(rel[1, 0], rel[0, 0])))
    return abs(math.log(scale)) <= tolerance and shift <= tolerance and angle <= 100 * tolerance


def stretch_range(pixels: np.ndarray, low: float = 1.0, high: float = 99.0) -> tuple[float, float]:
    """The `low` and `high` percentiles of `pixels`, exactly as `np.percentile` gives them (linear
    interpolation between order statistics). For uint8 pixels they are read off a histogram: sorting the
    110,592 values of a crop took 1.5 ms on a desktop core, longer than the landmark model's own run."""
    flat = np.asarray(pixels).reshape(-1)
    if flat.dtype != np.uint8 or flat.size == 0:
        lo, hi = np.percentile(flat, (low, high))
        return float(lo), float(hi)
    if flat.size < EXACT_FLOAT32_COUNT:
        import cv2

        # OpenCV counts in float32, exact below 2**24 pixels, in half np.bincount's time (0.07 against
        # 0.14 ms a crop here, measured side by side).
        counts = cv2.calcHist([flat.reshape(-1, 1)], [0], None, [256], [0, 256]).reshape(-1).astype(np.int64)
    else:
        counts = np.bincount(flat, minlength=256)
    cumulative = np.cumsum(counts)
    out = []
    for q in (low, high):
        rank = q / 100.0 * (flat.size - 1)
        below = math.floor(rank)
        # The value at sorted position i is the first v with more than i values <= v.
        a, b = np.searchsorted(cumulative, [below, min(below + 1, flat.size - 1)], side="right")
        out.append(float(a) + (rank - below) * float(b - a))
    return out[0], out[1]


# Which mesh points make each of the five (`points_from_mesh`): the eye contours, then single points.
_EYE_CONTOURS = np.array([RIGHT_EYE_CONTOUR, LEFT_EYE_CONTOUR])
_SINGLE_POINTS = np.array([NOSE_TIP, RIGHT_MOUTH_CORNER, LEFT_MOUTH_CORNER])


def points_from_mesh(mesh: np.ndarray) -> np.ndarray:
    """(5, 2) float32 in `Landmark` order (eye centres, nose tip, mouth corners) from a (468, >=2) mesh in
    frame pixels."""
    xy = np.asarray(mesh)[:, :2]
    return np.concatenate([xy[_EYE_CONTOURS].mean(1), xy[_SINGLE_POINTS]]).astype(np.float32)


class FaceLandmarker:
    """`refine(frame, face)` -> the face with `landmarks`, `presence` and `mesh` set; `confirm(frame, faces)` ->
    the detections that are faces, refined."""

    def __init__(self, model_path: str | os.PathLike, options: LandmarkOptions | None = None,
                 num_threads: int = 2):
        from edge.vision.interpreter import load_interpreter

        self.options = (options or LandmarkOptions()).validate()
        self.model = load_interpreter(model_path, num_threads=num_threads)
        inputs, outputs = self.model.input_details, self.model.output_details
        shapes = [tuple(d["shape"]) for d in outputs]
        want = [(1, 1, 1, NUM_MESH_POINTS * 3), (1, 1, 1, 1)]
        if (len(inputs) != 1 or tuple(inputs[0]["shape"]) != (1, INPUT_SIZE, INPUT_SIZE, 3)
                or inputs[0]["dtype"] != np.float32 or sorted(shapes) != sorted(want)):
            raise ModelError(
                f"{self.model.path}: not MediaPipe's face-landmark model: expected one float32 (1, {INPUT_SIZE}, "
                f"{INPUT_SIZE}, 3) input and outputs {want}, got inputs "
                f"{[(tuple(d['shape']), np.dtype(d['dtype']).name) for d in inputs]}, outputs {shapes}")
        self._mesh_out = shapes.index(want[0])
        self._flag_out = shapes.index(want[1])

    def mesh(self, frame: np.ndarray, matrix: np.ndarray) -> tuple[np.ndarray, float]:
        """Run the model on the crop `matrix` (frame -> crop) cuts: ((468, 3) mesh in frame pixels, with z
        in the same scale; presence score)."""
        pixels = warp_chip(frame, matrix, INPUT_SIZE)
        crop = pixels.astype(np.float32)
        # The model's input is [0, 1]; a dark porch fills a tenth of it. Stretching the crop's 1st-99th
        # percentile to the full range keeps more faces at dusk (40-px faces at a quarter of the light:
        # 11.5% lost -> 8%; no change on well-lit ones). The chip the embedder sees is not touched.
        lo, hi = stretch_range(pixels)
        x = np.clip((crop - np.float32(lo)) * np.float32(1.0 / max(float(hi - lo), 1.0)), 0.0, 1.0)[None]
        outputs = self.model.run([x])
        raw = outputs[self._mesh_out].reshape(NUM_MESH_POINTS, 3).astype(np.float64)
        logit = float(np.clip(outputs[self._flag_out].reshape(-1)[0], -100.0, 100.0))
        # Output coordinates are continuous (pixel edges on integers): the centre of crop pixel q is q + 0.5.
        inv = invert_similarity(matrix)
        xy = transform_points(inv, raw[:, :2] - 0.5)
        z = raw[:, 2:] * math.sqrt(abs(np.linalg.det(inv[:, :2])))
        return np.hstack([xy, z]), 1.0 / (1.0 + math.exp(-logit))

    def refine(self, frame: np.ndarray, face: Face) -> Face:
        matrix = detection_roi(face)
        mesh, presence = self.mesh(frame, matrix)
        o = self.options
        if presence < o.min_presence or abs(_eye_line_deg(face)) > LEVEL_RETRY_DEG:
            # On a small face the detector's eye keypoints are a pixel or two from where they should be,
            # which can turn its eye line by 50-80 degrees. A crop turned that far is either not taken for a
            # face (40-px faces at the door: presence 0.0-0.5 on it, 1.0 on the same crop level) or gives a
            # mesh whose own crop is no better (the points 6-15 px off on a 40-px portrait). Door cameras
            # stand upright: a level crop too, and the one the model is surer of is kept.
            level = detection_roi(face, level=True)
            level_mesh, level_presence = self.mesh(frame, level)
            if level_presence > presence:
                matrix, mesh, presence = level, level_mesh, level_presence
        if o.passes == 2:
            better = mesh_roi(mesh)
            points = points_from_mesh(mesh)
            width = 2.5 * float(np.hypot(*(points[1] - points[0])))  # face width ~ 2.5 x the eye distance
            tolerance = o.reframe_tolerance * max(1.0, width / 50.0)
            if presence < o.min_presence or not same_framing(matrix, better, tolerance):
                mesh, presence = self.mesh(frame, better)
        points = points_from_mesh(mesh)
        if o.small_face_crops and 2.5 * float(np.hypot(*(points[1] - points[0]))) < o.small_face_px:
            points = self._steadier_points(frame, mesh, points)
        # The mesh travels on the face for the liveness checks (edge.vision.liveness): 468 x 3 float32.
        return replace(face, landmarks=points, presence=presence, mesh=mesh.astype(np.float32))

    def _steadier_points(self, frame: np.ndarray, mesh: np.ndarray, points: np.ndarray) -> np.ndarray:
        """The mean of `points` and those of `small_face_crops` more crops around the mesh's own."""
        roi = np.vstack([mesh_roi(mesh), [0.0, 0.0, 1.0]])
        mid = (INPUT_SIZE - 1) / 2
        runs = [points]
        for dx, dy, scale in SMALL_FACE_CROPS[: self.options.small_face_crops]:
            move = np.array([[scale, 0.0, mid - scale * mid + dx * INPUT_SIZE],
                             [0.0, scale, mid - scale * mid + dy * INPUT_SIZE]])
            runs.append(points_from_mesh(self.mesh(frame, move @ roi)[0]))
        return np.mean(runs, axis=0).astype(np.float32)

    def confirm(self, frame: np.ndarray, faces: list[Face] | tuple[Face, ...]) -> list[Face]:
        """The detections the model takes for faces (presence >= `min_presence`), refined, in detector-score
        order. At most `max_faces` runs: detections are looked at best score first, and one whose centre
        lies on a face already confirmed is the same face seen twice by the detector (small faces give
        several weak detections that NMS does not merge), so it is skipped without a run."""
        confirmed: list[Face] = []
        runs = 0
        for face in sorted(faces, key=lambda f: -f.score):
            if runs >= self.options.max_faces:
                break
            if any(covers(c, face.center) for c in confirmed):
                continue
            runs += 1
            refined = self.refine(frame, face)
            if refined.presence is not None and refined.presence >= self.options.min_presence:
                confirmed.append(refined)
        return confirmed


def covers(face: Face, point: tuple[float, float]) -> bool:
    """Whether `point` lies within the face's landmarks, grown by half the eye distance all round."""
    lm = np.asarray(face.landmarks, dtype=np.float64)
    margin = 0.5 * float(np.linalg.norm(lm[1] - lm[0]))
    lo, hi = lm.min(0) - margin, lm.max(0) + margin
    return bool(lo[0] <= point[0] <= hi[0] and lo[1] <= point[1] <= hi[1])
