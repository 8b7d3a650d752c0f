"""Where `[decide] first_run_band` comes from: on door frames, how far the embedder's mirror run moves a
cosine, and what deciding a frame on the first run alone (when it is at least the band away from the
threshold, Decider.settled) saves and changes.

Frames: LFW `train` people (the band is tuned on them; never `test`) with two or more photos, photo 1
enrolled as a still (mirror-averaged, as `facelock enroll` does), photo 2 placed in a 640x480 door frame
(convert.bench.door.door_frame) with the face 40, 60, 80 and 120 px wide, clean, in low light and blurred;
only faces the lock's default quality gates pass (the only ones it matches). Each frame is embedded once
(`embed_once`) and completed with the mirror run (`complete`), so both scores come from the same chip.
Faces the gates call dim or soft are reported apart, each at the bundle's threshold for them (the bar the
lock holds them to: edge.identity.vote; a face both dim and soft is reported with the dim ones).

- *shift*: |mirror-averaged cosine - first-run cosine|, owner and stranger comparisons, all of them and
  those within 0.05 of the bundle's threshold;
- *pairs*: every probe against every person's enrolment at the bundle's threshold: with each band, the
  share of comparisons that would need the mirror run and those whose pass/fail the first run got wrong;
- *doors*: each frame at a door of five enrolled people (its owner and four others drawn at random; a
  stranger's frame: five others), matched and voted on as the lock does (best person, threshold, margin,
  `Decider.settled`): the frames that ran the mirror and the votes that differ from always running it.

    .venv/bin/python benchmarks/first_run.py [--bundle out/full/bundle] [--people 300] [--json F]
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
from common import table, train_door_main

from convert.bench.door import OursAtTheDoor, door_frame, door_people, placed_face
from edge.identity.decide import DecideOptions, Decider
from edge.identity.match import Match
from edge.identity.vote import frame_vote
from edge.images import read_image_rgb
from edge.models.bundle import load_bundle
from edge.vision.build import bundle_stages

WIDTHS = (40, 60, 80, 120)
CONDITIONS = ("clean", "low_light", "blur")
BANDS = (0.01, 0.015, 0.02, 0.03, 0.04)
DOOR_PEOPLE = 5


def measure(bundle: Path, root: Path, people_n: int, threads: int) -> dict:
    loaded = load_bundle(bundle)
    if not loaded.card.mirror_average:
        raise SystemExit(f"{bundle}: the bundle embeds once (--no-mirror): there is no mirror run to skip")
    stages = bundle_stages(loaded, num_threads=threads, use_edgetpu=False)
    pipe = OursAtTheDoor(stages)
    people = door_people(root, limit=people_n, seed=1, split="train")
    enrol = [pipe.embed(read_image_rgb(p.enrol))[0] for p in people]
    enrolled = np.array([e is not None for e in enrol])
    gallery = np.stack([e if e is not None else np.zeros(loaded.card.embedding_dim, np.float32) for e in enrol])
    owners, first, full, where, dims, softs = [], [], [], [], [], []
    for ci, condition in enumerate(CONDITIONS):
        for width in WIDTHS:
            rng = np.random.default_rng([31, ci, width])
            for i, p in enumerate(people):
                frame, centre = door_frame(read_image_rgb(p.probe), width, rng, condition)
                face = pipe.pipeline.subject(frame).face
                verdict = pipe.gate.check(frame, face) if face is not None else None
                if not enrolled[i] or verdict is None or not placed_face(face.center, centre, width) \
                        or not verdict.ok:
                    continue
                chips = stages.aligner.align(frame, face).chip[None]
                once = stages.embedder.embed_once(chips)
                owners.append(i)
                first.append(once[0])
                full.append(stages.embedder.complete(chips, once)[0])
                where.append(f"{condition}/{width}")
                dims.append(verdict.dim)
                softs.append(verdict.soft)
    dim, soft = loaded.threshold.dim, loaded.threshold.soft
    return {"threshold": loaded.threshold.cosine, "dim_threshold": dim.cosine if dim is not None else 0.0,
            "soft_threshold": soft.cosine if soft is not None else 0.0, "soft": np.array(softs, bool),
            "people": len(people), "enrolled": enrolled, "gallery": gallery, "owner": np.array(owners),
            "first": np.stack(first), "full": np.stack(full), "cell": np.array(where), "dim": np.array(dims, bool)}


def _vote(scores: np.ndarray, o: DecideOptions) -> tuple[int, Match]:
    """The decider's vote (edge.identity.vote) on one frame at a door whose people have these cosines (index
    or -1), and the Match the matcher would report (no negative examples)."""
    order = np.argsort(scores)[::-1]
    best, runner = int(order[0]), int(order[1])
    m = Match(person=str(best), score=float(scores[best]), runner_up=str(runner),
              runner_up_score=float(scores[runner]), negative_score=-1.0,
              margin=float(scores[best] - scores[runner]))
    person, _why = frame_vote(m, o.threshold, o.margin)
    return (best if person is not None else -1), m


def report(res: dict) -> dict:
    """The tables for the clear faces at the threshold, then for the dim and the soft faces
    (edge.vision.quality) at their own thresholds, the bars the lock holds them to: the mirror run may move a
    noisy or blurred face's cosine further."""
    dim = res["dim"]
    soft = res.get("soft", np.zeros_like(dim)) & ~dim
    groups = [("lit", ~dim & ~soft, res["threshold"], "clear (neither dim nor soft)"),
              ("dim", dim, res["dim_threshold"], "dim, at the dim-light threshold"),
              ("soft", soft, res.get("soft_threshold", 0.0), "soft, at the soft-face threshold")]
    out = {}
    for name, sel, t, which in groups:
        if sel.any() and t:
            if out:
                print()
            out[name] = _report({**res, **{k: res[k][sel] for k in ("owner", "first", "full")}}, t, which)
    return out


