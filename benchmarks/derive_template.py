"""Measure where BlazeFace's keypoints land in dlib's reference face chips, and write the alignment template.

    .venv/bin/python benchmarks/derive_template.py [--lfw DIR] [--images 1500] [--holdout 300] [--out PATH]

dlib's ResNet was trained on chips cut from its 5-point landmarks (`get_face_chip_details(shape, 150,
0.25)`). Our pipeline has BlazeFace's 6 keypoints instead. For each LFW image of a *train* person, dlib's
reference pipeline (HOG detector with 1 upsample, 5-point shape predictor) gives the image -> chip
transform; BlazeFace's keypoints of the same face are mapped through it into chip coordinates. The robust
mean of each keypoint is the template. Because the ear tragions move with head yaw, the fit weights are
chosen by what matters downstream: on held-out train images (not used for the means), the candidate that
makes dlib's own descriptor of our chip agree best with its descriptor of dlib's chip wins.

Only train people are used (data/INDEX.md): the template is part of the model and is tuned, so it must
not see the test people that benchmarks report on.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import re
import time
from pathlib import Path

import numpy as np
from common import lfw_dir

from edge.images import read_image_rgb
from edge.models.store import DETECTOR, DLIB_RESNET, DLIB_SHAPE5, model_path, spec
from edge.vision.align import KEYPOINT_NAMES, TEMPLATE_FILE, TEMPLATE_SCHEMA, AlignTemplate, FaceAligner
from edge.vision.build import detector as load_detector

CHIP = 150
PADDING = 0.25
# Candidate weights for the fit, Keypoint order: eyes, nose tip, mouth centre, ear tragions.
CANDIDATES = {
    "all_six": [1, 1, 1, 1, 1, 1],
    "eyes_nose_mouth": [1, 1, 1, 1, 0, 0],
    "ears_at_quarter": [1, 1, 1, 1, 0.25, 0.25],
    # The nose tip moves with pitch and yaw more than the eyes (see the spread printed per keypoint).
    "eyes_mouth": [1, 1, 0, 1, 0, 0],
    "eyes_weighted_double": [2, 2, 1, 1, 0, 0],
}


def sample_images(lfw: Path, split: str, n: int, seed: int = 0) -> list[str]:
    """`n` images of `split` people, round-robin over people in a seeded order so that the few people
    with hundreds of photos do not dominate. Paths relative to `lfw`."""
    with open(lfw / "split.csv", newline="") as fh:
        people = sorted(r["name"] for r in csv.DictReader(fh) if r["split"] == split)
    rng = np.random.default_rng(seed)
    queues = []
    for person in rng.permutation(people):
        files = sorted(p.name for p in (lfw / person).glob("*.jpg"))
        queues.append([f"{person}/{f}" for f in rng.permutation(files)])
    out: list[str] = []
    while len(out) < n and any(queues):
        for q in queues:
            if q and len(out) < n:
                out.append(q.pop())
    return out


class DlibReference:
    """dlib's own pipeline, as face_recognition runs it: HOG detector (1 upsample) -> 5 landmarks -> chip."""

    def __init__(self):
        import dlib

        self.dlib = dlib
        self.detector = dlib.get_frontal_face_detector()
        self.shape_predictor = dlib.shape_predictor(str(model_path(DLIB_SHAPE5)))
        self.net = dlib.face_recognition_model_v1(str(model_path(DLIB_RESNET)))

    def largest_shape(self, rgb: np.ndarray):
        dets = self.detector(rgb, 1)
        if not dets:
            return None, None
        rect = max(dets, key=lambda r: r.width() * r.height())
        return rect, self.shape_predictor(rgb, rect)

    def chip_matrix(self, shape) -> np.ndarray:
        """Image -> chip (2, 3) for dlib's chip of `shape`: the chip's corners map to the rotated corners
        of `chip_details.rect` (dlib_format.md 6.3 step 5), so invert that map."""
        d = self.dlib.get_face_chip_details(shape, CHIP, PADDING)
        r = d.rect
        l, t, rt, b = r.left(), r.top(), r.right(), r.bottom()
        c = np.array([(l + rt) / 2, (t + b) / 2])
        rot = np.array([[np.cos(d.angle), -np.sin(d.angle)], [np.sin(d.angle), np.cos(d.angle)]])
        a = rot @ np.diag([(rt - l) / (d.cols - 1), (b - t) / (d.rows - 1)])
        off = rot @ (np.array([l, t]) - c) + c
        inv = np.linalg.inv(a)
        return np.hstack([inv, (-inv @ off)[:, None]])

    def chip(self, rgb: np.ndarray, shape) -> np.ndarray:
        return np.asarray(self.dlib.get_face_chip(rgb, shape, CHIP, PADDING))

    def descriptor(self, chip: np.ndarray) -> np.ndarray:
        return np.asarray(self.net.compute_face_descriptor(np.ascontiguousarray(chip)), dtype=np.float64)


def match_face(faces, rect):
    """Our detection of the face dlib found: the one whose box centre is nearest dlib's box centre, if it
    lies inside dlib's box."""
    cx, cy = (rect.left() + rect.right()) / 2, (rect.top() + rect.bottom()) / 2
    best = None
    for f in faces:
        fx, fy = f.center
        if rect.left() <= fx <= rect.right() and rect.top() <= fy <= rect.bottom():
            d = (fx - cx) ** 2 + (fy - cy) ** 2
            if best is None or d < best[0]:
                best = (d, f)
    return None if best is None else best[1]


