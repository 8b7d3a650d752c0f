"""Embedder latency on this machine, same chips, same run: float TFLite vs int8 TFLite (ai_edge_litert with
XNNPACK, 1 and 2 threads) vs dlib's own ResNet (`compute_face_descriptor` on the aligned chip).

    .venv/bin/python benchmarks/embedder_latency.py --float out/work/embedder_float.tflite \
        --int8 out/bundle/embedder.tflite [--chips 64] [--repeat 3]

Prints a table of median and p95 milliseconds per chip, and the speed-ups the targets ask for.
"""

from __future__ import annotations

import argparse
import os

import numpy as np
from common import DEFAULT_LFW, REPO, table

from convert.bench.speed import tflite_fn, time_per_chip


def aligned_chips(n: int) -> np.ndarray:
    """Real aligned chips through edge's own detector + aligner: LFW when present, else the fixtures."""
    from edge.images import read_image_rgb
    from edge.vision.align import FaceAligner
    from edge.vision.build import detector as load_detector

    detector = load_detector()
    aligner = FaceAligner()
    if (DEFAULT_LFW / "pairs_view2.csv").is_file():
        files = sorted(DEFAULT_LFW.glob("*/1.jpg"))[: n * 2]
    else:
        files = sorted((REPO / "convert" / "portraits").glob("*.[jp][pn]g"))
    chips = []
    for f in files:
        image = read_image_rgb(f)
        faces = detector.detect(image)
        if faces:
            chips.append(aligner.align(image, max(faces, key=lambda x: x.area)).chip)
        if len(chips) == n:
            break
    while len(chips) < n:  # the fixtures alone: repeat them
        chips.append(chips[len(chips) % max(1, len(chips))])
    return np.stack(chips)


def dlib_fn(threads: int):
    import dlib

    from edge.models.store import DLIB_RESNET, model_path

    model = dlib.face_recognition_model_v1(str(model_path(DLIB_RESNET)))
    return lambda chip: model.compute_face_descriptor(chip)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--float", dest="float_path", required=True, help="float TFLite embedder")
    ap.add_argument("--int8", dest="int8_path", required=True, help="int8 TFLite embedder (or a bundle folder)")
    ap.add_argument("--chips", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    int8_path = args.int8_path
    if os.path.isdir(int8_path):
        int8_path = os.path.join(int8_path, "embedder.tflite")

    chips = aligned_chips(args.chips)
    results = {}
    for threads in (1, 2):
        results[f"float TFLite, {threads} thread(s)"] = time_per_chip(tflite_fn(args.float_path, threads), chips, args.repeat)
        results[f"int8 TFLite, {threads} thread(s)"] = time_per_chip(tflite_fn(int8_path, threads), chips, args.repeat)
    results["dlib compute_face_descriptor"] = time_per_chip(dlib_fn(1), chips, 1)

    rows = [[name, f"{np.median(t):.2f}", f"{np.percentile(t, 95):.2f}"] for name, t in results.items()]
    print(f"embedder latency per 150x150 chip, {len(chips)} chips, {os.cpu_count()} CPUs")
    print(table(rows, ["embedder", "median ms", "p95 ms"]))
    med = {k: float(np.median(v)) for k, v in results.items()}
    dlib_ms = med["dlib compute_face_descriptor"]
    for threads in (1, 2):
        f, q = med[f"float TFLite, {threads} thread(s)"], med[f"int8 TFLite, {threads} thread(s)"]
        print(f"{threads} thread(s): int8 is {f / q:.2f}x faster than float TFLite (target >= 2x) and "
              f"{dlib_ms / q:.2f}x faster than dlib (target >= 3x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
