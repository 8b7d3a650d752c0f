"""The Keras model behind edge's `Embedder` interface, so the workstation runs the same pipeline code."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from convert.dlib_port import load_keras_model
from edge.vision.embed import check_chips, l2_normalize, mirror_averaged, mirror_completed, wants_mirror


def embedding_space(model) -> str:
    """`space:<model name>@<12 hex of sha256 over its weights>`: the id of the space a float model embeds
    into. Bundles made from it by `facelock convert` carry the same id (pruning and int8 are distilled and
    calibrated to stay in it), so templates enrolled with any of them match with the others."""
    import hashlib

    from edge.types import SPACE_PREFIX

    digest = hashlib.sha256()
    for w in model.get_weights():
        digest.update(np.ascontiguousarray(w, dtype=np.float32).tobytes())
    return f"{SPACE_PREFIX}{model.name}@{digest.hexdigest()[:12]}"


class KerasEmbedder:
    """Float Keras embedder on RGB pixels in [0, 255]. The dlib port normalises inside; for another model
    give its `card` (edge.models.card) and the channel order and normalisation it wants are put in front
    (convert.model_card.pixel_model), as `facelock convert` does."""

    def __init__(self, model_path: str | os.PathLike, batch_size: int = 32, card=None, mirror: bool | None = None):
        import tensorflow as tf

        self.model_path = Path(model_path)
        self.model = load_keras_model(self.model_path)
        if card is not None:
            from convert.model_card import pixel_model

            self.model = pixel_model(self.model, card)
        h, w = self.model.input_shape[1:3]
        self.input_size = (h, w) if h and w else None  # (h, w) of the chips it takes; None: any
        self.batch_size = batch_size
        # mirror-averaged embeddings when the card says so (`mirror` overrides): edge.vision.embed.mirror_averaged
        self.mirror = wants_mirror(card, mirror)
        self.name = f"keras:{self.model_path.name}" + ("+mirror" if self.mirror else "")
        self.space = embedding_space(self.model)
        # One traced graph: calling the model eagerly per chip costs more than the network itself.
        self._forward = tf.function(lambda x: self.model(x, training=False), reduce_retracing=True)

    def raw(self, chips: np.ndarray) -> np.ndarray:
        """Un-normalised outputs (dlib's descriptor for the dlib port)."""
        chips = check_chips(chips, self.input_size)
        outs = [
            self._forward(chips[i:i + self.batch_size].astype(np.float32)).numpy()
            for i in range(0, len(chips), self.batch_size)
        ]
        return np.concatenate(outs).astype(np.float32)

    def embed(self, chips: np.ndarray) -> np.ndarray:
        return mirror_averaged(self.raw, chips) if self.mirror else l2_normalize(self.raw(chips))

    def embed_once(self, chips: np.ndarray) -> np.ndarray:
        """One run, no mirror image (edge.vision.embed.TFLiteEmbedder.embed_once)."""
        return l2_normalize(self.raw(chips))

    def complete(self, chips: np.ndarray, once: np.ndarray) -> np.ndarray:
        """`embed(chips)` given `embed_once(chips)` (edge.vision.embed.TFLiteEmbedder.complete)."""
        return mirror_completed(self.raw, check_chips(chips, self.input_size), once) if self.mirror else once


def _register() -> None:
    from edge.vision.build import register_embedder_loader

    register_embedder_loader((".keras", ".h5"), KerasEmbedder)


_register()  # importing this module (the workstation does, through facelock.cli) teaches edge `.keras`
