"""Points -> chip for the embedder: 150x150 for dlib's ResNet (this module's packaged template); other face
CNNs' chip sizes and templates come from the bundle's model card (`edge.vision.align_presets`).

dlib's ResNet was trained on chips cut by `get_face_chip_details` from its own 5-point landmarks. We have
other points, so the template (where each point should land in the chip) was measured, not guessed:
`benchmarks/derive_template.py` cut dlib's reference chips on LFW train people and recorded where our points
fell in them (`alignment_template.json`, shipped with the package). A template names the points it is made
of, one of two sets:
- `landmarks` (the packaged template): the face-landmark model's eye centres, nose tip and mouth corners
  (`edge.types.Landmark`, `edge.vision.landmarks`): precise at any face size;
- `keypoints`: BlazeFace's six keypoints (`edge.types.Keypoint`): what bundles made before the landmark
  model carry; their chips jitter by a few pixels on small faces.
A face without landmarks meets a landmark template: the aligner runs the landmark model on it first.

A chip is one least-squares similarity transform (rotation, uniform scale, translation: no shear, which
would distort the face the network knows) from the weighted points to the template, then bilinear
sampling. When the face is more than twice the chip's size the frame is first halved with a Gaussian
pyramid, as dlib does, so that bilinear sampling does not alias.

Coordinates: pixel centres on integers (OpenCV's and dlib's convention) in frame and chip alike.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import ConfigError, ImageError, ModelError
from edge.models.card import MAX_CHIP, MIN_CHIP
from edge.types import CHIP_SIZE, AlignedFace, Face, Keypoint, Landmark
from edge.vision.geometry import (  # noqa: F401  (re-exported: the aligner's maths)
    estimate_similarity,
    invert_similarity,
    pyramid_levels,
    transform_points,
    warp_chip,
)

TEMPLATE_FILE = Path(__file__).with_name("alignment_template.json")
# BlazeFace short-range keypoints' template, as bundles before the landmark model carry it (benchmarks).
KEYPOINT_TEMPLATE_FILE = Path(__file__).with_name("alignment_template_keypoints.json")
TEMPLATE_SCHEMA = "facelock.alignment/1"
KEYPOINT_NAMES = tuple(k.name.lower() for k in Keypoint)
LANDMARK_NAMES = tuple(k.name.lower() for k in Landmark)
POINT_SETS = {"keypoints": KEYPOINT_NAMES, "landmarks": LANDMARK_NAMES}
# Bump when edge.vision.landmarks changes the points it gives (chip caches are keyed by it).
LANDMARK_STAGE = "mediapipe-face-landmark/2-pass-reframe/stretched"


@dataclass(frozen=True)
class AlignTemplate:
    """Where each point lands in the chip, and how much each one counts in the fit (0 = not used). Six
    points are BlazeFace's keypoints, five the landmark model's points (`POINT_SETS`)."""

    points: np.ndarray  # (6, 2) Keypoint order or (5, 2) Landmark order, float64 chip pixels
    weights: np.ndarray  # (N,) float64
    chip_size: int = CHIP_SIZE
    meta: dict | None = None  # provenance, kept for bundles and reports

    @property
    def uses_landmarks(self) -> bool:
        return len(self.points) == len(LANDMARK_NAMES)

    @property
    def point_set(self) -> str:
        return "landmarks" if self.uses_landmarks else "keypoints"

    @property
    def names(self) -> tuple[str, ...]:
        return POINT_SETS[self.point_set]

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "alignment template") -> AlignTemplate:
        try:
            if data.get("schema") != TEMPLATE_SCHEMA:
                raise ConfigError(f"{source}: schema {data.get('schema')!r}, expected {TEMPLATE_SCHEMA!r}")
            names = tuple(data["keypoints"])
            if names not in POINT_SETS.values():
                raise ConfigError(f"{source}: keypoints {list(names)}, expected one of "
                                  + " or ".join(str(list(v)) for v in POINT_SETS.values()))
            points = np.asarray(data["points"], dtype=np.float64)
            weights = np.asarray(data["weights"], dtype=np.float64)
            size = int(data["chip_size"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{source}: malformed alignment template ({type(exc).__name__}: {exc})") from exc
        n = len(names)
        if points.shape != (n, 2) or weights.shape != (n,):
            raise ConfigError(f"{source}: expected {n} points (x, y) and {n} weights, one per keypoint "
                              f"({', '.join(names)})")
        if np.any(weights < 0) or np.count_nonzero(weights) < 2 or not np.all(np.isfinite(points)):
            raise ConfigError(f"{source}: weights must be >= 0 with two or more non-zero; points finite")
        if not MIN_CHIP <= size <= MAX_CHIP:
            raise ConfigError(f"{source}: chip_size {size} is outside {MIN_CHIP}..{MAX_CHIP} pixels")
        return cls(points=points, weights=weights, chip_size=size, meta=data)

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.meta or {})
        out.update(schema=TEMPLATE_SCHEMA, chip_size=self.chip_size, keypoints=list(self.names),
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


class FaceAligner:
    """`align(frame, face)` -> AlignedFace with the RGB chip (`chip_size` square: 150 for dlib's ResNet, what
    the model card says for another embedder) and the frame -> chip matrix.

    With a landmark template, a face that has no landmarks yet is refined first by `landmarker` (an
    `edge.vision.landmarks.FaceLandmarker`; by default the fetched face-landmark model, loaded when first
    needed), so every caller that aligns detections cuts the same chips as the lock."""

    def __init__(self, options: AlignOptions | None = None, template: AlignTemplate | None = None,
                 landmarker=None):
        self.options = options or AlignOptions()
        self.template = template or load_template()
        self.landmarker = landmarker
        # With landmark points, how the landmark model is run decides the chips too.
        marks = LANDMARK_STAGE if self.template.uses_landmarks else None
        blob = json.dumps([self.template.points.round(4).tolist(), self.template.weights.tolist(),
                           self.options.max_bilinear_step, self.template.chip_size, marks]).encode()
        # Identifies what chips this aligner cuts (for caches of aligned chips).
        self.cache_key = "align:" + hashlib.sha256(blob).hexdigest()[:16]

    @property
    def chip_size(self) -> int:
        """The side of the square chips this aligner cuts (the embedder's input, from the model card)."""
        return self.template.chip_size

    @classmethod
    def from_template(cls, template: dict | AlignTemplate | str | Path, options: AlignOptions | None = None,
                      landmarker=None, chip_size: int | None = None):
        """An aligner for `template`; with `chip_size` (the embedder's input side, from the bundle's model
        card) a template for another size is refused."""
        if isinstance(template, AlignTemplate):
            loaded = template
        elif isinstance(template, dict):
            loaded = AlignTemplate.from_dict(template, "bundle alignment.template")
        else:
            loaded = load_template(template)
        if chip_size is not None and loaded.chip_size != chip_size:
            raise ConfigError(f"alignment template cuts {loaded.chip_size}x{loaded.chip_size} chips, the embedder "
                              f"takes {chip_size}x{chip_size}")
        return cls(options, loaded, landmarker)

    def points(self, face: Face) -> np.ndarray:
        """The face's points this template is made of: its landmarks or its detector keypoints."""
        pts = face.landmarks if self.template.uses_landmarks else face.keypoints
        if pts is None:
            raise ValueError("the alignment template needs landmarks; this face has none (refine it first)")
        return np.asarray(pts, dtype=np.float64)

    def matrix(self, points: np.ndarray | Face) -> np.ndarray:
        """Frame -> chip similarity for a face (or its points, in the template's order)."""
        pts = self.points(points) if isinstance(points, Face) else np.asarray(points, dtype=np.float64)
        n = len(self.template.points)
        if pts.shape != (n, 2) or not np.all(np.isfinite(pts)):
            raise ValueError(f"expected ({n}, 2) finite {self.template.point_set}, got {pts.shape}")
        return estimate_similarity(pts, self.template.points, self.template.weights)

    def refined(self, frame: np.ndarray, face: Face) -> Face:
        """The face with what the template needs: landmarks added when they are needed and missing."""
        if not self.template.uses_landmarks or face.landmarks is not None:
            return face
        if self.landmarker is None:
            from edge.models.store import LANDMARKS, model_path
            from edge.vision.landmarks import FaceLandmarker

            self.landmarker = FaceLandmarker(model_path(LANDMARKS))
        return self.landmarker.refine(frame, face)

    def align(self, frame: np.ndarray, face: Face) -> AlignedFace:
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ImageError(f"frame: expected an (H, W, 3) uint8 RGB array, got {frame.shape} {frame.dtype}")
        face = self.refined(frame, face)
        m = self.matrix(face)
        chip = warp_chip(frame, m, self.template.chip_size, self.options.max_bilinear_step)
        return AlignedFace(chip=chip, matrix=m, face=face)
