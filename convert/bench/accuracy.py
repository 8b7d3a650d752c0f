"""Section 1, accuracy: ROC curves on the data set's pairs for the peer (face_recognition's pipeline), our
float Keras port, the pruned float model, int8 once and mirror-averaged (and the Edge TPU model when a
bundle has one and a TPU is attached). Embeddings are cached in the work folder, keyed by the model file,
the row and the pair images."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from convert.bench.conversions import Conversion
from convert.bench.data import PEER, BenchOptions, DataSet, pair_list
from convert.bench.peer import dlib_available, run_peer, score_pairs
from convert.bench.util import bar, say
from convert.datasets import Pair


def _file_key(*paths: Path, extra: str = "") -> str:
    h = hashlib.sha256(extra.encode())
    for p in paths:
        st = p.stat()
        h.update(f"{p.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _cached_embeddings(cache: Path, compute) -> np.ndarray:
    if cache.is_file():
        with np.load(cache) as z:
            return z["e"]
    e = compute()
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache.with_suffix(".tmp.npz"), e=e)
    os.replace(cache.with_suffix(".tmp.npz"), cache)
    return e


def _embed_all(embedder, chips: np.ndarray, desc: str, progress: bool) -> np.ndarray:
    step = 32
    parts = [embedder.embed(chips[i:i + step]) for i in bar(range(0, len(chips), step), desc, progress)]
    return np.concatenate(parts).astype(np.float32)


def run_peer_embeddings(root: Path, files: tuple[str, ...], cache: Path) -> tuple[np.ndarray, np.ndarray]:
    """face_recognition's pipeline on every pair image (convert.bench.peer.run_peer), cached."""
    if cache.is_file():
        with np.load(cache) as z:
            return z["e"], z["found"]
    emb, _ = run_peer(root, list(files))
    found = np.array([f in emb for f in files])
    e = np.stack([emb.get(f, np.zeros(128, np.float32)) for f in files]).astype(np.float32)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, e=e, found=found)
    return e, found


def _pair_chips(opts: BenchOptions, conv: Conversion, pairs, root: Path) -> tuple[np.ndarray, np.ndarray]:
    """(chips, found): one 150x150 chip per pair image (zeros where no face was found)."""
    from convert.datasets import build_chipset
    from edge.models.bundle import load_bundle
    from edge.vision.build import bundle_stages

    # The bundle's own detection, subject rule and alignment; the same chip cache as `facelock convert`
    # (same files, same aligner): no re-detection.
    faces = bundle_stages(load_bundle(conv.bundle), num_threads=max(opts.threads)).pipeline()
    test = build_chipset(root, [root / f for f in pairs.files], faces, cache_dir=conv.workdir / "cache",
                         progress=opts.progress)
    chip_of = {f: i for i, f in enumerate(test.files)}
    found = np.array([f in chip_of for f in pairs.files])
    chips = np.zeros((len(pairs.files), 150, 150, 3), np.uint8)
    for i, f in enumerate(pairs.files):
        if f in chip_of:
            chips[i] = test.chips[chip_of[f]]
    return chips, found


