"""Where the quality gates' light, blur and pose thresholds come from: on door frames, how often a face passes
the bundle's threshold for its owner and for strangers, by picture condition, contrast, sharpness and yaw.

Frames: LFW `train` people (the gates are tuned on them; never `test`) with two or more photos, photo 1
enrolled as a still, photo 2 placed in a 640x480 door frame (convert.bench.door.door_frame) with the face 60
and 120 px wide, in six conditions: clean, low light (a quarter of the light, sensor noise sigma 3), dark (an
eighth), blur sigma 1.2 px, blur sigma 2 px and the dim-light floor (0.18 of the light). Each probe is
compared with every person's enrolment at the bundle's threshold: *owner* = its own enrolment passes (a vote
for the right person), *strangers* = the share of the other enrolments that pass (per-frame false accepts; the
threshold was chosen for 1e-3 on still photos). No quality gate is applied to these figures; *gates pass* is
the share of found faces the lock's default gates let through. *The lock*: what it does with them, each face
at the bar it faces (the bundle's dim-light threshold for a dim face, its soft-face threshold for a soft one,
edge.identity.vote): the owner's frames that pass the gates and the bar, and of the stranger comparisons on
frames that pass the gates, those over the bar.
Then the same figures by contrast, by sharpness and by the head's estimated turn (|yaw|), and the lock with
other limits of the yaw and sharpness gates and of soft faces (`[quality] max_yaw_deg`, `min_sharpness`,
`soft_sharpness`; 0: no face is soft, as before the soft-face threshold).

    .venv/bin/python benchmarks/quality_gates.py [--bundle out/full/bundle] [--people 300] [--json F]
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
from common import table, train_door_main

from convert.bench.door import CONDITIONS, OursAtTheDoor, door_frame, door_people, placed_face
from edge.identity.vote import vote_threshold
from edge.images import read_image_rgb
from edge.models.bundle import load_bundle
from edge.types import FaceCondition
from edge.vision.build import bundle_stages
from edge.vision.quality import BLURRY, YAW, QualityOptions

WIDTHS = (60, 120)
CONTRAST_BINS = (0, 5, 10, 15, 20, 30, 40, 255)
SHARPNESS_BINS = (0, 0.1, 0.12, 0.14, 0.16, 0.18, 0.2, 0.25, 0.3, 0.4, 10)
YAW_BINS = (0, 10, 20, 25, 30, 35, 40, 50, 91)
YAW_LIMITS = (25, 30, 35, 40, 45, 90)
SHARPNESS_LIMITS = (0.12, 0.14, 0.16, 0.18, 0.2, 0.25)
SOFT_LIMITS = (0.0, 0.18, 0.2, 0.22, 0.25, 0.3)
SOFT_SHARPNESS = QualityOptions().soft_sharpness


def measure(bundle: Path, root: Path, people_n: int, threads: int) -> dict:
    loaded = load_bundle(bundle)
    pipe = OursAtTheDoor(bundle_stages(loaded, num_threads=threads, use_edgetpu=False))
    people = door_people(root, limit=people_n, seed=1, split="train")
    enrol = [pipe.embed(read_image_rgb(p.enrol))[0] for p in people]
    gallery = np.stack([e if e is not None else np.zeros(128, np.float32) for e in enrol])
    enrolled = np.array([e is not None for e in enrol])
    # (condition, width, owner cosine, stranger cosines, gates ok, sharpness, contrast, dim, |yaw|,
    #  the gates that failed)
    rows = []
    for ci, condition in enumerate(CONDITIONS):
        for width in WIDTHS:
            rng = np.random.default_rng([11, ci, width])
            for i, p in enumerate(people):
                frame, centre = door_frame(read_image_rgb(p.probe), width, rng, condition)
                e, where, v = pipe.embed_checked(frame)
                if not enrolled[i] or e is None or not placed_face(where, centre, width):
                    continue
                scores = gallery @ e
                others = np.delete(scores, i)[np.delete(enrolled, i)]
                rows.append((condition, width, float(scores[i]), others, v.ok, v.sharpness, v.contrast, v.dim,
                             abs(v.yaw_deg), frozenset(v.failures)))
    dim, soft = loaded.threshold.dim, loaded.threshold.soft
    return {"threshold": loaded.threshold.cosine, "people": len(people), "rows": rows,
            "dim_threshold": dim.cosine if dim is not None else 0.0,
            "soft_threshold": soft.cosine if soft is not None else 0.0}


def rates(rows: list, threshold: float) -> tuple[int, float, float, int]:
    """(frames, owner accepted %, stranger comparisons passing %, how many passed)."""
    if not rows:
        return 0, float("nan"), float("nan"), 0
    owner = np.mean([r[2] >= threshold for r in rows]) * 100
    strangers = np.concatenate([r[3] for r in rows])
    hits = int((strangers >= threshold).sum())
    return len(rows), owner, hits / max(strangers.size, 1) * 100, hits


def the_lock(rows: list, threshold: float, bars: dict, passes=lambda r: r[4],
             soft_below: float = SOFT_SHARPNESS) -> tuple[float, float, int]:
    """(owner frames voting %, stranger comparisons passing % on the frames the gates pass, how many);
    `passes(row)`: whether the gates pass that frame (by default the lock's default gates did); `bars`: the
    face conditions' thresholds (DecideOptions.bars); a face is soft under sharpness `soft_below`."""
    needs = [vote_threshold(threshold, bars, [c for c, on in ((FaceCondition.DIM, r[7]),
                                                              (FaceCondition.SOFT, r[5] < soft_below)) if on])
             for r in rows]  # the cosine each face's vote needs
    ok = [bool(passes(r)) for r in rows]
    owner = np.mean([p and r[2] >= bar for r, bar, p in zip(rows, needs, ok, strict=True)]) * 100 if rows else np.nan
    passing = [(r[3], bar) for r, bar, p in zip(rows, needs, ok, strict=True) if p]
    hits = sum(int((s >= bar).sum()) for s, bar in passing)
    return owner, hits / max(sum(s.size for s, _ in passing), 1) * 100, hits


def report(res: dict) -> dict:
    thr, rows = res["threshold"], res["rows"]
    bars = {FaceCondition.DIM: res.get("dim_threshold", 0.0), FaceCondition.SOFT: res.get("soft_threshold", 0.0)}
    print(f"dim-light threshold {bars[FaceCondition.DIM]:.4f}" if bars[FaceCondition.DIM]
          else "no dim-light threshold: dim faces refused")
    print(f"soft-face threshold {bars[FaceCondition.SOFT]:.4f} (faces of sharpness under {SOFT_SHARPNESS:g})"
          if bars[FaceCondition.SOFT] else "no soft-face threshold: soft faces at the threshold")
    out: dict = {"threshold": thr, "people": res["people"], "conditions": {}, "contrast": [], "sharpness": [],
                 "yaw": [], "limits": []}
    cond_rows = []
    for condition in CONDITIONS:
        for width in WIDTHS:
            sel = [r for r in rows if r[0] == condition and r[1] == width]
            n, owner, far, hits = rates(sel, thr)
            passed = np.mean([r[4] for r in sel]) * 100 if sel else float("nan")
            sharp, contrast = (float(np.median([r[k] for r in sel])) if sel else float("nan") for k in (5, 6))
            lock_owner, lock_far, lock_hits = the_lock(sel, thr, bars)
            out["conditions"][f"{condition}/{width}"] = {"frames": n, "owner_pct": owner, "strangers_pct": far,
                                                       "gates_pass_pct": passed, "sharpness": sharp,
                                                       "contrast": contrast, "lock_owner_pct": lock_owner,
                                                       "lock_strangers_pct": lock_far}
            cond_rows.append([condition, width, n, f"{owner:.1f}%", f"{far:.3f}% ({hits})", f"{passed:.1f}%",
                              f"{sharp:.3f}", f"{contrast:.1f}", f"{lock_owner:.1f}%",
                              f"{lock_far:.3f}% ({lock_hits})"])
    print(table(cond_rows, ["condition", "face px", "frames", "owner", "strangers", "gates pass", "sharpness",
                            "contrast", "the lock: owner", "the lock: strangers"]))

    def binned(key: int, edges, subset, name: str):
        lines = []
        for lo, hi in itertools.pairwise(edges):
            sel = [r for r in subset if lo <= r[key] < hi]
            n, owner, far, hits = rates(sel, thr)
            if n:
                lines.append([f"{lo:g}-{hi:g}", n, f"{owner:.1f}%", f"{far:.3f}% ({hits})"])
                out[name].append({"from": lo, "to": hi, "frames": n, "owner_pct": owner, "strangers_pct": far})
        return lines

    print("\nBy contrast (grey standard deviation of the face box), every condition:")
    print(table(binned(6, CONTRAST_BINS, rows, "contrast"), ["contrast", "frames", "owner", "strangers"]))
    lit = [r for r in rows if CONDITIONS[r[0]][0] == 1.0]
    print("\nBy sharpness (Laplacian std over contrast), well-lit conditions (clean, blur, blur2):")
    print(table(binned(5, SHARPNESS_BINS, lit, "sharpness"), ["sharpness", "frames", "owner", "strangers"]))
    print("\nBy the head's estimated |yaw| in degrees (edge.vision.quality.head_pose), every condition, the faces"
          " every other gate passes, each at the lock's bar:")
    lines = []
    for lo, hi in itertools.pairwise(YAW_BINS):
        sel = [r for r in rows if r[9] <= {YAW} and lo <= r[8] < hi]
        if sel:
            owner, far, hits = the_lock(sel, thr, bars, passes=lambda r: True)
            lines.append([f"{lo:g}-{hi:g}", len(sel), f"{owner:.1f}%", f"{far:.3f}% ({hits})"])
            out["yaw"].append({"from": lo, "to": hi, "frames": len(sel), "owner_pct": owner, "strangers_pct": far})
    print(table(lines, ["|yaw|", "frames", "owner", "strangers"]))
    print("\nThe lock at other gate limits (every condition; owner: of all found faces):")
    lines = []
    limits = [("max_yaw_deg", x, lambda r, x=x: r[9] <= {YAW} and r[8] <= x) for x in YAW_LIMITS]
    limits += [("min_sharpness", x, lambda r, x=x: r[9] <= {BLURRY} and r[5] >= x) for x in SHARPNESS_LIMITS]
    limits += [("soft_sharpness", x, lambda r: r[4]) for x in SOFT_LIMITS]
    for field, limit, passes in limits:
        soft_below = limit if field == "soft_sharpness" else SOFT_SHARPNESS
        owner, far, hits = the_lock(rows, thr, bars, passes, soft_below)
        lines.append([f"{field} = {limit:g}", f"{owner:.1f}%", f"{far:.4f}% ({hits})"])
        out["limits"].append({"field": field, "limit": limit, "lock_owner_pct": owner, "lock_strangers_pct": far})
    print(table(lines, ["[quality]", "the lock: owner", "the lock: strangers"]))
    return out


if __name__ == "__main__":
    raise SystemExit(train_door_main(__doc__, measure, report))
