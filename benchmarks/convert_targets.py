"""The compression targets of `facelock convert`, measured: sizes, agreement, accuracy drops, latency.

    .venv/bin/python benchmarks/convert_targets.py --workdir out/full/work --bundle out/full/bundle

Reads the report `facelock convert` wrote (sizes, sparsity, verification on the pair list) and measures
embedder latency in this run (float TFLite, int8, dlib), then prints each target with its verdict.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from common import table
from embedder_latency import aligned_chips, dlib_fn

from convert.bench.speed import tflite_fn, time_per_chip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", required=True, help="the work folder of a `facelock convert` run")
    ap.add_argument("--bundle", required=True, help="the bundle folder it wrote")
    ap.add_argument("--chips", type=int, default=64)
    args = ap.parse_args()
    work, bundle = Path(args.workdir), Path(args.bundle)
    report = json.loads((work / "report.json").read_text())
    s = report["sizes"]
    rows = []

    def target(name, value, goal, ok):
        rows.append([name, value, goal, "PASS" if ok else "FAIL"])

    target("int8 file / float TFLite", f"{100 * s['int8_vs_float']:.1f}%", "<= 27%", s["int8_vs_float"] <= 0.27)
    sparsity = report.get("sparsity", {}).get("overall", 0.0)
    target(f"gzip(int8) / float at {100 * sparsity:.0f}% sparsity", f"{100 * s['int8_gzip_vs_float']:.1f}%",
           "<= 15%", s["int8_gzip_vs_float"] <= 0.15)
    agree = report["agreement_vs_float"]["int8"]
    target("int8 vs float median cosine", f"{agree['median_cosine']:.4f} (p1 {agree['p1_cosine']:.4f})",
           ">= 0.99", agree["median_cosine"] >= 0.99)
    v = report["verification"]
    f, q = v["float"], v["int8"]
    acc_drop = 100 * (f["best_accuracy"] - q["best_accuracy"])
    tar_drop = 100 * (f["tar_at_far_1e3"] - q["tar_at_far_1e3"])
    target("best-accuracy drop, float -> int8", f"{acc_drop:+.2f} points", "<= 0.3", acc_drop <= 0.3)
    target("TAR@FAR1e-3 drop, float -> int8", f"{tar_drop:+.2f} points", "<= 1", tar_drop <= 1.0)

    chips = aligned_chips(args.chips)
    med = {}
    for threads in (1, 2):
        med[("float", threads)] = float(np.median(time_per_chip(tflite_fn(str(work / "embedder_float.tflite"), threads), chips, 3)))
        med[("int8", threads)] = float(np.median(time_per_chip(tflite_fn(str(bundle / "embedder.tflite"), threads), chips, 3)))
    dlib_ms = float(np.median(time_per_chip(dlib_fn(1), chips, 1)))
    for threads in (1, 2):
        fq = med[("float", threads)] / med[("int8", threads)]
        dq = dlib_ms / med[("int8", threads)]
        target(f"int8 speed-up vs float TFLite, {threads} thread(s)", f"{fq:.2f}x", ">= 2x", fq >= 2)
        target(f"int8 speed-up vs dlib, {threads} thread(s)", f"{dq:.2f}x", ">= 3x", dq >= 3)

    print("verification on", report["pairs"]["file"], "folds", report["pairs"]["folds"])
    print(table([[name, f"{m['auc']:.4f}", f"{100 * m['best_accuracy']:.2f}%", f"{100 * m['tar_at_far_1e2']:.2f}%",
                  f"{100 * m['tar_at_far_1e3']:.2f}%", f"{100 * m['eer']:.2f}%"] for name, m in v.items()],
                ["model", "AUC", "best acc", "TAR@FAR1e-2", "TAR@FAR1e-3", "EER"]))
    print()
    print(f"latency per chip, median of {len(chips)} chips x 3 (ms): " + ", ".join(
        f"{k[0]} {k[1]}t {ms:.2f}" for k, ms in med.items()) + f", dlib {dlib_ms:.2f}")
    print(table(rows, ["target", "measured", "goal", "verdict"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
