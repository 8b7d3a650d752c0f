"""The per-frame path: detect -> landmarks (confirm and refine) -> pick the subject -> quality gates ->
liveness sample -> align -> embed (-> match). The liveness verdict is the decider's, over an attempt's
frames (edge.identity.decide): here each usable frame only gives its sample (edge.vision.liveness), and so
does a face that failed only the pose gates (a head turned to answer a challenge; it is not embedded).

`FacePipeline.subject(frame)` is the one rule for which face a frame is about, shared by the lock
(`process`), enrolment (`embed_image`) and `facelock embed`: with a landmark model, only detections the
model confirms as faces count, each scored by detector score x face presence; the subject is then chosen by
that confidence, size and centrality together (`edge.vision.quality.select_subject`), so a background false
positive cannot win by being large.

`FacePipeline.process(frame)` never raises for a frame without a usable face: the FrameAnalysis says how
far the frame got and why it stopped. Each stage is timed with the monotonic clock (`StageTimes`, ms; the
landmark model under `extra["landmarks"]`, subject selection and gates under `extra["quality"]`, the
liveness sample under `extra["liveness"]`).

`FacePipeline.embed_image(image)` is the enrolment path for still photos: stricter, it insists on exactly
one face (a photo with two people cannot say which is the one to enrol) that passes every gate, and raises
NoFaceError saying what was wrong otherwise.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edge.errors import ImageError, NoFaceError
from edge.types import AlignedFace, Face, FaceCondition, StageTimes
from edge.vision.landmarks import covers
from edge.vision.quality import QualityGate, QualityVerdict


class Detector(Protocol):
    def detect(self, frame_rgb: np.ndarray) -> list[Face]: ...


class Aligner(Protocol):
    def align(self, frame: np.ndarray, face: Face) -> AlignedFace: ...


class LandmarkerLike(Protocol):
    def confirm(self, frame: np.ndarray, faces: list[Face] | tuple[Face, ...]) -> list[Face]: ...


class LivenessLike(Protocol):
    def sample(self, face: Face | None, frame: np.ndarray | None = None, ir: np.ndarray | None = None) -> Any: ...


class EmbedderLike(Protocol):
    def embed(self, chips: np.ndarray) -> np.ndarray: ...


class MatcherLike(Protocol):
    """What the pipeline needs of a matcher (edge.identity.match.Matcher is one); vision does not import
    identity, so the match result is opaque here."""

    def match(self, embedding: np.ndarray) -> Any: ...


class Settled(Protocol):
    """The decider's word on a match made from the embedder's first run alone: True when the frame's vote
    cannot change with the mirror run (edge.identity.decide.Decider.settled); `conditions`: the face's
    (QualityVerdict.conditions)."""

    def __call__(self, match: Any, conditions: Collection[FaceCondition] = ()) -> bool: ...


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
    liveness: Any = None  # edge.vision.liveness.LivenessSample (a usable face, or one failing only the pose gates)
    once: bool = False  # the embedding is the first run's alone: its match was settled without the mirror run

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


def _landmark_width(face: Face) -> float:
    """A face's width as the landmark model measures it: 2.5 x its eye distance (LFW: box / eye distance
    = 2.44 for BlazeFace, 2.56 for dlib's HOG boxes)."""
    lm = face.landmarks
    return 0.0 if lm is None else 2.5 * float(np.hypot(*(lm[1] - lm[0])))


def _ms(start: float) -> float:
    return (time.monotonic() - start) * 1e3


@dataclass(frozen=True, eq=False)
class Subject:
    """What `FacePipeline.subject` found: the faces that count (confirmed by the landmark model when there
    is one), the chosen subject (None: no face), and the stage times in ms."""

    faces: tuple[Face, ...]
    face: Face | None
    detect_ms: float
    landmarks_ms: float
    select_ms: float


