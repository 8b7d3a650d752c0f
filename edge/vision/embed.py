"""Embedders: aligned RGB chips in (150x150 for dlib's ResNet; a bundle's model card says for another
embedder), L2-normalised float32 embeddings out.

On the board the embedder is a TFLite model (int8 from a bundle, or float). On the workstation the same
interface wraps the Keras model (`convert.keras_embedder.KerasEmbedder`), so everything downstream is identical.
Stages are built in `edge.vision.build`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import numpy as np

from edge.errors import ModelError
from edge.models.card import EmbedderCard
from edge.vision.interpreter import dequantize_output, quantize_input


class Embedder(Protocol):
    """What every embedder offers. `name` says what runs (for logs and stats); `space` names the embedding
    space its vectors live in (`space:<model>@<hash>`, '' when unknown): a model and its pruned or int8
    versions share one, so a gallery enrolled with one matches with the others."""

    name: str
    space: str

    def embed(self, chips: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) uint8 RGB chips (S: the embedder's input size) -> (N, D) float32, rows of unit length."""
        ...


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Row-wise unit length in float32. Kept out of the int8 model: TFLite's int8 L2_NORMALIZATION kernel
    pins its output scale to 1/128, which would cost resolution we get back for free here."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, eps)


def mirror_averaged(embed_raw, chips: np.ndarray) -> np.ndarray:
    """Unit rows of the mean of `embed_raw`'s unit embeddings of the chips and of their mirror images
    (left and right swapped): the test-time flip a model card's `mirror_average` asks for. A chip and its
    mirror image give the same embedding, so which way a camera or a photo is flipped does not matter."""
    return mirror_completed(embed_raw, chips, l2_normalize(embed_raw(chips)))


def mirror_completed(embed_raw, chips: np.ndarray, once: np.ndarray) -> np.ndarray:
    """`mirror_averaged(embed_raw, chips)` when the chips' own unit embeddings (`once`) are already made: only
    the mirror images are run."""
    mirror = l2_normalize(embed_raw(np.ascontiguousarray(chips[:, :, ::-1])))
    return l2_normalize(once + mirror)


def wants_mirror(card: EmbedderCard | None, mirror: bool | None = None) -> bool:
    """Whether an embedder mirror-averages: `mirror` if given, else what its model card says (no card: no)."""
    return bool(mirror) if mirror is not None else bool(card is not None and card.mirror_average)


def check_chips(chips: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
    """(N, h, w, 3) uint8 chips (one chip (h, w, 3) becomes a batch of one); `size` (h, w): the embedder's."""
    chips = np.asarray(chips)
    if chips.ndim == 3:
        chips = chips[None]
    if chips.ndim != 4 or chips.shape[3] != 3 or (size is not None and chips.shape[1:3] != tuple(size)):
        h, w = size if size is not None else ("h", "w")
        raise ValueError(f"expected chips of shape (N, {h}, {w}, 3), got {chips.shape}")
    if chips.dtype != np.uint8:
        raise ValueError(f"expected uint8 RGB chips, got {chips.dtype}")
    return chips


class TFLiteEmbedder:
    """A TFLite embedder with float or int8 input/output. int8 input is quantized with the model's own
    parameters (the facelock models take pixels with scale 1, zero point -128, which is exact).

    The input is RGB pixels 0..255 of a square chip whose size the model's input tensor says; a bundle's
    model card (`card`) must agree with the tensor on that size and on the embedding dimension, and says
    whether embeddings are mirror-averaged (`mirror`, if given, overrides it: e.g. to time the model alone)."""

    def __init__(self, model_path: str | os.PathLike, num_threads: int = 2, edgetpu: bool = False,
                 require_delegate: bool = False, space: str = "", card: EmbedderCard | None = None,
                 mirror: bool | None = None):
        from edge.vision.interpreter import load_interpreter

        self.model_path = Path(model_path)
        self.space = space or (card.space if card else "")  # a bare .tflite does not say; a bundle does
        self.interpreter = load_interpreter(self.model_path, num_threads=num_threads, edgetpu=edgetpu,
                                            require_delegate=require_delegate)
        inputs = self.interpreter.input_details
        outputs = self.interpreter.output_details
        shape = tuple(int(d) for d in inputs[0]["shape"]) if len(inputs) == 1 else ()
        side = card.chip_size if card else (shape[1] if len(shape) == 4 else 0)
        if shape != (1, side, side, 3):
            want = f"(1, {side}, {side}, 3), the model card's input size" if card else "(1, S, S, 3)"
            raise ModelError(f"{self.model_path}: embedder input must be one {want} tensor, "
                             f"got {[tuple(d['shape']) for d in inputs]}")
        if len(outputs) != 1 or len(outputs[0]["shape"]) != 2:
            raise ModelError(f"{self.model_path}: embedder output must be one (1, D) tensor")
        self._in = inputs[0]
        self._out = outputs[0]
        self.dim = int(self._out["shape"][1])
        if card and self.dim != card.embedding_dim:
            raise ModelError(f"{self.model_path}: embedder gives {self.dim}-d embeddings, the model card says "
                             f"{card.embedding_dim}")
        self.input_size = (side, side)  # (h, w) of the chips it takes
        self.mirror = wants_mirror(card, mirror)
        self.name = (f"tflite:{self.model_path.name}:{np.dtype(self._in['dtype']).name}"
                     + ("+mirror" if self.mirror else ""))

    def embed(self, chips: np.ndarray) -> np.ndarray:
        chips = check_chips(chips, self.input_size)
        return mirror_averaged(self._run, chips) if self.mirror else l2_normalize(self._run(chips))

    def embed_once(self, chips: np.ndarray) -> np.ndarray:
        """The chips' unit embeddings from one run of the model, without the mirror image: `embed` when the
        card does not mirror-average, its first half when it does (see `complete`)."""
        return l2_normalize(self._run(check_chips(chips, self.input_size)))

    def complete(self, chips: np.ndarray, once: np.ndarray) -> np.ndarray:
        """`embed(chips)` given `once = embed_once(chips)`: the mirror run and the average when the card
        mirror-averages, `once` itself when it does not."""
        return mirror_completed(self._run, check_chips(chips, self.input_size), once) if self.mirror else once

    def _run(self, chips: np.ndarray) -> np.ndarray:
        """The model's raw (N, D) outputs, one invoke per chip."""
        out = np.empty((len(chips), self.dim), dtype=np.float32)
        for i, chip in enumerate(chips):
            (y,) = self.interpreter.run([quantize_input(self._in, chip[None])])
            out[i] = dequantize_output(self._out, y)[0]
        return out
