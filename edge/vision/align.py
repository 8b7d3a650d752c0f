"""Keypoints -> 150x150 chip for dlib's ResNet.

dlib's ResNet was trained on chips cut by `get_face_chip_details` from its own 5-point landmarks. We have
BlazeFace's six keypoints instead, so the template (where each keypoint should land in the chip) was
measured, not guessed: `benchmarks/derive_template.py` cut dlib's reference chips on LFW train people and
recorded where BlazeFace's keypoints fell in them (`alignment_template.json`, shipped with the package).

A chip is one least-squares similarity transform (rotation, uniform scale, translation: no shear, which
would distort the face the network knows) from the weighted keypoints to the template, then bilinear
sampling. When the face is more than twice the chip's size the frame is first halved with a Gaussian
pyramid, as dlib does, so that bilinear sampling does not alias.

Coordinates: pixel centres on integers (OpenCV's and dlib's convention) in frame and chip alike.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import ConfigError, ImageError, ModelError
from edge.types import CHIP_SIZE, AlignedFace, Face, Keypoint

TEMPLATE_FILE = Path(__file__).with_name("alignment_template.json")
TEMPLATE_SCHEMA = "facelock.alignment/1"
KEYPOINT_NAMES = tuple(k.name.lower() for k in Keypoint)


def estimate_similarity(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """The similarity transform (2, 3) that maps `src` points onto `dst` with the least weighted squared
    error (Umeyama 1991, with the reflection case excluded so a mirrored keypoint set cannot flip the chip).
    `dst ~= M[:, :2] @ src + M[:, 2]`."""
    src = np.asarray(src, dtype=np.float64).reshape(-1, 2)
    dst = np.asarray(dst, dtype=np.float64).reshape(-1, 2)
    if src.shape != dst.shape:
        raise ValueError(f"estimate_similarity: src {src.shape} and dst {dst.shape} differ")
    w = np.ones(len(src)) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.shape != (len(src),) or np.any(w < 0) or np.count_nonzero(w) < 2:
        raise ValueError("estimate_similarity: need one non-negative weight per point, two or more non-zero")
    w = w / w.sum()
    mu_s, mu_d = w @ src, w @ dst
    xs, xd = src - mu_s, dst - mu_d
    var_s = w @ (xs**2).sum(1)
    if var_s <= 1e-12:
        raise ValueError("estimate_similarity: source points coincide")
    cov = (xd * w[:, None]).T @ xs
    u, d, vt = np.linalg.svd(cov)
    s = np.array([1.0, 1.0 if np.linalg.det(u) * np.linalg.det(vt) >= 0 else -1.0])
    r = (u * s) @ vt
    c = (d * s).sum() / var_s
    t = mu_d - c * r @ mu_s
    return np.hstack([c * r, t[:, None]])


def invert_similarity(m: np.ndarray) -> np.ndarray:
    a = np.asarray(m, dtype=np.float64)[:, :2]
    inv = np.linalg.inv(a)
    return np.hstack([inv, -inv @ np.asarray(m, dtype=np.float64)[:, 2:]])


def transform_points(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    pts = np.asarray(pts, dtype=np.float64)
    return pts @ np.asarray(m, dtype=np.float64)[:, :2].T + np.asarray(m, dtype=np.float64)[:, 2]


@dataclass(frozen=True)
class AlignTemplate:
    """Where each keypoint lands in the chip, and how much each one counts in the fit (0 = not used)."""

    points: np.ndarray  # (6, 2) float64 chip pixels, Keypoint order
    weights: np.ndarray  # (6,) float64
    chip_size: int = CHIP_SIZE
    meta: dict | None = None  # provenance, kept for bundles and reports

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "alignment template") -> AlignTemplate:
        try:
            if data.get("schema") != TEMPLATE_SCHEMA:
                raise ConfigError(f"{source}: schema {data.get('schema')!r}, expected {TEMPLATE_SCHEMA!r}")
            names = list(data["keypoints"])
            if names != list(KEYPOINT_NAMES):
                raise ConfigError(f"{source}: keypoints {names}, expected {list(KEYPOINT_NAMES)}")
            points = np.asarray(data["points"], dtype=np.float64)
            weights = np.asarray(data["weights"], dtype=np.float64)
            size = int(data["chip_size"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{source}: malformed alignment template ({type(exc).__name__}: {exc})") from exc
        if points.shape != (len(Keypoint), 2) or weights.shape != (len(Keypoint),):
            raise ConfigError(f"{source}: expected 6 points (x, y) and 6 weights")
        if np.any(weights < 0) or np.count_nonzero(weights) < 2 or not np.all(np.isfinite(points)):
            raise ConfigError(f"{source}: weights must be >= 0 with two or more non-zero; points finite")
        if size != CHIP_SIZE:
            raise ConfigError(f"{source}: chip_size {size}, the embedder needs {CHIP_SIZE}")
        return cls(points=points, weights=weights, chip_size=size, meta=data)

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.meta or {})
        out.update(schema=TEMPLATE_SCHEMA, chip_size=self.chip_size, keypoints=list(KEYPOINT_NAMES),
                   points=[[round(float(x), 4), round(float(y), 4)] for x, y in self.points],
                   weights=[float(w) for w in self.weights])
        return out


@lru_cache(maxsize=1)
def _packaged_template() -> AlignTemplate:
    try:
        data = json.loads(TEMPLATE_FILE.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"{TEMPLATE_FILE}: packaged alignment template missing (reinstall facelock)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{TEMPLATE_FILE}: not valid JSON ({exc})") from exc
    return AlignTemplate.from_dict(data, str(TEMPLATE_FILE))


def load_template(path: str | Path | None = None) -> AlignTemplate:
    if path is None:
        return _packaged_template()
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such alignment template") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from exc
    return AlignTemplate.from_dict(data, str(path))


@dataclass(frozen=True)
class AlignOptions:
    # Pre-shrink with a pyramid when one chip pixel would cover more than this many frame pixels;
    # bilinear sampling only looks at 2x2 pixels, so beyond 2 it skips detail and aliases.
    max_bilinear_step: float = 2.0


def pyramid_levels(scale: float, max_step: float = 2.0) -> int:
    """How many times to halve a frame so that `scale` (chip px per frame px) is >= 1/max_step."""
    if scale <= 0:
        raise ValueError("scale must be positive")
    if scale * max_step >= 1.0:
        return 0
    return math.ceil(math.log2(1.0 / (scale * max_step)) - 1e-9)


def warp_chip(frame: np.ndarray, matrix: np.ndarray, size: int = CHIP_SIZE, max_step: float = 2.0) -> np.ndarray:
    """Sample the chip `matrix` (frame -> chip) describes, through a Gaussian pyramid when the face is big.
    Only the part of the frame the chip needs is pyramided, so a face in a 12 MP photo stays cheap."""
    import cv2

    m = np.asarray(matrix, dtype=np.float64)
    scale = math.sqrt(abs(np.linalg.det(m[:, :2])))
    levels = pyramid_levels(scale, max_step)
    if levels:
        h, w = frame.shape[:2]
        corners = transform_points(invert_similarity(m), [[0, 0], [size - 1, 0], [0, size - 1], [size - 1, size - 1]])
        margin = 4 * 2**levels  # covers the 5-tap kernel at every level
        x0 = int(max(0, math.floor(corners[:, 0].min()) - margin))
        y0 = int(max(0, math.floor(corners[:, 1].min()) - margin))
        x1 = int(min(w, math.ceil(corners[:, 0].max()) + margin + 1))
        y1 = int(min(h, math.ceil(corners[:, 1].max()) + margin + 1))
        if x1 - x0 >= 2 and y1 - y0 >= 2:
            src = frame[y0:y1, x0:x1]
            done = 0
            while done < levels and min(src.shape[:2]) >= 4:
                src = cv2.pyrDown(src)  # level pixel p sits at 2p in the level above
                done += 1
            f = 2.0**done
            m = np.hstack([m[:, :2] * f, (m[:, :2] @ np.array([x0, y0], dtype=np.float64) + m[:, 2])[:, None]])
            frame = src
        # else: the chip lies outside the frame; sampling the full frame gives the (black) chip.
    return cv2.warpAffine(frame, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=(0, 0, 0))


class FaceAligner:
    """`align(frame, face)` -> AlignedFace with the 150x150 RGB chip and the frame -> chip matrix."""

    def __init__(self, options: AlignOptions | None = None, template: AlignTemplate | None = None):
        self.options = options or AlignOptions()
        self.template = template or load_template()
        blob = json.dumps([self.template.points.round(4).tolist(), self.template.weights.tolist(),
                           self.options.max_bilinear_step]).encode()
        # Identifies what chips this aligner cuts (for caches of aligned chips).
        self.cache_key = "align:" + hashlib.sha256(blob).hexdigest()[:16]

    @classmethod
    def from_template(cls, template: dict | AlignTemplate | str | Path, options: AlignOptions | None = None):
        if isinstance(template, AlignTemplate):
            return cls(options, template)
        if isinstance(template, dict):
            return cls(options, AlignTemplate.from_dict(template, "bundle alignment.template"))
        return cls(options, load_template(template))

    def matrix(self, keypoints: np.ndarray) -> np.ndarray:
        """Frame -> chip similarity for a face's keypoints (6, 2)."""
        kps = np.asarray(keypoints, dtype=np.float64)
        if kps.shape != (len(Keypoint), 2) or not np.all(np.isfinite(kps)):
            raise ValueError(f"expected (6, 2) finite keypoints, got {kps.shape}")
        return estimate_similarity(kps, self.template.points, self.template.weights)

    def align(self, frame: np.ndarray, face: Face) -> AlignedFace:
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ImageError(f"frame: expected an (H, W, 3) uint8 RGB array, got {frame.shape} {frame.dtype}")
        m = self.matrix(face.keypoints)
        chip = warp_chip(frame, m, self.template.chip_size, self.options.max_bilinear_step)
        return AlignedFace(chip=chip, matrix=m, face=face)
