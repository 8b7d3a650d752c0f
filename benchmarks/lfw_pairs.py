"""LFW View 2 verification, folds 6-10: `facelock embed` against face_recognition's pipeline, same run.

    .venv/bin/python benchmarks/lfw_pairs.py [--model M] [--limit N] [--no-peer] [--json OUT]

Ours: `facelock embed --json` (BlazeFace -> keypoint alignment -> the given embedder), cosine similarity.
Peer: face_recognition 1.3's pipeline (dlib HOG detector, 1 upsample -> 5 landmarks -> dlib's ResNet), its own
score (negative Euclidean distance). A pair with a face that a pipeline did not find counts as rejected
(score -inf), so misses cost accuracy instead of silently dropping hard pairs. Timings exclude JPEG decoding
in both and are per image, wall clock, on this machine, one process at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from common import REPO, lfw_dir, read_pairs, table

from convert.bench.peer import run_peer, score_pairs
from convert.compress.metrics import verification_report


def run_ours(lfw, images: list[str], model: str | None, threads: int) -> tuple[dict, list[float]]:
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as fh:
        fh.write("\n".join(images))
        listing = fh.name
    cmd = [sys.executable, "-m", "facelock", "embed", "--json", "--threads", str(threads),
           "--root", str(lfw), "--files-from", listing]
    if model:
        cmd += ["--model", model]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=False)
    os.unlink(listing)
    if proc.returncode not in (0, 1):
        raise SystemExit(f"facelock embed failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    embeddings, ms = {}, []
    for line in proc.stdout.splitlines():
        row = json.loads(line)
        if row["embedding"] is not None:
            embeddings[row["file"]] = np.asarray(row["embedding"], dtype=np.float32)
            ms.append(row["ms"])
    return embeddings, ms


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lfw", help="LFW folder (default ../shared/data/lfw)")
    ap.add_argument("--model", help="model for `facelock embed` (default: the Keras port)")
    ap.add_argument("--limit", type=int, help="only the first N pairs (a quick look)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-peer", action="store_true", help="skip face_recognition")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    ap.add_argument("--save-embeddings", metavar="NPZ", help="also save our embeddings (for error analysis)")
    args = ap.parse_args()

    lfw = lfw_dir(args.lfw)
    pairs = read_pairs(lfw)[: args.limit]
    images = sorted({p.a for p in pairs} | {p.b for p in pairs})
    same = np.array([p.same for p in pairs])
    print(f"LFW View 2 folds 6-10: {len(pairs)} pairs, {len(images)} images", flush=True)

    results = {}
    t0 = time.time()
    emb, ms = run_ours(lfw, images, args.model, args.threads)
    results["facelock embed"] = (emb, ms, "cosine", time.time() - t0)
    if args.save_embeddings:
        np.savez(args.save_embeddings, files=np.array(list(emb)), embeddings=np.stack(list(emb.values())))
    if not args.no_peer:
        t0 = time.time()
        emb, ms = run_peer(lfw, images)
        results["face_recognition (dlib HOG+5pt+ResNet)"] = (emb, ms, "euclidean", time.time() - t0)

    rows, figures = [], {}
    for name, (emb, ms, kind, wall) in results.items():
        report = verification_report(score_pairs(pairs, emb, kind), same)
        both = np.array([p.a in emb and p.b in emb for p in pairs])
        report_found = verification_report(score_pairs(pairs, emb, kind)[both], same[both])
        missing = len(images) - len(emb)
        rows.append([
            name, f"{report.auc:.4f}", f"{100 * report.best_accuracy:.2f}%",
            f"{100 * report.tar_at_far_1e3:.2f}%", f"{missing}", f"{int(both.sum())}",
            f"{100 * report_found.best_accuracy:.2f}%", f"{np.median(ms):.1f}", f"{wall:.0f}",
        ])
        figures[name] = {"all_pairs": report.as_dict(), "pairs_with_both_faces": report_found.as_dict(),
                         "faces_not_found": missing, "median_ms": float(np.median(ms)), "wall_s": wall}
    print(table(rows, ["pipeline", "AUC", "best acc", "TAR@FAR1e-3", "faces not found", "pairs w/ both",
                       "best acc (both found)", "median ms/img", "wall s"]))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(figures, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
