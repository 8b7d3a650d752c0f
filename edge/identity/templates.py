"""Face templates in memory: the checks every stored or imported embedding passes, and the snapshot the
matcher works on (all templates of a gallery as matrices)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.errors import GalleryError

POSITIVE, NEGATIVE = "positive", "negative"  # a person's own templates; look-alikes who must not open as them


def check_embeddings(embeddings: object, what: str, dim: int | None = None) -> np.ndarray:
    """(N, D) float32 unit rows from a (D,) or (N, D) array-like of finite, non-zero numbers."""
    try:
        arr = np.asarray(embeddings, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise GalleryError(f"{what}: expected numbers, got {type(embeddings).__name__} ({exc})") from exc
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise GalleryError(f"{what}: expected (N, D) embeddings with N, D >= 1, got shape {arr.shape}")
    if dim is not None and arr.shape[1] != dim:
        raise GalleryError(f"{what}: embeddings have {arr.shape[1]} dimensions, the gallery holds {dim}-d ones "
                           "(made by another model?)")
    if not np.all(np.isfinite(arr)):
        raise GalleryError(f"{what}: embeddings contain NaN or infinity")
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    if np.any(norms < 1e-6):
        raise GalleryError(f"{what}: an embedding is all zeros")
    return (arr / norms).astype(np.float32)


@dataclass(frozen=True, eq=False)
class GallerySnapshot:
    """All templates as matrices, for the matcher. Rows of `templates` are grouped by person: person i owns
    rows template_offsets[i]:template_offsets[i+1] (every person has at least one). `negatives` rows belong
    to people negative_owner[j] (indices into `names`)."""

    names: tuple[str, ...]
    templates: np.ndarray  # (M, D) float32, unit rows
    template_offsets: np.ndarray  # (P + 1,) int64
    negatives: np.ndarray  # (K, D) float32, unit rows
    negative_owner: np.ndarray  # (K,) int64
    revision: int
    dim: int
    ignored: tuple[str, ...] = ()  # people with templates from another embedding space (left out)
    ignored_templates: int = 0
