"""Do our chips give dlib's ResNet what its own chips give it? Measured on LFW test people.

    .venv/bin/python benchmarks/chip_agreement.py [--lfw DIR] [--images 500] [--template PATH]

For each image: dlib's reference pipeline (HOG detector with 1 upsample, 5 landmarks, get_face_chip) and
ours (BlazeFace, keypoint template, FaceAligner) each cut a 150x150 chip of the same face from the same
decoded pixels; dlib's own `compute_face_descriptor` embeds both, so the only difference measured is the
chip. Prints cosine similarity (median, 1st percentile, mean), Euclidean distance (median; dlib's
same-person threshold is 0.6) and how many faces each pipeline found.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from common import lfw_dir
from derive_template import DlibReference, cosine, match_face, sample_images

from edge.images import read_image_rgb
from edge.vision.align import FaceAligner, load_template
from edge.vision.build import detector as load_detector


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lfw", default=None, help="LFW folder (default ../shared/data/lfw)")
    ap.add_argument("--images", type=int, default=500, help="test-people images to compare")
    ap.add_argument("--template", type=Path, default=None, help="alignment template (default: packaged)")
    args = ap.parse_args()

    lfw = lfw_dir(args.lfw)
    files = sample_images(lfw, "test", args.images, seed=1)
    ref = DlibReference()
    detector = load_detector(num_threads=1)
    aligner = FaceAligner(template=load_template(args.template))
    start = time.monotonic()

    n_dlib = n_ours = 0
    cos, dist, eye_err = [], [], []
    for rel in files:
        rgb = read_image_rgb(lfw / rel)
        rect, shape = ref.largest_shape(rgb)
        faces = detector.detect(rgb)
        n_dlib += rect is not None
        n_ours += bool(faces)
        if rect is None:
            continue
        face = match_face(faces, rect)
        if face is None:
            continue
        d_ref = ref.descriptor(ref.chip(rgb, shape))
        ours = aligner.align(rgb, face)
        d_ours = ref.descriptor(ours.chip)
        cos.append(cosine(d_ref, d_ours))
        dist.append(float(np.linalg.norm(d_ref - d_ours)))
        # Where dlib's eye landmarks (centre of each eye's two corners) land in our chip vs in its own.
        parts = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
        eyes = np.stack([parts[0:2].mean(0), parts[2:4].mean(0)])
        in_ours = eyes @ ours.matrix[:, :2].T + ours.matrix[:, 2]
        m = ref.chip_matrix(shape)
        in_ref = eyes @ m[:, :2].T + m[:, 2]
        eye_err.append(float(np.linalg.norm(in_ours - in_ref, axis=1).mean()))

    cos, dist = np.array(cos), np.array(dist)
    print(f"LFW test people: {len(files)} images; faces found: dlib {n_dlib}, BlazeFace {n_ours}; "
          f"compared (same face in both) {len(cos)}")
    print(f"cosine similarity (dlib chip vs our chip): median {np.median(cos):.4f}  "
          f"p1 {np.percentile(cos, 1):.4f}  mean {cos.mean():.4f}  min {cos.min():.4f}")
    print(f"euclidean distance: median {np.median(dist):.4f}  p99 {np.percentile(dist, 99):.4f}  "
          f"share < 0.6 (dlib's same-person threshold) {np.mean(dist < 0.6):.4f}")
    print(f"dlib eye centres, our chip vs dlib's chip: median {np.median(eye_err):.2f} px, "
          f"p95 {np.percentile(eye_err, 95):.2f} px")
    print(f"time {time.monotonic() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
