"""The one place that builds the per-frame stages (detector, aligner, embedder) from a model.

A model is a bundle folder or .tar.gz (what the board runs: it brings its own detector, alignment template
and embedder), a `.tflite` embedder (with the fetched BlazeFace and the packaged template), or any other
suffix a workstation package registered with `register_embedder_loader` (`convert` registers `.keras` and
`.h5`: `edge` never imports TensorFlow, so it cannot know them itself).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edge.errors import ModelError
from edge.models.bundle import Bundle, load_bundle
from edge.models.store import DETECTOR, default_model, model_path
from edge.vision.align import FaceAligner
from edge.vision.detect import BlazeFaceDetector, DetectorOptions
from edge.vision.embed import Embedder, TFLiteEmbedder

log = logging.getLogger(__name__)

# suffix -> loader(path) for embedders that need more than the board has (see the module docstring).
_EMBEDDER_LOADERS: dict[str, Callable[[Path], Embedder]] = {}


def register_embedder_loader(suffixes: tuple[str, ...], loader: Callable[[Path], Embedder]) -> None:
    for suffix in suffixes:
        _EMBEDDER_LOADERS[suffix] = loader


@dataclass(frozen=True)
class Stages:
    """What `FacePipeline` runs; iterable as (detector, aligner, embedder)."""

    detector: BlazeFaceDetector
    aligner: FaceAligner
    embedder: Embedder

    def __iter__(self):
        return iter((self.detector, self.aligner, self.embedder))


def detector(path: str | os.PathLike | None = None, options: DetectorOptions | None = None,
             num_threads: int | None = None) -> BlazeFaceDetector:
    """BlazeFace from `path` (default: the fetched short-range model)."""
    options = options or DetectorOptions()
    if num_threads is not None:
        from dataclasses import replace

        options = replace(options, num_threads=num_threads)
    return BlazeFaceDetector(path if path is not None else model_path(DETECTOR), options)


def bundle_embedder(bundle: Bundle, num_threads: int = 2, use_edgetpu: bool = True) -> TFLiteEmbedder:
    """The bundle's embedder. With an Edge TPU model in the bundle and libedgetpu loadable, that one runs;
    otherwise the CPU model (the interpreter logs which)."""
    tpu = bundle.edgetpu_file
    if use_edgetpu and tpu is not None:
        try:
            return TFLiteEmbedder(tpu, num_threads=num_threads, edgetpu=True, require_delegate=True,
                                  space=bundle.space)
        except ModelError as exc:  # no TPU attached or no libedgetpu: the CPU model does the same job
            log.warning("%s; using the CPU embedder", exc)
    return TFLiteEmbedder(bundle.embedder_file, num_threads=num_threads, space=bundle.space)


def bundle_stages(bundle: Bundle, num_threads: int = 2, detector_options: DetectorOptions | None = None,
                  use_edgetpu: bool = True) -> Stages:
    return Stages(detector(bundle.detector_file, detector_options, num_threads),
                  FaceAligner.from_template(bundle.alignment_template),
                  bundle_embedder(bundle, num_threads, use_edgetpu))


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
                             detector_options: DetectorOptions | None = None) -> Stages:
    """The stages for a model (default: the Keras port of dlib's ResNet). A bundle brings its own detector
    and alignment template; a bare model uses the fetched BlazeFace and the packaged template."""
    path = Path(model) if model is not None else default_model()
    if path.is_dir() or path.name.endswith((".tar.gz", ".tgz")):
        return bundle_stages(load_bundle(path), num_threads, detector_options)
    return Stages(detector(None, detector_options, num_threads), FaceAligner(),
                  load_embedder(path, num_threads=num_threads))
