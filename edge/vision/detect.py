"""BlazeFace face detection: letterbox the frame to the model's square input, run the model, decode its SSD
anchors, blend overlapping detections (weighted non-max suppression) and map back to frame pixels.

Two models, told apart by their tensors when they load (`LAYOUTS`):
- short range, 128x128, 896 anchors (strides 8, 16, 16, 16; two anchors per layer and cell): faces that
  fill a good part of the picture (a selfie, an enrolment photo);
- full range (sparse), 192x192, 2304 anchors (one stride-4 layer, one anchor per cell): faces down to a few
  percent of the frame, i.e. a person 1-2 m from a door camera.
The constants are MediaPipe 0.10.14's own, read from the graphs compiled into that wheel
(`FaceDetectionShortRange`, `FaceDetectionFullRange`, `FaceDetection`: SSD anchors with offset 0.5 and
fixed size, decoding scale = input size, score clipping at 100 then a sigmoid, weighted NMS at IoU 0.3,
letterboxed input in [-1, 1]); the tensor shapes are checked against the model when it loads.

Coordinates: every point returned is in OpenCV's pixel convention, the centre of pixel (col, row) at
(col, row), which is what cv2.warpAffine and dlib's landmarks use too, so alignment needs no half-pixel
fix-ups downstream.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass

import numpy as np

from edge.errors import ImageError, ModelError
from edge.options import check
from edge.types import Face, Keypoint

log = logging.getLogger(__name__)

INPUT_SIZE = 128  # the short-range model's; the defaults of the functions below are its layout
NUM_ANCHORS = 896
NUM_COORDS = 16  # box (x, y, w, h) then 6 keypoints (x, y)
NUM_KEYPOINTS = len(Keypoint)
STRIDES = (8, 16, 16, 16)
ANCHOR_OFFSET = 0.5
# Raw logits are clipped before the sigmoid, as MediaPipe does; in float64 this cannot overflow.
SCORE_CLIP = 100.0


@dataclass(frozen=True)
class BlazeFaceLayout:
    """How one BlazeFace model's outputs are laid out (MediaPipe's SsdAnchorsCalculator options for it)."""

    kind: str  # as bundles name it
    input_size: int
    strides: tuple[int, ...]
    anchors_per_layer: int  # one per aspect ratio (1.0), plus one when interpolated_scale_aspect_ratio > 0
    mediapipe_min_score: float  # MediaPipe's min_score_thresh for the model (kept for reference)
    min_score: float  # the lowest score this detector keeps whatever `score_threshold` says

    @property
    def num_anchors(self) -> int:
        return len(ssd_anchors(self.input_size, self.strides, anchors_per_layer=self.anchors_per_layer))


# The short-range model runs only in bundles made before the landmark model, where nothing confirms its
# detections: it keeps MediaPipe's 0.5 at least.
SHORT_RANGE = BlazeFaceLayout("blazeface_short_range", 128, STRIDES, 2, 0.5, 0.5)
UNCONFIRMED_MIN_SCORE = 0.5  # the lowest score kept when no landmark model confirms the detections
FULL_RANGE = BlazeFaceLayout("blazeface_full_range", 192, (4,), 1, 0.6, 0.0)
LAYOUTS = (SHORT_RANGE, FULL_RANGE)


@dataclass(frozen=True)
class DetectorOptions:
    """BlazeFace's decoding and the interpreter it runs in; the `[detector]` config section."""

    score_threshold: float = 0.2
    """Lowest detection score kept. Below MediaPipe's own (0.5 short range, 0.6 full range) because the
    face-landmark model then confirms every detection: a 40-px face often scores 0.2-0.5 (measured at the
    door: 10% of 40-px faces lost at 0.5, 2% at 0.2), while a bare wall gives no detection even at 0.1.
    Without a landmark model (a bundle made before it), and always with the short-range model, the
    detector keeps at least 0.5."""
    iou_threshold: float = 0.3
    """Detections overlapping more than this (intersection over union) are blended into one."""
    num_threads: int = 2
    """Interpreter threads when the detector is built on its own; the service builds every interpreter
    with `[model] num_threads`."""
    max_faces: int = 10
    """At most this many faces per frame, best scores first."""
    near_min_face_px: float = 130.0
    """When the short-range model is tried first (`FacePipeline.subject`), its faces count only from this
    width (2.5 x the landmark model's eye distance) up: on smaller faces its box and eye keypoints are off
    enough (measured on 60-px faces: boxes 1.5x too large, eye line 8-10 degrees off, now and then another
    face) that the full-range model does better (TAR at FAR 1e-2 91% against 98%). On 70-130-px faces the
    mesh fitted in a box that large now and then comes out too large itself (eyes 1.25-2x too far apart,
    the chip cut around half the head) and its width passes for a large face. A trade, measured on LFW
    `train` photos in door frames: of 2,034 such frames the short-range model alone misframed 23 at 100,
    8 at 130, 0 at 160; of `make demo`'s frames (faces about 160 px) the full-range model then also runs on
    0.5%, 2.5% and 58% (a frame 43% slower at 160). At 130, faces of 100-130 px cost what smaller ones
    do (110 px: 7.6 against 4.3 ms a frame on 2 threads of an AMD EPYC), no more than the worst case."""

    def validate(self) -> DetectorOptions:
        """Raise ConfigError naming the first field out of range. Both thresholds are fractions: a score
        threshold of 0 would keep all 896 anchors, and one above 1 (or an IoU above 1) can never be met."""
        return check("detector", self, [
            ("score_threshold", 0.0 < self.score_threshold <= 1.0, "in (0, 1]"),
            ("iou_threshold", 0.0 < self.iou_threshold <= 1.0, "in (0, 1]"),
            ("num_threads", 1 <= self.num_threads <= 64, "1-64"),
            ("max_faces", 1 <= self.max_faces <= 100, "1-100"),
            ("near_min_face_px", 0 <= self.near_min_face_px <= 100_000, "0-100000 pixels"),
        ])


