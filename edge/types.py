"""Data passed between pipeline stages. Frozen dataclasses and numpy arrays, never dicts of loose keys.

Conventions (see README): frames are uint8 RGB arrays (H, W, 3); pixel coordinates are float x, y in the
frame; embeddings are float32, L2-normalised, compared by cosine similarity.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

CHIP_SIZE = 150  # the dlib ResNet's input: aligned 150x150 RGB chips
EMBEDDING_DIM = 128


class Keypoint(IntEnum):
    """BlazeFace's six keypoints, in the model's output order. "Right" is the subject's right, which is on
    the image's left in an unmirrored photo."""

    RIGHT_EYE = 0
    LEFT_EYE = 1
    NOSE_TIP = 2
    MOUTH_CENTER = 3
    RIGHT_EAR_TRAGION = 4
    LEFT_EAR_TRAGION = 5


@dataclass(frozen=True, eq=False)
class Face:
    """One detected face in frame pixel coordinates."""

    box: tuple[float, float, float, float]  # x0, y0, x1, y1
    keypoints: np.ndarray  # (6, 2) float32, x/y per Keypoint
    score: float  # detector confidence in [0, 1]

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)

    @property
    def center(self) -> tuple[float, float]:
        return (self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2


@dataclass(frozen=True, eq=False)
class AlignedFace:
    """A face chip ready for the embedder, and the similarity transform that cut it."""

    chip: np.ndarray  # (CHIP_SIZE, CHIP_SIZE, 3) uint8 RGB
    matrix: np.ndarray  # (2, 3) float64, frame -> chip pixel coordinates
    face: Face


@dataclass(frozen=True)
class StageTimes:
    """Wall milliseconds per stage of one frame (monotonic clock)."""

    detect: float = 0.0
    align: float = 0.0
    embed: float = 0.0
    match: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return self.detect + self.align + self.embed + self.match + sum(self.extra.values())


# Embedding spaces. A model and its pruned or int8 versions embed into one space, named
# `space:<model name>@<12 hex of sha256 over its float weights>` (convert.keras_embedder.embedding_space);
# bundles and gallery templates record it, so templates from another embedder are never compared.
SPACE_PREFIX = "space:"


def is_space_id(model: str) -> bool:
    """True for a recorded embedding-space id (`space:<model>@<hash>`), False for '' or older free text."""
    return model.startswith(SPACE_PREFIX)


def utc_now() -> str:
    """Now as UTC ISO-8601 with `Z`, to the second (stored times; MQTT messages use milliseconds)."""
    from datetime import UTC, datetime

    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
