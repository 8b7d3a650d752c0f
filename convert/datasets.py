"""Face photo folders -> aligned chips, with `edge`'s own detector and aligner, so that what is calibrated and
validated is exactly what runs on the board.

Any layout works: every image under the root counts, and the folder that holds it names the person. When
the root has an LFW-style `split.csv`, `split=` keeps only that split's people (calibration, fine-tuning
and threshold choice use `train` people only).

LFW (../shared/data/INDEX.md) is found at `DEFAULT_LFW`: $FACELOCK_LFW, else `../shared/data/lfw` beside the
checkout; `read_pairs` and `people_of_split` read its pair list and its train/test split.
"""

from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from convert.errors import DataError
from edge.errors import ImageError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
# LFW for calibration and benchmarks: $FACELOCK_LFW, else ../shared/data/lfw beside the checkout.
DEFAULT_LFW = Path(os.environ.get("FACELOCK_LFW", Path(__file__).resolve().parents[1].parent / "shared" / "data"
                                  / "lfw"))


@dataclass(frozen=True)
class Pair:
    """One labelled pair of LFW's `pairs_view2.csv` (paths relative to the LFW folder)."""

    fold: int
    a: str
    b: str
    same: bool


def read_pairs(lfw: Path, folds: range = range(6, 11)) -> list[Pair]:
    """The pairs of `folds` in `lfw/pairs_view2.csv` (default 6-10: all `test` people)."""
    with open(lfw / "pairs_view2.csv", newline="") as fh:
        rows = [Pair(int(r["fold"]), r["file_a"], r["file_b"], r["same"] == "1") for r in csv.DictReader(fh)]
    return [p for p in rows if p.fold in folds]


def people_of_split(lfw: Path, split: str) -> list[str]:
    """The people of `split` ("train" or "test") in `lfw/split.csv`, sorted."""
    with open(lfw / "split.csv", newline="") as fh:
        return sorted(r["name"] for r in csv.DictReader(fh) if r["split"] == split)


@dataclass(frozen=True)
class ChipSet:
    chips: np.ndarray  # (N, 150, 150, 3) uint8 RGB
    labels: np.ndarray  # (N,) int32 index into `people`
    people: tuple[str, ...]
    files: tuple[str, ...]  # relative to the root

    def __len__(self) -> int:
        return len(self.chips)

    def subset(self, index: np.ndarray) -> ChipSet:
        return ChipSet(self.chips[index], self.labels[index], self.people,
                       tuple(self.files[i] for i in np.asarray(index)))


def list_images(root: str | os.PathLike, split: str | None = None) -> list[Path]:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder of face photos")
    keep: set[str] | None = None
    if split is not None and (root / "split.csv").is_file():
        with open(root / "split.csv", newline="") as fh:
            keep = {r["name"] for r in csv.DictReader(fh) if r["split"] == split}
    files = sorted(
        p for p in root.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and (keep is None or p.parent.name in keep)
    )
    return files


def spread_by_person(files: list[Path], limit: int | None, seed: int = 0) -> list[Path]:
    """Up to `limit` files, taken round-robin over people so that a few people with hundreds of photos
    (LFW's George W. Bush) do not fill the calibration set."""
    if limit is None or limit >= len(files):
        return files
    rng = np.random.default_rng(seed)
    by_person: dict[str, list[Path]] = {}
    for f in files:
        by_person.setdefault(f.parent.name, []).append(f)
    queues = [list(rng.permutation(v)) for _, v in sorted(by_person.items())]
    rng.shuffle(queues)
    out: list[Path] = []
    while len(out) < limit and queues:
        queues = [q for q in queues if q]
        for q in queues:
            if len(out) >= limit:
                break
            out.append(q.pop())
    return sorted(out)


# Bump when the rule for which face of a photo is cut changes (chip caches are keyed by it). 2: the
# short-range model alone only for faces from 130 px (DetectorOptions.near_min_face_px).
SUBJECT_RULE = "pipeline-subject/2"