def ssd_anchors(input_size: int = INPUT_SIZE, strides: tuple[int, ...] = STRIDES,
                offset: float = ANCHOR_OFFSET, anchors_per_layer: int = 2) -> np.ndarray:
    """(N, 2) anchor centres in [0, 1]. Anchor size is fixed (1 x 1), so only centres matter.

    Consecutive layers with the same stride share one feature map; each layer contributes
    `anchors_per_layer` anchors per cell (the short-range model: its aspect ratio 1.0 plus the
    interpolated-scale anchor), so there the stride-8 map has 2 per cell and the merged stride-16 maps 6:
    16*16*2 + 8*8*6 = 896. The full-range model: one stride-4 layer, one anchor per cell, 48*48 = 2304.
    """
    centres = []
    layer = 0
    while layer < len(strides):
        last = layer
        while last < len(strides) and strides[last] == strides[layer]:
            last += 1
        per_cell = anchors_per_layer * (last - layer)
        grid = math.ceil(input_size / strides[layer])
        ys, xs = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")
        cells = np.stack([(xs + offset) / grid, (ys + offset) / grid], axis=-1).reshape(-1, 2)
        centres.append(np.repeat(cells, per_cell, axis=0))
        layer = last
    return np.concatenate(centres).astype(np.float64)