def _report(res: dict, t: float, which: str) -> dict:
    g, enrolled, owner = res["gallery"], res["enrolled"], res["owner"]
    s1, s2 = res["first"] @ g.T, res["full"] @ g.T
    own = np.zeros(s1.shape, bool)
    own[np.arange(len(owner)), owner] = True
    valid = np.broadcast_to(enrolled[None, :], s1.shape)
    out: dict = {"threshold": t, "people": res["people"], "frames": len(owner), "shift": {}, "pairs": [],
                 "doors": []}
    print(f"{len(owner)} door frames the default gates pass, {which} ({', '.join(CONDITIONS)}; faces "
          f"{'/'.join(map(str, WIDTHS))} px)\n")

    rows = []
    for name, sel in (("owner", own & valid), ("stranger", ~own & valid)):
        for scope, near in (("all", np.ones_like(sel)), ("within 0.05 of the threshold", abs(s1 - t) < 0.05)):
            d = np.abs(s2 - s1)[sel & near]
            if not d.size:
                continue
            p50, p99, p999 = np.percentile(d, [50, 99, 99.9])
            rows.append([name, scope, d.size, f"{p50:.4f}", f"{p99:.4f}", f"{p999:.4f}", f"{d.max():.4f}"])
            out["shift"][f"{name}/{scope}"] = {"n": int(d.size), "p50": p50, "p99": p99, "p99.9": p999,
                                               "max": float(d.max())}
    print("How far the mirror run moves a cosine (|mirror-averaged - first run|):")
    print(table(rows, ["comparisons", "which", "n", "median", "99%", "99.9%", "max"]))

    rows = []
    for band in BANDS:
        row = [f"{band:g}"]
        for name, sel in (("owner", own & valid), ("stranger", ~own & valid)):
            a, b = s1[sel], s2[sel]
            need = np.abs(a - t) < band
            wrong = int(((a >= t) != (b >= t))[~need].sum())
            row += [f"{need.mean() * 100:.2f}%", wrong]
            out["pairs"].append({"band": band, "who": name, "mirror_pct": need.mean() * 100, "wrong": wrong,
                                 "n": int(sel.sum())})
        rows.append(row)
    print(f"\nEvery probe against every enrolment at the threshold ({t:.4f}): comparisons that need "
          "the mirror run, and pass/fail the first run alone got wrong:")
    print(table(rows, ["band", "owner: mirror runs", "owner: wrong", "strangers: mirror runs", "strangers: wrong"]))

    rng = np.random.default_rng(7)
    people = np.flatnonzero(enrolled)
    doors = []  # (frame, door people, owner's index there or -1)
    for f, i in enumerate(owner):
        others = rng.choice(people[people != i], DOOR_PEOPLE, replace=False)
        doors.append((f, np.r_[i, others[:DOOR_PEOPLE - 1]], 0))
        doors.append((f, others, -1))
    rows = []
    for band in (0.0, *BANDS):
        decider = Decider(replace(DecideOptions(threshold=t), first_run_band=band))
        o = decider.options
        tally = {k: [0, 0, 0, 0, 0] for k in ("owner", "stranger")}  # frames, mirror runs, right full/first, differ
        for f, door, mine in doors:
            v_full, _ = _vote(s2[f, door], o)
            v_first, m_first = _vote(s1[f, door], o)
            settled = decider.settled(m_first)
            vote = v_first if settled else v_full
            k = tally["owner" if mine == 0 else "stranger"]
            right = (lambda v: v == 0) if mine == 0 else (lambda v: v == -1)
            k[0] += 1
            k[1] += not settled
            k[2] += right(v_full)
            k[3] += right(vote)
            k[4] += vote != v_full
        (on, om, ofull, ofirst, odiff), (sn, sm, sfull, sfirst, sdiff) = tally["owner"], tally["stranger"]
        rows.append([f"{band:g}" + (" (always)" if band == 0 else ""), f"{om / on * 100:.1f}%", f"{sm / sn * 100:.1f}%",
                     f"{ofull / on * 100:.2f}% / {ofirst / on * 100:.2f}%", f"{sn - sfull} / {sn - sfirst}",
                     odiff + sdiff])
        out["doors"].append({"band": band, "owner_frames": on, "stranger_frames": sn, "owner_mirror_pct": om / on * 100,
                             "stranger_mirror_pct": sm / sn * 100, "owner_votes_full": ofull,
                             "owner_votes_first": ofirst, "false_votes_full": sn - sfull,
                             "false_votes_first": sn - sfirst, "votes_differ": odiff + sdiff})
    print(f"\nEach frame at a door of {DOOR_PEOPLE} people (its owner's, and a stranger's), voted on as the lock "
          f"does (threshold {t:.4f}, margin {DecideOptions().margin:g}):")
    print(table(rows, ["band", "owner frames: mirror run", "stranger frames: mirror run",
                       "owner votes: always / band", "false votes: always / band", "votes that differ"]))
    return out


if __name__ == "__main__":
    raise SystemExit(train_door_main(__doc__, measure, report))
