"""BlazeFace short-range face detection: letterbox to 128x128, run the model, decode the 896 SSD anchors,
blend overlapping detections (weighted non-max suppression) and map back to frame pixels.

The constants follow MediaPipe's face-detection graph for this model (`face_detection_short_range` with
`face_detection.pbtxt`: SSD anchors, decoding scales, score clipping, weighted NMS at IoU 0.3, letterboxed
input in [-1, 1]); the tensor shapes are checked against the model when it loads.

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

INPUT_SIZE = 128
NUM_ANCHORS = 896
NUM_COORDS = 16  # box (x, y, w, h) then 6 keypoints (x, y)
NUM_KEYPOINTS = len(Keypoint)
STRIDES = (8, 16, 16, 16)
ANCHOR_OFFSET = 0.5
# Raw logits are clipped before the sigmoid, as MediaPipe does; in float64 this cannot overflow.
SCORE_CLIP = 100.0


@dataclass(frozen=True)
class DetectorOptions:
    """BlazeFace's decoding and the interpreter it runs in; the `[detector]` config section."""

    score_threshold: float = 0.5
    """Lowest detection score kept (MediaPipe's min_score_thresh for this model)."""
    iou_threshold: float = 0.3
    """Detections overlapping more than this (intersection over union) are blended into one."""
    num_threads: int = 2
    """Interpreter threads when the detector is built on its own; the service builds every interpreter
    with `[model] num_threads`."""
    max_faces: int = 10
    """At most this many faces per frame, best scores first."""

    def validate(self) -> DetectorOptions:
        """Raise ConfigError naming the first field out of range. Both thresholds are fractions: a score
        threshold of 0 would keep all 896 anchors, and one above 1 (or an IoU above 1) can never be met."""
        return check("detector", self, [
            ("score_threshold", 0.0 < self.score_threshold <= 1.0, "in (0, 1]"),
            ("iou_threshold", 0.0 < self.iou_threshold <= 1.0, "in (0, 1]"),
            ("num_threads", 1 <= self.num_threads <= 64, "1-64"),
            ("max_faces", 1 <= self.max_faces <= 100, "1-100"),
        ])


def ssd_anchors(input_size: int = INPUT_SIZE, strides: tuple[int, ...] = STRIDES,
                offset: float = ANCHOR_OFFSET) -> np.ndarray:
    """(N, 2) anchor centres in [0, 1]. Anchor size is fixed (1 x 1), so only centres matter.

    Consecutive layers with the same stride share one feature map; each layer contributes two anchors per
    cell (its aspect ratio 1.0 plus the interpolated-scale anchor), so the stride-8 map has 2 per cell and
    the merged stride-16 maps 6: 16*16*2 + 8*8*6 = 896 for the short-range model.
    """
    centres = []
    layer = 0
    while layer < len(strides):
        last = layer
        while last < len(strides) and strides[last] == strides[layer]:
            last += 1
        per_cell = 2 * (last - layer)
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
    squeezed to 128 px by bilinear sampling aliases badly and costs detections."""
    import cv2

    h, w = frame.shape[:2]
    s = size / max(h, w)
    rw, rh = max(1, min(size, round(w * s))), max(1, min(size, round(h * s)))
    if (rw, rh) != (w, h):
        interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
        resized = cv2.resize(frame, (rw, rh), interpolation=interp)
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
    """`detect(frame)` -> faces sorted by score, best first."""

    def __init__(self, model_path: str | os.PathLike, options: DetectorOptions | None = None):
        from edge.vision.interpreter import load_interpreter

        self.options = options or DetectorOptions()
        self.model = load_interpreter(model_path, num_threads=self.options.num_threads)
        path = self.model.path
        inputs, outputs = self.model.input_details, self.model.output_details
        if (len(inputs) != 1 or tuple(inputs[0]["shape"]) != (1, INPUT_SIZE, INPUT_SIZE, 3)
                or inputs[0]["dtype"] != np.float32):
            raise ModelError(
                f"{path}: not BlazeFace short-range: expected one float32 (1, {INPUT_SIZE}, {INPUT_SIZE}, 3) "
                f"input, got {[(tuple(d['shape']), np.dtype(d['dtype']).name) for d in inputs]}"
            )
        shapes = [tuple(d["shape"]) for d in outputs]
        if sorted(shapes) != sorted([(1, NUM_ANCHORS, NUM_COORDS), (1, NUM_ANCHORS, 1)]):
            raise ModelError(
                f"{path}: not BlazeFace short-range: expected outputs (1, {NUM_ANCHORS}, {NUM_COORDS}) and "
                f"(1, {NUM_ANCHORS}, 1), got {shapes}"
            )
        # Pick outputs by shape, not position: converters have been known to reorder them.
        self._box_out = shapes.index((1, NUM_ANCHORS, NUM_COORDS))
        self._score_out = shapes.index((1, NUM_ANCHORS, 1))
        self.anchors = ssd_anchors()
        assert len(self.anchors) == NUM_ANCHORS

    def detect(self, frame_rgb: np.ndarray) -> list[Face]:
        frame = check_frame(frame_rgb)
        tensor, lb = letterbox(frame)
        x = (tensor.astype(np.float32) / 127.5 - 1.0)[None]
        outputs = self.model.run([x])
        boxes, kps, scores = decode(outputs[self._box_out], outputs[self._score_out], self.anchors)
        keep = scores >= self.options.score_threshold
        if not keep.any():
            return []
        merged = weighted_nms(boxes[keep], kps[keep], scores[keep], self.options.iou_threshold,
                              self.options.max_faces)
        faces = []
        for box, kp, score in merged:
            # Not clipped to the frame: a face cut by the frame edge must look cut to the quality gate.
            (x0, y0), (x1, y1) = lb.to_frame(box.reshape(2, 2))
            faces.append(Face(box=(float(x0), float(y0), float(x1), float(y1)),
                              keypoints=lb.to_frame(kp).astype(np.float32), score=score))
        faces.sort(key=lambda f: -f.score)
        return faces
