"""The anti-spoofing CNN: a passive per-frame check by a model the user brings (`facelock convert --antispoof
model.keras`; the bundle carries its int8 TFLite and its card, edge.models.card.AntiSpoofCard). facelock
ships none: no freely licensed one whose accuracy on door frames is known exists in a registry here.

Each frame with a usable face: a square crop around the detector's box (`crop_scale` times its longer side:
anti-spoofing models want the context, a screen's bezel or a print's edge), the model's live score. Over an
attempt: the median of the person's latest scored frames (one odd frame is not evidence) at or over the
threshold passes, under it is an attack suspected (check "antispoof"). It is one layer among the others
(edge.vision.layered): the passive 3D checks and the challenge still have to pass when they are on.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.errors import ModelError
from edge.models.card import AntiSpoofCard
from edge.options import MAX_COUNT, check
from edge.types import Face, LivenessVerdict
from edge.vision.geometry import warp_chip
from edge.vision.interpreter import dequantize_output, quantize_input
from edge.vision.layered import median_verdict


@dataclass(frozen=True)
class AntiSpoofOptions:
    """The anti-spoofing CNN; the `[antispoof]` config section. It needs a bundle that carries one
    (`facelock convert --antispoof model.keras`): with a bundle without one this layer is absent."""

    enabled: bool = True
    """Run the bundle's anti-spoofing CNN, when it has one, on every frame with a usable face: an accept
    then needs its live score too. Off: the bundle's model is not run."""
    threshold: float = 0.0
    """The live score a frame needs (0: the one `convert` wrote into the bundle, the model's own)."""
    min_frames: int = 3
    """Frames of the person's face scored before any verdict from this layer."""
    max_frames: int = 15
    """The median over at most this many of the person's latest scored frames decides."""

    def validate(self) -> AntiSpoofOptions:
        return check("antispoof", self, [
            ("threshold", 0.0 <= self.threshold < 1.0, "0 (the bundle's) or a live score in (0, 1)"),
            ("min_frames", 1 <= self.min_frames <= MAX_COUNT, f"1-{MAX_COUNT}"),
            ("max_frames", self.min_frames <= self.max_frames <= MAX_COUNT,
             f"min_frames ({self.min_frames}) to {MAX_COUNT}"),
        ])


def crop_matrix(face: Face, scale: float, size: int) -> np.ndarray:
    """(2, 3) frame -> crop: the square of side `scale` x the box's longer side, centred on the box."""
    cx, cy = face.center
    side = max(scale * max(face.width, face.height), 1e-6)
    s = size / side
    return np.array([[s, 0.0, size / 2 - s * cx], [0.0, s, size / 2 - s * cy]])


def face_crop(frame: np.ndarray, face: Face, scale: float, size: int) -> np.ndarray:
    """The model's (size, size, 3) uint8 RGB crop of `face` (black where it leaves the frame). `convert`
    calibrates on these crops, so what is calibrated is what runs."""
    return warp_chip(frame, crop_matrix(face, scale, size), size)


def live_probability(raw: np.ndarray, card: AntiSpoofCard) -> float:
    """The live score in [0, 1] from the model's (K,) output, as the card says to read it."""
    y = np.asarray(raw, dtype=np.float64).reshape(-1)
    if card.output == "logits":
        if card.classes == 1:
            return float(1.0 / (1.0 + np.exp(-np.clip(y[0], -60, 60))))
        e = np.exp(y - y.max())
        return float(e[card.live_class] / e.sum())
    return float(np.clip(y[card.live_class], 0.0, 1.0))


class AntiSpoofModel:
    """The bundle's int8 anti-spoofing TFLite: `live_score(frame, face)` in [0, 1]. The input and output
    tensors must be the card's (one (1, S, S, 3), one (1, K)), or ModelError names the file."""

    def __init__(self, path: str | os.PathLike, card: AntiSpoofCard, num_threads: int = 2):
        from edge.vision.interpreter import load_interpreter

        self.path, self.card = Path(path), card
        self.model = load_interpreter(self.path, num_threads=num_threads)
        ins, outs = self.model.input_details, self.model.output_details
        side = card.crop_size
        if len(ins) != 1 or tuple(int(d) for d in ins[0]["shape"]) != (1, side, side, 3):
            raise ModelError(f"{self.path}: anti-spoofing input must be one (1, {side}, {side}, 3) tensor, the "
                             f"card's input_size, got {[tuple(d['shape']) for d in ins]}")
        if len(outs) != 1 or tuple(int(d) for d in outs[0]["shape"]) != (1, card.classes):
            raise ModelError(f"{self.path}: anti-spoofing output must be one (1, {card.classes}) tensor (the "
                             f"card's classes), got {[tuple(d['shape']) for d in outs]}")
        self._in, self._out = ins[0], outs[0]
        self.name = card.name

    def raw(self, crop: np.ndarray) -> np.ndarray:
        """The model's dequantized (K,) output for one crop."""
        (y,) = self.model.run([quantize_input(self._in, crop[None])])
        return dequantize_output(self._out, y)[0]

    def crop(self, frame: np.ndarray, face: Face) -> np.ndarray:
        return face_crop(frame, face, self.card.crop_scale, self.card.crop_size)

    def live_score(self, frame: np.ndarray, face: Face) -> float:
        return live_probability(self.raw(self.crop(frame, face)), self.card)


class AntiSpoofLayer:
    """The CNN as a liveness layer (edge.vision.layered): a score per frame, a verdict over the attempt."""

    name = "antispoof"

    def __init__(self, model: AntiSpoofModel, options: AntiSpoofOptions | None = None):
        self.model = model
        self.options = (options or AntiSpoofOptions()).validate()
        self.threshold = self.options.threshold or model.card.threshold

    def score(self, frame: np.ndarray, face: Face, ir: np.ndarray | None = None) -> float:
        return self.model.live_score(frame, face)

    def verdict(self, scores: Sequence[float]) -> LivenessVerdict:
        """The median of the person's latest scores against the threshold (edge.vision.layered)."""
        o = self.options
        return median_verdict(self.name, scores, self.threshold, o.min_frames, o.max_frames,
                              f"the anti-spoofing CNN ({self.model.name}) scored the face live",
                              "a print, a screen or a mask, as that model sees it")
