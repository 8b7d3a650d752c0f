"""The peer: face_recognition 1.3's pipeline (dlib HOG detector with 1 upsample -> 5 landmarks -> dlib's
ResNet), run through dlib-bin directly, and its own pair score (negative Euclidean distance). Used by the
accuracy section and by benchmarks/lfw_pairs.py."""

from __future__ import annotations

import sys
import time

import numpy as np


def run_peer(lfw, images: list[str]) -> tuple[dict, list[float]]:
    """face_recognition's pipeline, called through dlib-bin directly (the face_recognition package needs a
    source build of dlib): `face_locations(img, 1, "hog")` is dlib's HOG detector with one upsample, and
    `face_encodings(img, [box], 1, "small")` is the 5-point predictor + the ResNet without jitter."""
    import dlib
    from PIL import Image

    from edge.models.store import DLIB_RESNET, DLIB_SHAPE5, model_path

    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(model_path(DLIB_SHAPE5)))
    resnet = dlib.face_recognition_model_v1(str(model_path(DLIB_RESNET)))
    embeddings, ms = {}, []
    for i, name in enumerate(images):
        image = np.asarray(Image.open(lfw / name).convert("RGB"))  # face_recognition decodes with PIL
        start = time.perf_counter()
        boxes = detector(image, 1)
        if len(boxes):
            largest = max(boxes, key=lambda r: r.area())
            enc = resnet.compute_face_descriptor(image, predictor(image, largest), 1)
            ms.append((time.perf_counter() - start) * 1e3)
            embeddings[name] = np.asarray(enc, dtype=np.float32)
        if (i + 1) % 500 == 0:
            print(f"  peer: {i + 1}/{len(images)}", file=sys.stderr, flush=True)
    return embeddings, ms


def score_pairs(pairs, embeddings: dict, kind: str) -> np.ndarray:
    """One score per pair (`.a`, `.b` keys of `embeddings`): cosine, or "euclidean" (-distance, the peer's
    own). A pair with a face that was not found scores -inf (a rejection)."""
    scores = np.full(len(pairs), -np.inf)
    for i, p in enumerate(pairs):
        a, b = embeddings.get(p.a), embeddings.get(p.b)
        if a is None or b is None:
            continue
        scores[i] = float(a @ b) if kind == "cosine" else -float(np.linalg.norm(a - b))
    return scores


def dlib_available() -> bool:
    """Whether the peer can run here (dlib is a benchmark-only dependency: the `dev` extra)."""
    try:
        import dlib  # noqa: F401
    except ImportError:
        return False
    return True