def transform(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ m[:, :2].T + m[:, 2]


def robust_mean(pts: np.ndarray) -> tuple[np.ndarray, int, float]:
    """Mean after dropping points farther than 3x the median distance from the coordinate-wise median
    (a BlazeFace miss on one landmark, or a dlib landmark failure, must not drag the template)."""
    med = np.median(pts, axis=0)
    dist = np.linalg.norm(pts - med, axis=1)
    keep = dist <= 3 * max(np.median(dist), 1e-6)
    mean = pts[keep].mean(axis=0)
    rms = float(np.sqrt(((pts[keep] - mean) ** 2).sum(1).mean()))
    return mean, int(keep.sum()), rms


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lfw", default=None, help="LFW folder (default ../shared/data/lfw)")
    ap.add_argument("--images", type=int, default=1500, help="train images for the keypoint means")
    ap.add_argument("--holdout", type=int, default=300, help="further train images to choose the weights")
    ap.add_argument("--out", type=Path, default=TEMPLATE_FILE)
    args = ap.parse_args()

    lfw = lfw_dir(args.lfw)
    files = sample_images(lfw, "train", args.images + args.holdout, seed=0)
    derive_files, holdout_files = files[: args.images], files[args.images:]
    ref = DlibReference()
    detector = load_detector(num_threads=1)
    start = time.monotonic()

    pts, n_dlib, n_ours = [], 0, 0
    for rel in derive_files:
        rgb = read_image_rgb(lfw / rel)
        rect, shape = ref.largest_shape(rgb)
        faces = detector.detect(rgb)
        n_dlib += rect is not None
        n_ours += bool(faces)
        face = match_face(faces, rect) if rect is not None else None
        if face is None:
            continue
        pts.append(transform(ref.chip_matrix(shape), face.keypoints.astype(np.float64)))
    pts = np.stack(pts)
    means, kept, spread = [], [], []
    for k in range(pts.shape[1]):
        m, n, s = robust_mean(pts[:, k])
        means.append(m)
        kept.append(n)
        spread.append(s)
    means = np.stack(means)
    print(f"derive: {len(derive_files)} LFW train images; dlib found {n_dlib}, BlazeFace {n_ours}, "
          f"both (same face) {len(pts)}")
    print("keypoint            x (px)   y (px)   kept  rms spread (px)")
    for name, m, n, s in zip(KEYPOINT_NAMES, means, kept, spread):
        print(f"{name:<18} {m[0]:8.2f} {m[1]:8.2f} {n:6d} {s:8.2f}")

    # Choose the weights on held-out train images by descriptor agreement with dlib's own chips.
    scores: dict[str, list[float]] = {k: [] for k in CANDIDATES}
    dists: dict[str, list[float]] = {k: [] for k in CANDIDATES}
    aligners = {k: FaceAligner(template=AlignTemplate(means, np.array(w, dtype=np.float64)))
                for k, w in CANDIDATES.items()}
    n_hold = 0
    for rel in holdout_files:
        rgb = read_image_rgb(lfw / rel)
        rect, shape = ref.largest_shape(rgb)
        if rect is None:
            continue
        face = match_face(detector.detect(rgb), rect)
        if face is None:
            continue
        n_hold += 1
        d_ref = ref.descriptor(ref.chip(rgb, shape))
        for k, aligner in aligners.items():
            d = ref.descriptor(aligner.align(rgb, face).chip)
            scores[k].append(cosine(d_ref, d))
            dists[k].append(float(np.linalg.norm(d_ref - d)))
    print(f"choose: {len(holdout_files)} held-out train images, {n_hold} with both detections")
    print("weights             cos median  cos p1   cos mean  euclid median")
    for k in CANDIDATES:
        c = np.array(scores[k])
        print(f"{k:<18} {np.median(c):10.4f} {np.percentile(c, 1):8.4f} {c.mean():9.4f} "
              f"{np.median(dists[k]):10.4f}")
    best = max(CANDIDATES, key=lambda k: float(np.mean(scores[k])))
    print(f"chosen: {best} (highest mean cosine similarity)")

    template = AlignTemplate(means, np.array(CANDIDATES[best], dtype=np.float64))
    data = {
        "schema": TEMPLATE_SCHEMA,
        "chip_size": CHIP,
        "keypoints": list(KEYPOINT_NAMES),
        "points": template.to_dict()["points"],
        "weights": [float(w) for w in CANDIDATES[best]],
        "weights_name": best,
        "reference": f"dlib get_face_chip_details(shape_predictor_5, size={CHIP}, padding={PADDING}), "
                     "HOG detector with 1 upsample",
        "coordinates": "chip pixels, pixel centres on integers",
        "provenance": {
            "script": "benchmarks/derive_template.py",
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "data": "LFW (150x150 copy), train people only",
            "faces": len(pts),
            "images": len(derive_files),
            "kept_per_keypoint": kept,
            "rms_spread_px": [round(s, 3) for s in spread],
            "holdout_faces": n_hold,
            "holdout_mean_cosine": {k: round(float(np.mean(v)), 5) for k, v in scores.items()},
            "detector_sha256": spec(DETECTOR).sha256,
        },
    }
    tmp = args.out.with_suffix(".tmp")
    text = json.dumps(data, indent=2)
    # One line per short list of numbers: the file is read by people reviewing a template change.
    text = re.sub(r"\[\s+([-0-9.e,\s]+?)\s+\]", lambda m: "[" + re.sub(r",\s+", ", ", m.group(1)) + "]", text)
    tmp.write_text(text + "\n", encoding="utf-8")
    os.replace(tmp, args.out)
    print(f"wrote {args.out} in {time.monotonic() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
