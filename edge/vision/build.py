"""The one place that builds the per-frame stages (detector, landmarker, aligner, embedder) from a model.

A model is a bundle folder or .tar.gz (what the board runs: it brings its own detectors, landmark model,
alignment template and embedder), a `.tflite` embedder (with the fetched BlazeFace models, short range tried
first and full range for faces it misses, the fetched face-landmark model and the packaged template), or any other suffix a workstation package registered with
`register_embedder_loader` (`convert` registers `.keras` and `.h5`: `edge` never imports TensorFlow, so it
cannot know them itself).

A bundle made before the landmark model (no `landmarks` entry, a keypoint template) still runs as it was
built: its own detector, its keypoint template, no landmark stage. A bundle with an anti-spoofing CNN
(`antispoof` entry) brings that model too (`Stages.antispoof`; `liveness_judge` makes it a layer).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from edge.errors import ConfigError, ModelError
from edge.models.bundle import Bundle, load_bundle
from edge.models.store import DETECTOR, DETECTOR_FULL_RANGE, LANDMARKS, default_model, model_path
from edge.vision.align import FaceAligner
from edge.vision.antispoof import AntiSpoofLayer, AntiSpoofModel, AntiSpoofOptions
from edge.vision.challenge import ChallengeJudge, ChallengeOptions
from edge.vision.detect import UNCONFIRMED_MIN_SCORE, BlazeFaceDetector, DetectorOptions
from edge.vision.embed import Embedder, TFLiteEmbedder
from edge.vision.ir import IrLayer
from edge.vision.landmarks import FaceLandmarker, LandmarkOptions
from edge.vision.layered import LayeredLiveness
from edge.vision.liveness import LivenessCheck, LivenessOptions

log = logging.getLogger(__name__)

# suffix -> loader(path) for embedders that need more than the board has (see the module docstring).
_EMBEDDER_LOADERS: dict[str, Callable[[Path], Embedder]] = {}


def register_embedder_loader(suffixes: tuple[str, ...], loader: Callable[[Path], Embedder]) -> None:
    for suffix in suffixes:
        _EMBEDDER_LOADERS[suffix] = loader


@dataclass(frozen=True)
class Stages:
    """What `FacePipeline` runs. Iterable as (detector, aligner, embedder) for callers that take those
    three; `pipeline()` builds the whole per-frame path, landmark stage included."""

    detector: BlazeFaceDetector
    aligner: FaceAligner
    embedder: Embedder
    landmarker: FaceLandmarker | None = None
    near_detector: BlazeFaceDetector | None = None  # short range, tried first (FacePipeline.subject)
    antispoof: AntiSpoofModel | None = None  # the bundle's anti-spoofing CNN, when it carries one

    def __iter__(self):
        return iter((self.detector, self.aligner, self.embedder))

    def pipeline(self, quality=None, matcher=None, liveness=None):
        """The FacePipeline of these stages (`quality`: a QualityGate; `matcher`, `liveness` (a
        LivenessCheck, `liveness_stage`): optional)."""
        from edge.vision.pipeline import FacePipeline

        return FacePipeline(self.detector, self.aligner, self.embedder, quality, matcher,
                            landmarker=self.landmarker, near_detector=self.near_detector, liveness=liveness)


def liveness_stage(options: LivenessOptions | None, landmarker: FaceLandmarker | None) -> LivenessCheck | None:
    """The liveness stage for `[liveness]` (None when it is off). It reads the landmark model's mesh, so
    with liveness on and no landmark model (a bundle made before it) nothing could ever be accepted:
    ConfigError says so rather than a lock that never opens."""
    options = options or LivenessOptions()
    if not options.enabled:
        return None
    _needs_landmarks("liveness", landmarker)
    return LivenessCheck(options)


def _needs_landmarks(section: str, landmarker: FaceLandmarker | None) -> None:
    if landmarker is None:
        raise ConfigError(f"{section}.enabled = true needs the face-landmark model, and these stages have none "
                          f"(a bundle made before it): rebuild the bundle, or set [{section}] enabled = false")


def liveness_judge(liveness: LivenessOptions | None, challenge: ChallengeOptions | None,
                   landmarker: FaceLandmarker | None, antispoof: AntiSpoofModel | None = None,
                   antispoof_options: AntiSpoofOptions | None = None, ir=None):
    """The liveness stage and judge for `[liveness]`, `[challenge]`, `[antispoof]` and `[ir]` (None when
    all are off): the passive checks alone, or the challenge (after the passive checks, when those are on
    too); with the bundle's anti-spoofing CNN (`antispoof`, when `[antispoof]` is on) or the near-infrared
    check (`ir`: edge.device.ir.IrOptions, when enabled) a layered judge that needs those too
    (edge.vision.layered). The mesh checks and the IR check use the landmark model: ConfigError without
    one."""
    passive = liveness_stage(liveness, landmarker)
    challenge = challenge or ChallengeOptions()
    mesh: LivenessCheck | ChallengeJudge | None = passive
    if challenge.enabled:
        _needs_landmarks("challenge", landmarker)
        mesh = ChallengeJudge(challenge, passive)
    antispoof_options = (antispoof_options or AntiSpoofOptions()).validate()
    layers: list = []
    if antispoof is not None and antispoof_options.enabled:
        layers.append(AntiSpoofLayer(antispoof, antispoof_options))
    if ir is not None and ir.enabled:
        _needs_landmarks("ir", landmarker)
        layers.append(IrLayer(landmarker, ir.min_presence, ir.min_frames, ir.max_frames))
    return LayeredLiveness(mesh, layers) if layers else mesh


def detector(path: str | os.PathLike | None = None, options: DetectorOptions | None = None,
             num_threads: int | None = None) -> BlazeFaceDetector:
    """BlazeFace from `path` (default: the fetched full-range model, which sees faces at door distance)."""
    options = options or DetectorOptions()
    if num_threads is not None:
        options = replace(options, num_threads=num_threads)
    return BlazeFaceDetector(path if path is not None else model_path(DETECTOR_FULL_RANGE), options)


def landmarker(path: str | os.PathLike | None = None, options: LandmarkOptions | None = None,
               num_threads: int = 2) -> FaceLandmarker:
    """The face-landmark model from `path` (default: the fetched one)."""
    return FaceLandmarker(path if path is not None else model_path(LANDMARKS), options, num_threads)


def bundle_embedder(bundle: Bundle, num_threads: int = 2, use_edgetpu: bool = True) -> TFLiteEmbedder:
    """The bundle's embedder. With an Edge TPU model in the bundle and libedgetpu loadable, that one runs;
    otherwise the CPU model (the interpreter logs which)."""
    tpu = bundle.edgetpu_file
    if use_edgetpu and tpu is not None:
        try:
            return TFLiteEmbedder(tpu, num_threads=num_threads, edgetpu=True, require_delegate=True,
                                  space=bundle.space, card=bundle.card)
        except ModelError as exc:  # no TPU attached or no libedgetpu: the CPU model does the same job
            log.warning("%s; using the CPU embedder", exc)
    return TFLiteEmbedder(bundle.embedder_file, num_threads=num_threads, space=bundle.space, card=bundle.card)


def bundle_stages(bundle: Bundle, num_threads: int = 2, detector_options: DetectorOptions | None = None,
                  use_edgetpu: bool = True, landmark_options: LandmarkOptions | None = None) -> Stages:
    marks = bundle.landmarks_file
    found = landmarker(marks, landmark_options, num_threads) if marks is not None else None
    if found is None:  # nothing confirms the detections: keep MediaPipe's own threshold
        options = detector_options or DetectorOptions()
        detector_options = replace(options, score_threshold=max(options.score_threshold, UNCONFIRMED_MIN_SCORE))
    near = bundle.near_detector_file
    spoof = bundle.antispoof
    # The model card sets the chip size (150 for dlib's port, e.g. 112 for an ArcFace-style model).
    return Stages(detector(bundle.detector_file, detector_options, num_threads),
                  FaceAligner.from_template(bundle.alignment_template, landmarker=found,
                                            chip_size=bundle.card.chip_size),
                  bundle_embedder(bundle, num_threads, use_edgetpu), found,
                  detector(near, detector_options, num_threads) if near is not None and found else None,
                  AntiSpoofModel(spoof[0], spoof[1], num_threads) if spoof is not None else None)


def load_embedder(model: str | os.PathLike, num_threads: int = 2) -> Embedder:
    """An embedder for a model path: a bundle, a `.tflite` file, or a registered suffix (`.keras`)."""
    path = Path(model)
    if path.is_dir() or path.name.endswith((".tar.gz", ".tgz")):
        return bundle_embedder(load_bundle(path), num_threads=num_threads)
    if path.suffix == ".tflite":
        return TFLiteEmbedder(path, num_threads=num_threads)
    if path.suffix in (".keras", ".h5"):
        loader = _EMBEDDER_LOADERS.get(path.suffix)
        if loader is None:
            raise ModelError(
                f"{path}: a Keras model needs TensorFlow (install facelock[convert]); on a board use a bundle")
        return loader(path)
    if not path.exists():
        raise ModelError(f"{path}: no such model (expected a bundle folder, a .tflite or a .keras file)")
    raise ModelError(f"{path}: unknown model type (expected a bundle folder, a .tflite or a .keras file)")


def load_pipeline_components(model: str | os.PathLike | None = None, num_threads: int = 2,
                             detector_options: DetectorOptions | None = None,
                             landmark_options: LandmarkOptions | None = None) -> Stages:
    """The stages for a model (default: the Keras port of dlib's ResNet). A bundle brings its own detector,
    landmark model and alignment template; a bare model uses the fetched full-range BlazeFace, the fetched
    landmark model and the packaged template."""
    path = Path(model) if model is not None else default_model()
    if path.is_dir() or path.name.endswith((".tar.gz", ".tgz")):
        return bundle_stages(load_bundle(path), num_threads, detector_options, landmark_options=landmark_options)
    marks = landmarker(None, landmark_options, num_threads)
    embedder = load_embedder(path, num_threads=num_threads)
    aligner = FaceAligner(landmarker=marks)
    size = getattr(embedder, "input_size", None)
    if size is not None and tuple(size) != (aligner.chip_size, aligner.chip_size):
        raise ModelError(f"{path}: takes {size[0]}x{size[1]} chips; a bare model gets the packaged "
                         f"{aligner.chip_size}x{aligner.chip_size} template, so convert it into a bundle "
                         "(`facelock convert --model ... --input-size ... --template ...`)")
    return Stages(detector(None, detector_options, num_threads), aligner, embedder, marks,
                  detector(model_path(DETECTOR), detector_options, num_threads))