def build_chipset(root: str | os.PathLike, files: list[Path], pipeline, min_faces: int = 1,
                  progress: bool = True, cache_dir: str | os.PathLike | None = None) -> ChipSet:
    """Cut each photo's subject with `pipeline` (an edge.vision.pipeline.FacePipeline: the lock's own rule
    for which face a photo is about, `subject`, then its aligner). Not the largest face: LFW photos often
    hold a second person, and the largest box is not always the one named (LFW View 2 folds 6-10, int8
    bundle: AUC 0.9893 with the largest full-range face, 0.9992 with the subject rule). Photos without a
    face are skipped (and counted); fewer than `min_faces` faces is an error naming the folder."""
    from edge.images import read_image_rgb

    root = Path(root)
    aligner = pipeline.aligner
    cache = _cache_path(cache_dir, root, files, aligner)
    if cache is not None and cache.is_file():
        with np.load(cache, allow_pickle=False) as z:
            return ChipSet(z["chips"], z["labels"], tuple(z["people"]), tuple(z["files"]))

    chips, names, rels = [], [], []
    skipped = 0
    iterator = _progress(files, "aligning faces") if progress else files
    for f in iterator:
        try:
            image = read_image_rgb(f)
        except ImageError:
            skipped += 1
            continue
        face = pipeline.subject(image).face
        if face is None:
            skipped += 1
            continue
        chips.append(aligner.align(image, face).chip)
        names.append(f.parent.name)
        rels.append(str(f.relative_to(root)))
    if len(chips) < min_faces:
        raise DataError(
            f"{root}: only {len(chips)} usable faces in {len(files)} photos ({skipped} without a face or "
            f"unreadable); need at least {min_faces}. Point --data at a folder of face photos."
        )
    people = tuple(sorted(set(names)))
    index = {p: i for i, p in enumerate(people)}
    chipset = ChipSet(np.stack(chips), np.array([index[n] for n in names], dtype=np.int32), people, tuple(rels))
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp.npz")
        np.savez(tmp, chips=chipset.chips, labels=chipset.labels, people=np.array(people), files=np.array(rels))
        os.replace(tmp, cache)
    return chipset


def _cache_path(cache_dir, root: Path, files: list[Path], aligner) -> Path | None:
    if cache_dir is None:
        return None
    key = hashlib.sha256()
    key.update(str(root.resolve()).encode())
    for f in files:
        key.update(str(f).encode())
    key.update(repr(getattr(aligner, "cache_key", type(aligner).__name__)).encode())
    key.update(SUBJECT_RULE.encode())
    return Path(cache_dir) / f"chips-{key.hexdigest()[:16]}.npz"


def _progress(items, desc: str):
    from convert.progress import bar

    return bar(items, desc=desc, unit="img", leave=False)


def genuine_impostor_pairs(labels: np.ndarray, max_pairs: int = 200_000, seed: int = 0):
    """Index pairs (i, j) for all genuine pairs (same label, capped) and as many random impostor pairs."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    genuine = []
    for lab in np.unique(labels):
        idx = np.flatnonzero(labels == lab)
        if len(idx) > 1:
            a, b = np.triu_indices(len(idx), 1)
            genuine.append(np.stack([idx[a], idx[b]], 1))
    genuine = np.concatenate(genuine) if genuine else np.zeros((0, 2), dtype=int)
    if len(genuine) > max_pairs // 2:
        genuine = genuine[rng.choice(len(genuine), max_pairs // 2, replace=False)]
    n_imp = max(len(genuine), min(max_pairs // 2, len(labels) * 20))
    i = rng.integers(0, len(labels), n_imp * 2)
    j = rng.integers(0, len(labels), n_imp * 2)
    ok = labels[i] != labels[j]
    impostor = np.stack([i[ok], j[ok]], 1)[:n_imp]
    return genuine, impostor