def _our_models(opts: BenchOptions, conv: Conversion, notes: list[str]) -> dict[str, tuple[Path, callable]]:
    """name -> (model file, factory) of every facelock model to score; notes why the Edge TPU is missing."""
    from convert.keras_embedder import KerasEmbedder
    from edge.errors import ModelError
    from edge.vision.embed import TFLiteEmbedder

    keras_model = conv.source_model()
    models: dict[str, tuple[Path, callable]] = {
        "float (Keras)": (keras_model, lambda: KerasEmbedder(keras_model)),
    }
    pct = f"{conv.sparsity:.0%}"
    if (conv.workdir / "pruned.keras").is_file() and conv.sparsity > 0:
        models[f"pruned float ({pct})"] = (conv.workdir / "pruned.keras",
                                           lambda: KerasEmbedder(conv.workdir / "pruned.keras"))
    int8_path = conv.bundle / "embedder.tflite"
    models[f"int8 ({pct})"] = (int8_path, lambda: TFLiteEmbedder(int8_path, num_threads=max(opts.threads)))
    # what the lock computes when the bundle's card asks for mirror averaging: the int8 row's gain from it
    models[f"int8 ({pct}), mirror-averaged"] = (int8_path, lambda: TFLiteEmbedder(
        int8_path, num_threads=max(opts.threads), mirror=True))
    tpu_path = conv.bundle / "embedder_edgetpu.tflite"
    if tpu_path.is_file():
        try:
            TFLiteEmbedder(tpu_path, num_threads=1, edgetpu=True, require_delegate=True)
            models[f"Edge TPU ({pct})"] = (tpu_path, lambda: TFLiteEmbedder(tpu_path, edgetpu=True,
                                                                             require_delegate=True))
        except ModelError as exc:  # no Coral attached: the compiled model cannot run on a CPU
            notes.append(f"the bundle has an Edge TPU model, but no Edge TPU is attached here ({exc})")
    else:
        notes.append("no Edge TPU model: the bundle has none (edgetpu_compiler is not installed on this "
                     "machine); the Edge TPU runs the same int8 arithmetic as the int8 row")
    return models


def _peer_scores(pairs, root: Path, cache: Path) -> tuple[np.ndarray, np.ndarray]:
    """(scores, found) of the peer on the pairs: its own score, -Euclidean distance."""
    say(f"peer: face_recognition's pipeline on {len(pairs.files)} images")
    e, found = run_peer_embeddings(root, pairs.files, cache)
    plist = [Pair(0, pairs.files[a], pairs.files[b], bool(s)) for a, b, s in zip(pairs.a, pairs.b, pairs.same)]
    emb = {f: e[i] for i, f in enumerate(pairs.files) if found[i]}
    return score_pairs(plist, emb, "euclidean"), found


def accuracy(opts: BenchOptions, ds: DataSet, conv: Conversion, img: Path) -> dict:
    from convert.compress import validate

    pairs = pair_list(ds)
    root = ds.pairs.parent
    chips, found = _pair_chips(opts, conv, pairs, root)
    cache = opts.work / opts.mode / "embeddings"
    files_key = hashlib.sha256("\n".join(pairs.files).encode()).hexdigest()[:8]
    notes: list[str] = []
    models = _our_models(opts, conv, notes)

    rows: dict[str, dict] = {}
    curves = {}
    if not opts.peer:
        notes.append("peer skipped (--no-peer)")
    elif not dlib_available():
        notes.append("peer skipped: `dlib` is not importable (install the `dev` extra: dlib-bin, "
                     "face_recognition_models)")
    else:
        scores, pfound = _peer_scores(pairs, root, cache / f"peer-{files_key}.npz")
        rows[PEER], curves[PEER] = validate.verification(scores, pairs.same)
        rows[PEER]["faces_not_found"] = int((~pfound).sum())

    for name, (path, make) in models.items():
        key = _file_key(path, extra=files_key + name)  # one model file, two rows: int8 once and mirror-averaged
        e = _cached_embeddings(cache / f"{name.split()[0]}-{key}.npz",
                               lambda make=make, name=name: _embed_all(make(), chips, name, opts.progress))
        scores = validate.pair_scores(e, found, pairs)
        rows[name], curves[name] = validate.verification(scores, pairs.same)
        rows[name]["faces_not_found"] = int((~found).sum())
    title = f"ROC, {ds.name}" if ds.folds else "ROC, demo faces (quick mode)"
    plot = validate.plot_rocs(curves, img / "roc.png", title)
    return {"rows": rows, "pairs": len(pairs.same), "impostors": int((~pairs.same).sum()),
            "images": len(pairs.files), "notes": notes, "plot": plot.name}
