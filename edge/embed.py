"""Embedders: aligned 150x150 RGB chips in, L2-normalised float32 embeddings out.

On the board the embedder is a TFLite model (int8 from a bundle, or float). On the workstation the same
interface wraps the Keras model (`convert.embedders.KerasEmbedder`), so everything downstream is identical.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import numpy as np

from edge.errors import ModelError
from edge.types import CHIP_SIZE


class Embedder(Protocol):
    """What every embedder offers. `name` says what runs (for logs and stats); `space` names the embedding
    space its vectors live in (`space:<model>@<hash>`, '' when unknown): a model and its pruned or int8
    versions share one, so a gallery enrolled with one matches with the others."""

    name: str
    space: str

    def embed(self, chips: np.ndarray) -> np.ndarray:
        """(N, 150, 150, 3) uint8 RGB chips -> (N, D) float32, each row of unit length."""
        ...


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Row-wise unit length in float32. Kept out of the int8 model: TFLite's int8 L2_NORMALIZATION kernel
    pins its output scale to 1/128, which would cost resolution we get back for free here."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, eps)


def check_chips(chips: np.ndarray) -> np.ndarray:
    chips = np.asarray(chips)
    if chips.ndim == 3:
        chips = chips[None]
    if chips.ndim != 4 or chips.shape[1:] != (CHIP_SIZE, CHIP_SIZE, 3):
        raise ValueError(f"expected chips of shape (N, {CHIP_SIZE}, {CHIP_SIZE}, 3), got {chips.shape}")
    if chips.dtype != np.uint8:
        raise ValueError(f"expected uint8 RGB chips, got {chips.dtype}")
    return chips


class TFLiteEmbedder:
    """A TFLite embedder with float or int8 input/output. int8 input is quantized with the model's own
    parameters (the facelock models take pixels with scale 1, zero point -128, which is exact)."""

    def __init__(self, model_path: str | os.PathLike, num_threads: int = 2, edgetpu: bool = False,
                 require_delegate: bool = False, space: str = ""):
        from edge.interpreter import load_interpreter

        self.model_path = Path(model_path)
        self.space = space  # a bare .tflite does not say; a bundle's manifest does
        self.interpreter = load_interpreter(self.model_path, num_threads=num_threads, edgetpu=edgetpu,
                                            require_delegate=require_delegate)
        inputs = self.interpreter.input_details
        outputs = self.interpreter.output_details
        if len(inputs) != 1 or tuple(inputs[0]["shape"][1:]) != (CHIP_SIZE, CHIP_SIZE, 3):
            raise ModelError(
                f"{self.model_path}: embedder input must be one (1, {CHIP_SIZE}, {CHIP_SIZE}, 3) tensor, "
                f"got {[tuple(d['shape']) for d in inputs]}"
            )
        if len(outputs) != 1 or len(outputs[0]["shape"]) != 2:
            raise ModelError(f"{self.model_path}: embedder output must be one (1, D) tensor")
        self._in = inputs[0]
        self._out = outputs[0]
        self.dim = int(self._out["shape"][1])
        self.name = f"tflite:{self.model_path.name}:{np.dtype(self._in['dtype']).name}"

    def _quantize_input(self, chip: np.ndarray) -> np.ndarray:
        dtype = np.dtype(self._in["dtype"])
        x = chip.astype(np.float32)[None]
        if dtype == np.float32:
            return x
        scale, zero = self._in["quantization"]
        info = np.iinfo(dtype)
        return np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)

    def _dequantize_output(self, y: np.ndarray) -> np.ndarray:
        if np.dtype(self._out["dtype"]) == np.float32:
            return y.astype(np.float32)
        scale, zero = self._out["quantization"]
        return (y.astype(np.float32) - zero) * scale

    def embed(self, chips: np.ndarray) -> np.ndarray:
        chips = check_chips(chips)
        out = np.empty((len(chips), self.dim), dtype=np.float32)
        for i, chip in enumerate(chips):
            (y,) = self.interpreter.run([self._quantize_input(chip)])
            out[i] = self._dequantize_output(y)[0]
        return l2_normalize(out)


def load_embedder(model: str | os.PathLike, num_threads: int = 2) -> Embedder:
    """An embedder for a model path: a bundle folder, a `.tflite` file, or a `.keras` file (needs the
    workstation extra, TensorFlow; the board never takes this branch)."""
    path = Path(model)
    if path.is_dir():
        from edge.bundle import load_bundle

        return load_bundle(path).embedder(num_threads=num_threads)
    if path.suffix == ".tflite":
        return TFLiteEmbedder(path, num_threads=num_threads)
    if path.suffix in (".keras", ".h5"):
        try:
            from convert.embedders import KerasEmbedder
        except ImportError as exc:
            raise ModelError(
                f"{path}: a Keras model needs TensorFlow (install facelock[convert]); on a board use a bundle"
            ) from exc
        return KerasEmbedder(path)
    if not path.exists():
        raise ModelError(f"{path}: no such model (expected a bundle folder, a .tflite or a .keras file)")
    raise ModelError(f"{path}: unknown model type (expected a bundle folder, a .tflite or a .keras file)")


def default_model() -> Path:
    """The model used when none is given: the Keras port of dlib's ResNet in the models folder."""
    from edge.modelstore import models_dir

    return models_dir() / "dlib_resnet_v1.keras"


def load_pipeline_components(model: str | os.PathLike | None = None, num_threads: int = 2):
    """(detector, aligner, embedder) for a model. A bundle brings its own detector and alignment template;
    a bare model uses the fetched BlazeFace and the packaged template."""
    from edge.align import FaceAligner
    from edge.detect import BlazeFaceDetector, DetectorOptions

    path = Path(model) if model is not None else default_model()
    if path.is_dir():
        from edge.bundle import load_bundle

        bundle = load_bundle(path)
        return bundle.detector(num_threads=num_threads), bundle.aligner(), bundle.embedder(num_threads)
    from edge.modelstore import model_path

    detector = BlazeFaceDetector(
        model_path("face_detection_short_range.tflite"), DetectorOptions(num_threads=num_threads)
    )
    return detector, FaceAligner(), load_embedder(path, num_threads=num_threads)