class FacePipeline:
    """`process(frame)` -> FrameAnalysis. Stages are the objects given (detector, aligner, embedder,
    quality gate, and optionally a matcher and a landmark model), so the same pipeline runs on TFLite,
    Keras or test stand-ins."""

    def __init__(self, detector: Detector, aligner: Aligner, embedder: EmbedderLike,
                 quality: QualityGate | None = None, matcher: MatcherLike | None = None,
                 landmarker: LandmarkerLike | None = None, near_detector: Detector | None = None,
                 liveness: LivenessLike | None = None):
        self.detector = detector
        self.aligner = aligner
        self.embedder = embedder
        self.quality = quality or QualityGate()
        self.matcher = matcher
        self.landmarker = landmarker
        self.near_detector = near_detector
        self.liveness = liveness

    def subject(self, frame: np.ndarray) -> Subject:
        """Detect, confirm with the landmark model, choose the subject (see the module docstring).

        With a `near_detector` (short-range BlazeFace) and a landmark model, that one is tried first: a
        face near the camera is found by it for a third of the full-range model's cost (0.9 against 2.7
        ms a run here), and only a frame where it finds no confirmed face goes to `detector` (full range,
        which sees faces down to 40 px that the short-range model misses). The short-range model's faces
        count alone only when one of them is large (`DetectorOptions.near_min_face_px`): on small faces it
        is unreliable, so the full-range model looks too, and a short-range face it does not find again is
        kept beside its own (a face it misses, the short-range one confirmed, still counts)."""
        t_detect = t_marks = 0.0
        near: tuple[Face, ...] = ()
        detectors = [(self.detector, 0.0)]
        if self.near_detector is not None and self.landmarker is not None:
            options = getattr(self.near_detector, "options", None)
            detectors.insert(0, (self.near_detector, getattr(options, "near_min_face_px", 0.0)))
        for detector, min_px in detectors:
            t = time.monotonic()
            faces = tuple(detector.detect(frame))
            t_detect += _ms(t)
            if self.landmarker is not None and faces:
                t = time.monotonic()
                faces = tuple(self.landmarker.confirm(frame, faces))
                t_marks += _ms(t)
            if min_px:
                if any(_landmark_width(f) >= min_px for f in faces):
                    break  # a large face: the subject is among these (small ones beside it cannot win)
                near = faces  # small (or none): the full-range model looks again
                continue
            faces += tuple(n for n in near if not any(covers(f, n.center) for f in faces))
        t = time.monotonic()
        face = self.quality.select(faces, frame)
        return Subject(faces, face, t_detect, t_marks, _ms(t))

    def process(self, frame: np.ndarray, ir: np.ndarray | None = None, settled: Settled | None = None) -> FrameAnalysis:
        """The frame's analysis; `ir`: its near-infrared view, for the liveness stage (edge.device.ir).

        `settled` (with a matcher and an embedder that mirror-averages in two steps, `embed_once` and
        `complete`): the chip is embedded once and matched, and when `settled` says that match already
        decides the frame's vote, the mirror run is skipped (`FrameAnalysis.once`); otherwise the embedding is
        completed and matched again. A score far from the threshold is not moved across it by the mirror
        run, so the lock spends that run only on the frames it can change. Enrolment never passes it: its
        templates are always the full embedding."""
        found = self.subject(frame)
        faces, face = found.faces, found.face
        extra = {"landmarks": found.landmarks_ms} if self.landmarker is not None else {}
        t = time.monotonic()
        verdict = self.quality.check(frame, face) if face is not None else None
        extra["quality"] = found.select_ms + _ms(t)
        sample = None
        # A head turned past the pose gates is not recognised, but it may be answering a challenge: its mesh
        # goes to the liveness judge too (the decider gives it no vote).
        if face is not None and (verdict.ok or verdict.pose_only) and self.liveness is not None:
            t = time.monotonic()
            sample = self.liveness.sample(face, frame, ir)
            extra["liveness"] = _ms(t)
        if face is None or not verdict.ok:
            return FrameAnalysis(faces, face, verdict, None, None, StageTimes(detect=found.detect_ms, extra=extra),
                                 liveness=sample)
        t = time.monotonic()
        aligned = self.aligner.align(frame, face)
        t_align = _ms(t)
        if settled is not None and self.matcher is not None and getattr(self.embedder, "mirror", False) \
                and hasattr(self.embedder, "embed_once"):
            return self._embed_in_two(found, verdict, aligned, settled, StageTimes(
                detect=found.detect_ms, align=t_align, extra=extra), sample)
        t = time.monotonic()
        embedding = np.asarray(self.embedder.embed(aligned.chip[None]), dtype=np.float32)[0]
        t_embed = _ms(t)
        match = None
        t_match = 0.0
        if self.matcher is not None:
            t = time.monotonic()
            match = self.matcher.match(embedding)
            t_match = _ms(t)
        times = StageTimes(detect=found.detect_ms, align=t_align, embed=t_embed, match=t_match, extra=extra)
        return FrameAnalysis(faces, face, verdict, aligned, embedding, times, match, sample)

    def _embed_in_two(self, found: Subject, verdict: QualityVerdict, aligned: AlignedFace, settled: Settled,
                      times: StageTimes, sample: Any) -> FrameAnalysis:
        """`process`'s embed and match when `settled` may spare the mirror run (see `process`)."""
        chips = aligned.chip[None]
        t = time.monotonic()
        once = np.asarray(self.embedder.embed_once(chips), dtype=np.float32)
        t_embed = _ms(t)
        t = time.monotonic()
        match = self.matcher.match(once[0])
        t_match = _ms(t)
        embedding, done = once[0], settled(match, verdict.conditions)
        if not done:
            t = time.monotonic()
            embedding = np.asarray(self.embedder.complete(chips, once), dtype=np.float32)[0]
            t_embed += _ms(t)
            t = time.monotonic()
            match = self.matcher.match(embedding)
            t_match += _ms(t)
        return FrameAnalysis(found.faces, found.face, verdict, aligned, embedding,
                             replace(times, embed=t_embed, match=t_match), match, sample, once=done)

    def embed_image(self, image: np.ndarray) -> np.ndarray:
        """The embedding of the one face in a still photo. NoFaceError when the photo holds no face, more
        than one face of at least `min_face_px`, or a face that fails a quality gate (the message says which
        and why)."""
        found = self.subject(image)
        if found.face is None:
            raise NoFaceError("no face found")
        # Faces under the size gate (a portrait on the wall behind) do not count as a second person.
        big = [f for f in found.faces if min(f.width, f.height) >= self.quality.options.min_face_px]
        if len(big) > 1:
            sizes = ", ".join(f"{min(f.width, f.height):.0f} px" for f in big)
            raise NoFaceError(f"{len(big)} faces found ({sizes}), expected exactly one")
        face = big[0] if big else found.face
        verdict = self.quality.check(image, face)
        if not verdict.ok:
            raise NoFaceError(f"face not usable: {verdict.reason}")
        if verdict.dim:  # a template is compared with every later face: it needs good light
            raise NoFaceError(f"face too dim to enrol: contrast {verdict.contrast:.1f}, need >= "
                              f"{self.quality.options.dim_contrast:g} (more light on the face)")
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
