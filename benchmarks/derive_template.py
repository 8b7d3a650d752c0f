"""Measure where our face points land in dlib's reference face chips, and write the alignment template.

    .venv/bin/python benchmarks/derive_template.py [--points landmarks|keypoints] [--lfw DIR] [--images 1500]
                                                   [--holdout 300] [--out PATH]

dlib's ResNet was trained on chips cut from its 5-point landmarks (`get_face_chip_details(shape, 150,
0.25)`). Our pipeline has other points: by default (`--points landmarks`, the packaged template) the
face-landmark model's eye centres, nose tip and mouth corners, measured on a crop around the full-range
BlazeFace detection; with `--points keypoints`, BlazeFace short-range's six keypoints (the template of
bundles made before the landmark model). For each LFW image of a *train* person, dlib's reference pipeline
(HOG detector with 1 upsample, 5-point shape predictor) gives the image -> chip transform; our points of the
same face are mapped through it into chip coordinates. The robust mean of each point is the template. The
fit weights are chosen by what matters downstream: on held-out train images (not used for the means), the
candidate that makes dlib's own descriptor of our chip agree best with its descriptor of dlib's chip wins.

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
from edge.models.store import (
    DETECTOR,
    DETECTOR_FULL_RANGE,
    DLIB_RESNET,
    DLIB_SHAPE5,
    LANDMARKS,
    model_path,
    spec,
)
from edge.vision.align import KEYPOINT_TEMPLATE_FILE as LEGACY_TEMPLATE
from edge.vision.align import POINT_SETS, TEMPLATE_FILE, TEMPLATE_SCHEMA, AlignTemplate, FaceAligner
from edge.vision.build import detector as load_detector
from edge.vision.build import landmarker as load_landmarker

CHIP = 150
PADDING = 0.25
# Candidate weights for the fit, per point set. Keypoints: eyes, nose tip, mouth centre, ear tragions.
KEYPOINT_CANDIDATES = {
    "all_six": [1, 1, 1, 1, 1, 1],
    "eyes_nose_mouth": [1, 1, 1, 1, 0, 0],
    "ears_at_quarter": [1, 1, 1, 1, 0.25, 0.25],
    # The nose tip moves with pitch and yaw more than the eyes (see the spread printed per keypoint).
    "eyes_mouth": [1, 1, 0, 1, 0, 0],
    "eyes_weighted_double": [2, 2, 1, 1, 0, 0],
}
# Landmarks: eye centres, nose tip, mouth corners.
LANDMARK_CANDIDATES = {
    "all_five": [1, 1, 1, 1, 1],
    "eyes_mouth": [1, 1, 0, 1, 1],
    "eyes_double": [2, 2, 1, 1, 1],
    "eyes_triple": [3, 3, 1, 1, 1],
    "eyes_double_no_nose": [2, 2, 0, 1, 1],
    "nose_half": [1, 1, 0.5, 1, 1],
    "eyes_nose": [1, 1, 1, 0, 0],
}
CANDIDATES = {"keypoints": KEYPOINT_CANDIDATES, "landmarks": LANDMARK_CANDIDATES}


class OurPoints:
    """Our points of a photo's faces: BlazeFace short-range keypoints, or the landmark model's points on the
    detections the lock's own subject search confirms (`FacePipeline.subject`: short range tried first,
    full range for the faces it misses)."""

    def __init__(self, point_set: str):
        from edge.vision.pipeline import FacePipeline

        self.point_set = point_set
        near = load_detector(model_path(DETECTOR), num_threads=1)
        if point_set == "landmarks":
            self.landmarker = load_landmarker(num_threads=1)
            far = load_detector(model_path(DETECTOR_FULL_RANGE), num_threads=1)
            self.pipeline = FacePipeline(far, None, None, landmarker=self.landmarker, near_detector=near)
            self.sha256 = {"detector": spec(DETECTOR_FULL_RANGE).sha256, "near_detector": spec(DETECTOR).sha256,
                           "landmarks": spec(LANDMARKS).sha256}
        else:
            self.landmarker = None
            self.pipeline = FacePipeline(near, None, None)
            self.sha256 = {"detector": spec(DETECTOR).sha256}

    def faces(self, rgb: np.ndarray) -> list:
        return list(self.pipeline.subject(rgb).faces)

    def points(self, face) -> np.ndarray:
        return np.asarray(face.landmarks if self.point_set == "landmarks" else face.keypoints, dtype=np.float64)


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
    ap.add_argument("--points", choices=sorted(POINT_SETS), default="landmarks",
                    help="landmarks: the landmark model's 5 points (default); keypoints: BlazeFace's 6")
    ap.add_argument("--lfw", default=None, help="LFW folder (default ../shared/data/lfw)")
    ap.add_argument("--images", type=int, default=1500, help="train images for the point means")
    ap.add_argument("--holdout", type=int, default=300, help="further train images to choose the weights")
    ap.add_argument("--out", type=Path, default=None,
                    help=f"default {TEMPLATE_FILE.name} (landmarks) or {LEGACY_TEMPLATE.name} (keypoints)")
    args = ap.parse_args()
    out = args.out or (TEMPLATE_FILE if args.points == "landmarks" else LEGACY_TEMPLATE)
    candidates = CANDIDATES[args.points]
    names = POINT_SETS[args.points]

    lfw = lfw_dir(args.lfw)
    files = sample_images(lfw, "train", args.images + args.holdout, seed=0)
    derive_files, holdout_files = files[: args.images], files[args.images:]
    ref = DlibReference()
    ours = OurPoints(args.points)
    start = time.monotonic()

    pts, n_dlib, n_ours = [], 0, 0
    for rel in derive_files:
        rgb = read_image_rgb(lfw / rel)
        rect, shape = ref.largest_shape(rgb)
        faces = ours.faces(rgb)
        n_dlib += rect is not None
        n_ours += bool(faces)
        face = match_face(faces, rect) if rect is not None else None
        if face is None:
            continue
        pts.append(transform(ref.chip_matrix(shape), ours.points(face)))
    pts = np.stack(pts)
    means, kept, spread = [], [], []
    for k in range(pts.shape[1]):
        m, n, s = robust_mean(pts[:, k])
        means.append(m)
        kept.append(n)
        spread.append(s)
    means = np.stack(means)
    print(f"derive: {len(derive_files)} LFW train images; dlib found {n_dlib}, ours {n_ours}, "
          f"both (same face) {len(pts)}")
    print("point               x (px)   y (px)   kept  rms spread (px)")
    for name, m, n, s in zip(names, means, kept, spread):
        print(f"{name:<18} {m[0]:8.2f} {m[1]:8.2f} {n:6d} {s:8.2f}")

    # Choose the weights on held-out train images by descriptor agreement with dlib's own chips.
    scores: dict[str, list[float]] = {k: [] for k in candidates}
    dists: dict[str, list[float]] = {k: [] for k in candidates}
    aligners = {k: FaceAligner(template=AlignTemplate(means, np.array(w, dtype=np.float64)),
                               landmarker=ours.landmarker) for k, w in candidates.items()}
    n_hold = 0
    for rel in holdout_files:
        rgb = read_image_rgb(lfw / rel)
        rect, shape = ref.largest_shape(rgb)
        if rect is None:
            continue
        face = match_face(ours.faces(rgb), rect)
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
    for k in candidates:
        c = np.array(scores[k])
        print(f"{k:<18} {np.median(c):10.4f} {np.percentile(c, 1):8.4f} {c.mean():9.4f} "
              f"{np.median(dists[k]):10.4f}")
    best = max(candidates, key=lambda k: float(np.mean(scores[k])))
    print(f"chosen: {best} (highest mean cosine similarity)")

    template = AlignTemplate(means, np.array(candidates[best], dtype=np.float64))
    data = {
        "schema": TEMPLATE_SCHEMA,
        "chip_size": CHIP,
        "keypoints": list(names),
        "points": template.to_dict()["points"],
        "weights": [float(w) for w in candidates[best]],
        "weights_name": best,
        "reference": f"dlib get_face_chip_details(shape_predictor_5, size={CHIP}, padding={PADDING}), "
                     "HOG detector with 1 upsample",
        "coordinates": "chip pixels, pixel centres on integers",
        "provenance": {
            "script": f"benchmarks/derive_template.py --points {args.points}",
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "data": "LFW (150x150 copy), train people only",
            "faces": len(pts),
            "images": len(derive_files),
            "kept_per_keypoint": kept,
            "rms_spread_px": [round(s, 3) for s in spread],
            "holdout_faces": n_hold,
            "holdout_mean_cosine": {k: round(float(np.mean(v)), 5) for k, v in scores.items()},
            **{f"{k}_sha256": v for k, v in ours.sha256.items()},
        },
    }
    tmp = out.with_suffix(".tmp")
    text = json.dumps(data, indent=2)
    # One line per short list of numbers: the file is read by people reviewing a template change.
    text = re.sub(r"\[\s+([-0-9.e,\s]+?)\s+\]", lambda m: "[" + re.sub(r",\s+", ", ", m.group(1)) + "]", text)
    tmp.write_text(text + "\n", encoding="utf-8")
    os.replace(tmp, out)
    print(f"wrote {out} in {time.monotonic() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
