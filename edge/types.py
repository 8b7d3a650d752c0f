"""Data passed between pipeline stages. Frozen dataclasses and numpy arrays, never dicts of loose keys.

Conventions (see README): frames are uint8 RGB arrays (H, W, 3); pixel coordinates are float x, y in the
frame; embeddings are float32, L2-normalised, compared by cosine similarity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum, IntEnum

import numpy as np

# dlib's ResNet port (the product's embedder) takes 150x150 chips and gives 128-d embeddings. Defaults only:
# the runtime takes the chip size and dimension of the model it runs from the bundle's model card
# (edge.models.card), so another face CNN needs no change here.
CHIP_SIZE = 150
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


class Landmark(IntEnum):
    """The points the face-landmark model (`edge.vision.landmarks`) derives from its mesh, in this order:
    eye centres, nose tip, mouth corners ("right" is the subject's right, as for Keypoint)."""

    RIGHT_EYE = 0
    LEFT_EYE = 1
    NOSE_TIP = 2
    RIGHT_MOUTH_CORNER = 3
    LEFT_MOUTH_CORNER = 4


@dataclass(frozen=True, eq=False)
class Face:
    """One detected face in frame pixel coordinates. `landmarks` and `presence` are set once the
    landmark model has looked at the face (None before, or without that model)."""

    box: tuple[float, float, float, float]  # x0, y0, x1, y1
    keypoints: np.ndarray  # (6, 2) float32, x/y per Keypoint, from the detector
    score: float  # detector confidence in [0, 1]
    landmarks: np.ndarray | None = None  # (5, 2) float32, x/y per Landmark, from the landmark model
    presence: float | None = None  # the landmark model's face-presence score in [0, 1]
    mesh: np.ndarray | None = None  # (468, 3) float32: the landmark model's mesh, x/y frame px, z same scale

    @property
    def confidence(self) -> float:
        """How sure the pipeline is that this is a face: the landmark model's face-presence score (once it
        has looked) times the square root of the detector's score; two models that both have to be fooled.
        The root because the full-range detector's score of a real face varies (0.2-0.9) with size and
        pose while the landmark model, seeing the face on a 192-px crop, is sure: with the plain product,
        a background face at the photo's edge beat the one in the middle in 17 of 3,890 LFW photos, with
        the root in 1 (and no more door frames lost)."""
        root = math.sqrt(max(self.score, 0.0))
        return root if self.presence is None else root * self.presence

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

    chip: np.ndarray  # (S, S, 3) uint8 RGB; S the embedder's input size (model card; 150 for dlib)
    matrix: np.ndarray  # (2, 3) float64, frame -> chip pixel coordinates
    face: Face


class FaceCondition(str, Enum):
    """A condition under which a face passes the quality gates (edge.vision.quality) but strangers pass the
    threshold more often: such a face votes at that condition's own higher threshold, which `facelock
    convert` chooses for the same false-accept rate (edge.identity.vote). The face's first run never settles
    its vote."""

    DIM = "dim"  # too little light: contrast under `[quality] dim_contrast`
    SOFT = "soft"  # a little out of focus: sharpness under `[quality] soft_sharpness`


class LivenessState(str, Enum):
    LIVE = "live"
    ATTACK = "attack"  # attack suspected: the frames moved like a print or a screen, or not at all
    UNDECIDED = "undecided"  # not enough frames or motion yet: wait for more within the attempt
    FAILED = "failed"  # the challenge was not answered (wrong move, too late): the attempt fails, no attack


@dataclass(frozen=True)
class Challenge:
    """A request the lock makes of the person at the door (edge.vision.challenge): `action` (turn_left,
    turn_right, look_up, look_down, blink_twice; left and right are the person's own), the words to say or
    show, and the seconds they have. The service announces it (MQTT, Home Assistant, a GPIO beeper)."""

    action: str
    prompt: str
    deadline_s: float
    pulses: int  # beeps / LED flashes that stand for `action` on a GPIO indicator


@dataclass(frozen=True, eq=False)
class LivenessVerdict:
    """The liveness checks' verdict on an attempt's frames (edge.vision.liveness and edge.vision.challenge
    make it, edge.identity.decide reads it). `check` names what decided (parallax, blink, planar, static,
    challenge) or what is missing (frames, motion); `figures` the measurements behind it; `asked` the
    challenge this verdict has just issued (announce it; None on every other verdict)."""

    state: LivenessState
    check: str
    reason: str
    frames: int = 0
    figures: dict[str, float] = field(default_factory=dict)
    asked: Challenge | None = None


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