def decode(raw_boxes: np.ndarray, raw_scores: np.ndarray, anchors: np.ndarray,
           input_size: int = INPUT_SIZE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Model outputs -> (boxes (N, 4) x0 y0 x1 y1, keypoints (N, 6, 2), scores (N,)) in [0, 1] tensor
    coordinates (edges of the 128x128 input at 0 and 1)."""
    raw = raw_boxes.reshape(-1, NUM_COORDS).astype(np.float64) / input_size
    cx = raw[:, 0] + anchors[:, 0]
    cy = raw[:, 1] + anchors[:, 1]
    w, h = raw[:, 2], raw[:, 3]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    kps = raw[:, 4:].reshape(-1, NUM_KEYPOINTS, 2) + anchors[:, None, :]
    logits = np.clip(raw_scores.reshape(-1).astype(np.float64), -SCORE_CLIP, SCORE_CLIP)
    scores = 1.0 / (1.0 + np.exp(-logits))
    return boxes, kps, scores


def _area(b: np.ndarray) -> np.ndarray:
    return np.clip(b[..., 2] - b[..., 0], 0, None) * np.clip(b[..., 3] - b[..., 1], 0, None)


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[2], boxes[:, 2])
    y1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    union = _area(box) + _area(boxes) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def weighted_nms(boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray, iou_threshold: float,
                 max_out: int) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """BlazeFace predicts the same face from many neighbouring anchors. Instead of keeping the single best
    (jittery from frame to frame), every cluster of detections overlapping the best one by more than
    `iou_threshold` is averaged, weighted by score; the cluster keeps the best score."""
    order = np.argsort(-scores, kind="stable")
    out = []
    while order.size and len(out) < max_out:
        best = order[0]
        in_cluster = iou(boxes[best], boxes[order]) > iou_threshold
        in_cluster[0] = True  # a degenerate (zero-area) best box still stands for itself
        members = order[in_cluster]
        order = order[~in_cluster]
        w = scores[members]
        box = (boxes[members] * w[:, None]).sum(0) / w.sum()
        kps = (keypoints[members] * w[:, None, None]).sum(0) / w.sum()
        out.append((box, kps, float(scores[best])))
    return out


@dataclass(frozen=True)
class Letterbox:
    """How a frame was fitted into the square input: tensor = frame * scale + pad (continuous coords)."""

    scale_x: float
    scale_y: float
    pad_x: int
    pad_y: int

    def to_frame(self, points_norm: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
        """[0, 1] tensor coordinates -> frame pixel coordinates (pixel centres on integers)."""
        pts = np.asarray(points_norm, dtype=np.float64) * size
        x = (pts[..., 0] - self.pad_x) / self.scale_x - 0.5
        y = (pts[..., 1] - self.pad_y) / self.scale_y - 0.5
        return np.stack([x, y], axis=-1)


def letterbox(frame: np.ndarray, size: int = INPUT_SIZE) -> tuple[np.ndarray, Letterbox]:
    """Resize keeping the aspect ratio, centre, pad with black. INTER_AREA when shrinking: a 1080p frame
    squeezed to 128 px by bilinear sampling aliases badly and costs detections. Shrinking by more than 2x
    goes through exact halvings first (OpenCV's fast integer-ratio path: 640x480 -> 192x144 in 0.3 ms
    instead of 0.67, the result within 1 grey level); every step maps the whole image onto the whole
    output, so the geometry is that of one resize."""
    import cv2

    h, w = frame.shape[:2]
    s = size / max(h, w)
    rw, rh = max(1, min(size, round(w * s))), max(1, min(size, round(h * s)))
    if (rw, rh) != (w, h):
        src = frame
        while src.shape[1] >= 2 * rw and src.shape[0] >= 2 * rh and src.shape[1] % 2 == 0 and src.shape[0] % 2 == 0:
            src = cv2.resize(src, (src.shape[1] // 2, src.shape[0] // 2), interpolation=cv2.INTER_AREA)
        interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
        resized = src if src.shape[:2] == (rh, rw) else cv2.resize(src, (rw, rh), interpolation=interp)
    else:
        resized = frame
    pad_x, pad_y = (size - rw) // 2, (size - rh) // 2
    canvas = np.zeros((size, size, 3), dtype=np.uint8)
    canvas[pad_y:pad_y + rh, pad_x:pad_x + rw] = resized
    return canvas, Letterbox(rw / w, rh / h, pad_x, pad_y)


def check_frame(frame: np.ndarray) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ImageError(f"frame: expected an (H, W, 3) uint8 RGB array, got {frame.shape} {frame.dtype}")
    if frame.shape[0] < 2 or frame.shape[1] < 2:
        raise ImageError(f"frame: too small to hold a face ({frame.shape[1]}x{frame.shape[0]})")
    return frame


class BlazeFaceDetector:
    """`detect(frame)` -> faces sorted by score, best first. `layout` says which BlazeFace it runs."""

    def __init__(self, model_path: str | os.PathLike, options: DetectorOptions | None = None):
        from edge.vision.interpreter import load_interpreter

        self.options = options or DetectorOptions()
        self.model = load_interpreter(model_path, num_threads=self.options.num_threads)
        self.layout = _layout_of(self.model)
        shapes = [tuple(d["shape"]) for d in self.model.output_details]
        n = self.layout.num_anchors
        # Pick outputs by shape, not position: converters have been known to reorder them.
        self._box_out = shapes.index((1, n, NUM_COORDS))
        self._score_out = shapes.index((1, n, 1))
        self.anchors = ssd_anchors(self.layout.input_size, self.layout.strides,
                                   anchors_per_layer=self.layout.anchors_per_layer)

    @property
    def input_size(self) -> int:
        return self.layout.input_size

    def detect(self, frame_rgb: np.ndarray) -> list[Face]:
        frame = check_frame(frame_rgb)
        size = self.layout.input_size
        tensor, lb = letterbox(frame, size)
        x = (tensor.astype(np.float32) / 127.5 - 1.0)[None]
        outputs = self.model.run([x])
        boxes, kps, scores = decode(outputs[self._box_out], outputs[self._score_out], self.anchors, size)
        keep = scores >= max(self.options.score_threshold, self.layout.min_score)
        if not keep.any():
            return []
        merged = weighted_nms(boxes[keep], kps[keep], scores[keep], self.options.iou_threshold,
                              self.options.max_faces)
        faces = []
        for box, kp, score in merged:
            # Not clipped to the frame: a face cut by the frame edge must look cut to the quality gate.
            (x0, y0), (x1, y1) = lb.to_frame(box.reshape(2, 2), size)
            faces.append(Face(box=(float(x0), float(y0), float(x1), float(y1)),
                              keypoints=lb.to_frame(kp, size).astype(np.float32), score=score))
        faces.sort(key=lambda f: -f.score)
        return faces


def _layout_of(model) -> BlazeFaceLayout:
    """The BlazeFace layout whose tensors the model has; ModelError naming the file otherwise."""
    inputs, outputs = model.input_details, model.output_details
    shapes = sorted(tuple(d["shape"]) for d in outputs)
    for layout in LAYOUTS:
        size, n = layout.input_size, layout.num_anchors
        if (len(inputs) == 1 and tuple(inputs[0]["shape"]) == (1, size, size, 3)
                and inputs[0]["dtype"] == np.float32
                and shapes == sorted([(1, n, NUM_COORDS), (1, n, 1)])):
            return layout
    wanted = "; ".join(f"{lay.kind}: one float32 (1, {lay.input_size}, {lay.input_size}, 3) input, outputs "
                       f"(1, {lay.num_anchors}, {NUM_COORDS}) and (1, {lay.num_anchors}, 1)" for lay in LAYOUTS)
    raise ModelError(
        f"{model.path}: not a BlazeFace model ({wanted}); got inputs "
        f"{[(tuple(d['shape']), np.dtype(d['dtype']).name) for d in inputs]}, outputs {shapes}"
    )
