"""The per-frame path: detect -> pick the subject -> quality gates -> align -> embed (-> match).

`FacePipeline.process(frame)` never raises for a frame without a usable face: the FrameAnalysis says how
far the frame got and why it stopped. Each stage is timed with the monotonic clock (`StageTimes`, ms;
subject selection and gates are under `extra["quality"]`).

`FacePipeline.embed_image(image)` is the enrolment path for still photos: stricter, it insists on exactly
one face (a photo with two people cannot say which is the one to enrol) that passes every gate, and raises
NoFaceError saying what was wrong otherwise.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edge.errors import ImageError, NoFaceError
from edge.types import AlignedFace, Face, StageTimes
from edge.vision.quality import QualityGate, QualityVerdict


class Detector(Protocol):
    def detect(self, frame_rgb: np.ndarray) -> list[Face]: ...


class Aligner(Protocol):
    def align(self, frame: np.ndarray, face: Face) -> AlignedFace: ...


class EmbedderLike(Protocol):
    def embed(self, chips: np.ndarray) -> np.ndarray: ...


class MatcherLike(Protocol):
    """What the pipeline needs of a matcher (edge.identity.match.Matcher is one); vision does not import
    identity, so the match result is opaque here."""

    def match(self, embedding: np.ndarray) -> Any: ...


@dataclass(frozen=True, eq=False)
class FrameAnalysis:
    """Everything one frame produced. `face` is the chosen subject (None when no face was found);
    `quality` its verdict; `aligned` and `embedding` are set only when the subject passed the gates;
    `match` only when the pipeline has a matcher and an embedding was made."""

    faces: tuple[Face, ...]
    face: Face | None
    quality: QualityVerdict | None
    aligned: AlignedFace | None
    embedding: np.ndarray | None  # (D,) float32, unit length
    times: StageTimes
    match: Any = None  # edge.identity.match.Match when the pipeline has a matcher

    @property
    def usable(self) -> bool:
        return self.embedding is not None

    @property
    def reason(self) -> str:
        """Why the frame gave no embedding ("" if it did)."""
        if self.embedding is not None:
            return ""
        if self.face is None:
            return "no face"
        if self.quality is not None and not self.quality.ok:
            return self.quality.reason
        return "not embedded"


def _ms(start: float) -> float:
    return (time.monotonic() - start) * 1e3


class FacePipeline:
    """`process(frame)` -> FrameAnalysis. Stages are the objects given (detector, aligner, embedder,
    quality gate, and optionally a matcher), so the same pipeline runs on TFLite, Keras or test stand-ins."""

    def __init__(self, detector: Detector, aligner: Aligner, embedder: EmbedderLike,
                 quality: QualityGate | None = None, matcher: MatcherLike | None = None):
        self.detector = detector
        self.aligner = aligner
        self.embedder = embedder
        self.quality = quality or QualityGate()
        self.matcher = matcher

    def process(self, frame: np.ndarray) -> FrameAnalysis:
        t = time.monotonic()
        faces = tuple(self.detector.detect(frame))
        t_detect = _ms(t)
        t = time.monotonic()
        face = self.quality.select(faces, frame)
        verdict = self.quality.check(frame, face) if face is not None else None
        t_quality = _ms(t)
        if face is None or not verdict.ok:
            return FrameAnalysis(faces, face, verdict, None, None,
                                 StageTimes(detect=t_detect, extra={"quality": t_quality}))
        t = time.monotonic()
        aligned = self.aligner.align(frame, face)
        t_align = _ms(t)
        t = time.monotonic()
        embedding = np.asarray(self.embedder.embed(aligned.chip[None]), dtype=np.float32)[0]
        t_embed = _ms(t)
        match = None
        t_match = 0.0
        if self.matcher is not None:
            t = time.monotonic()
            match = self.matcher.match(embedding)
            t_match = _ms(t)
        times = StageTimes(detect=t_detect, align=t_align, embed=t_embed, match=t_match,
                           extra={"quality": t_quality})
        return FrameAnalysis(faces, face, verdict, aligned, embedding, times, match)

    def embed_image(self, image: np.ndarray) -> np.ndarray:
        """The embedding of the one face in a still photo. NoFaceError when the photo holds no face, more
        than one face of at least `min_face_px`, or a face that fails a quality gate (the message says which
        and why)."""
        faces = self.detector.detect(image)
        if not faces:
            raise NoFaceError("no face found")
        # Faces under the size gate (a portrait on the wall behind) do not count as a second person.
        big = [f for f in faces if min(f.width, f.height) >= self.quality.options.min_face_px]
        if len(big) > 1:
            sizes = ", ".join(f"{min(f.width, f.height):.0f} px" for f in big)
            raise NoFaceError(f"{len(big)} faces found ({sizes}), expected exactly one")
        face = big[0] if big else max(faces, key=lambda f: f.area)
        verdict = self.quality.check(image, face)
        if not verdict.ok:
            raise NoFaceError(f"face not usable: {verdict.reason}")
        aligned = self.aligner.align(image, face)
        return np.asarray(self.embedder.embed(aligned.chip[None]), dtype=np.float32)[0]

    def embed_image_file(self, path: str | Path) -> np.ndarray:
        """`embed_image` on a file; every error names the file."""
        from edge.images import read_image_rgb

        image = read_image_rgb(Path(path))
        try:
            return self.embed_image(image)
        except (NoFaceError, ImageError) as exc:
            raise type(exc)(f"{path}: {exc}") from exc
