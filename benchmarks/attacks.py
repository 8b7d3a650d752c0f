"""Presentation attacks: do prints and screens of an enrolled person open the door, and what does the
passive liveness check cost the owner?

    .venv/bin/python benchmarks/attacks.py [--bundle out/full/bundle] [--people N] [--json OUT]
        [--sweep live_parallax=0.03,0.035,0.04] [--challenge]

Prints the CPU (and its SIMD features), then per kind of sequence (prints and screens, hand-held and held
still; live-like turning heads, with and without a blink): APCER / BPCER with the liveness check on and
off (same frames, same run), why the refused ones were refused, the median time to open; the targets of
issue 14 with verdicts; and with --sweep, the same figures for other values of one LivenessOptions field
(re-deciding the same frames); with --challenge, the active challenge played against the lock frame by
frame (convert/bench/challenge.py). How the sequences are made and scored: convert/bench/attacks.py.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import fields
from pathlib import Path

import numpy as np
from common import lfw_dir, table

from convert.bench.attacks import (
    ATTACKS,
    LIVES,
    PRINT_MOVING,
    PRINT_STILL,
    decide,
    score,
    sequences,
    summarise,
)
from convert.bench.machine import machine

REASONS = ("planar", "static", "undecided", "not recognised")


def pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def secs(x) -> str:
    return "–" if x is None else f"{x:.1f} s"


def pooled(kinds: dict, names, key: str) -> float | None:
    cells = [kinds[k] for k in names if k in kinds]
    n = sum(c["n"] for c in cells)
    return sum(c[key] * c["n"] for c in cells) / n if n else None


def live_bpcer_liveness(kinds: dict) -> float | None:
    """Pooled over the live kinds: of those that open without liveness, the share that do not with it."""
    opened = sum(kinds[k]["accepted_off"] * kinds[k]["n"] for k in LIVES if k in kinds)
    both = sum((1 - kinds[k]["bpcer_liveness"]) * kinds[k]["accepted_off"] * kinds[k]["n"] for k in LIVES
               if k in kinds and kinds[k]["bpcer_liveness"] is not None)
    return 1 - both / opened if opened else None


def verdicts(kinds: dict) -> list[list[str]]:
    """Issue 14's targets: prints APCER <= 1%, screens <= 5%, live BPCER <= 5%, rise in time to open <= 1 s."""
    out = []
    for names, goal, what in (((PRINT_MOVING, PRINT_STILL), 0.01, "print attacks: APCER"),
                              (tuple(k for k in ATTACKS if k.startswith("screen")), 0.05, "screen replays: APCER")):
        x = pooled(kinds, names, "accepted")
        out.append([what, pct(x), f"<= {goal:.0%}", "–" if x is None else ("PASS" if x <= goal else "FAIL")])
    x = live_bpcer_liveness(kinds)
    out.append(["live: BPCER of liveness (opened without it, not with it)", pct(x), "<= 5%",
                "–" if x is None else ("PASS" if x <= 0.05 else "FAIL")])
    rises = [kinds[k]["rise_s"] for k in LIVES if k in kinds and kinds[k]["rise_s"] is not None]
    worst = max(rises) if rises else None
    out.append(["live: median rise in time to open (worst live kind)", secs(worst), "<= 1.0 s",
                "–" if worst is None else ("PASS" if worst <= 1.0 else "FAIL")])
    return out


def print_figures(res: dict) -> None:
    kinds = res["kinds"]
    rows = [[k, c["n"], pct(c["accepted"]), " / ".join(pct(x) for x in c["opened_by"].values()),
             pct(c["accepted_off"])] + [pct(c["refused"][r]) for r in REASONS]
            for k, c in kinds.items() if k in ATTACKS]
    print(table(rows, ["attack", "sequences", "APCER (liveness on)", "passed by parallax / blink / mouth",
                       "opened with liveness off"] + [f"refused: {r}" for r in REASONS]))
    print()
    rows = [[k, c["n"], pct(c["bpcer"]), pct(c["bpcer_off"]), pct(c["bpcer_liveness"]), secs(c["open_s"]),
             secs(c["open_off_s"]), secs(c["rise_s"])] + [pct(c["refused"][r]) for r in REASONS]
            for k, c in kinds.items() if k in LIVES]
    print(table(rows, ["live", "sequences", "BPCER (on)", "BPCER (off)", "BPCER of liveness",
                       "median open (on)", "(off)", "median rise"] + [f"never opened: {r}" for r in REASONS]))
    print()
    print(table(verdicts(kinds), ["target", "measured", "goal", "verdict"]))


def sweep_plan(spec: str) -> tuple[str, list[tuple[float, object]]]:
    """FIELD=v1,v2,... -> (FIELD, [(value, LivenessOptions)]), checked before the long run starts."""
    from edge.errors import ConfigError
    from edge.vision.liveness import LivenessOptions

    name, _, values = spec.partition("=")
    known = {f.name: f.type for f in fields(LivenessOptions)}
    if name not in known or not values:
        raise SystemExit(f"--sweep {spec!r}: expected FIELD=v1,v2,... with FIELD one of {', '.join(known)}")
    cast = int if known[name] in (int, "int") else float
    try:
        return name, [(cast(v), LivenessOptions(enabled=True, **{name: cast(v)}).validate()) for v in values.split(",")]
    except (ValueError, ConfigError) as exc:
        raise SystemExit(f"--sweep {spec!r}: {exc}") from None


def enrol_and_sequences(pipeline, enrol: np.ndarray, photo: np.ndarray, rng, per_person: dict | None = None):
    """(the embedding from `enrol`, the sequences of `photo`), or None when either has no usable face."""
    from edge.errors import NoFaceError

    try:
        emb = pipeline.embed_image(enrol)
    except NoFaceError:
        return None
    face = pipeline.subject(photo).face
    if face is None or face.mesh is None:
        return None
    return emb, sequences(photo, face.mesh.astype(np.float64), rng, per_person)


def run_attacks(root, bundle, people: int | None = 40, threads: int = 2, seed: int = 0, portraits: bool = True,
                per_person: dict | None = None, progress: bool = False) -> tuple[dict, list]:
    """Every person's sequences scored (convert/bench/attacks.py): (figures, the scored sequences)."""
    import tempfile
    from pathlib import Path

    from convert.bench.door import door_people
    from convert.bench.util import bar
    from convert.demo_faces import load_portraits
    from edge.identity.gallery import Gallery
    from edge.identity.match import Matcher
    from edge.images import read_image_rgb
    from edge.models.bundle import load_bundle
    from edge.vision.build import bundle_stages
    from edge.vision.liveness import LivenessCheck, LivenessOptions

    b = load_bundle(bundle)
    threshold = b.threshold.cosine
    stages = bundle_stages(b, num_threads=threads, use_edgetpu=False)
    pipeline = stages.pipeline(liveness=LivenessCheck(LivenessOptions(enabled=True)))
    todo = [(name, image, image) for name, image in (load_portraits().items() if portraits else ())]
    todo += [(p.name, p.enrol, p.probe) for p in (door_people(Path(root), people, seed) if people else [])]
    rng = np.random.default_rng(seed)
    scored, skipped = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, enrol, photo) in enumerate(bar(todo, "attack sequences", progress)):
            enrol, photo = (read_image_rgb(x) if isinstance(x, Path) else x for x in (enrol, photo))
            made = enrol_and_sequences(pipeline, enrol, photo, rng, per_person)
            if made is None:
                skipped.append(name)
                continue
            with Gallery(Path(tmp) / f"{i}.db") as gallery:
                gallery.enroll(name, made[0][None])
                pipeline.matcher = Matcher(gallery)
                scored += [score(pipeline, seq, name) for seq in made[1]]
    res = {"people": len(todo) - len(skipped), "skipped": skipped, "sequences": len(scored),
           "threshold": threshold, "placed": sum(s.placed for s in scored) / max(1, sum(s.frames for s in scored)),
           "kinds": summarise(scored, threshold), "bundle": str(bundle), "source": str(root)}
    check = LivenessCheck(LivenessOptions(enabled=True))
    res["each"] = [{"kind": s.kind, "person": s.person, "width_px": round(s.width_px, 1), "frames": s.frames,
                    "placed": s.placed, "on": decide(s.trace, threshold, check), "off": decide(s.trace, threshold, None)}
                   for s in scored]
    return res, scored


def run_challenge(root, bundle, people: int | None, threads: int, seed: int, portraits: bool,
                  scored: list, progress: bool = False) -> dict:
    """The challenge section (convert/bench/challenge.py): owners answering and blind video replays played
    frame by frame against the lock, and the attack traces of `scored` re-decided with the challenge."""
    import random
    import tempfile

    from convert.bench.challenge import played, summarise_played
    from convert.bench.door import door_people
    from convert.bench.util import bar
    from convert.demo_faces import load_portraits
    from edge.errors import NoFaceError
    from edge.identity.gallery import Gallery
    from edge.identity.match import Matcher
    from edge.images import read_image_rgb
    from edge.models.bundle import load_bundle
    from edge.vision.build import bundle_stages
    from edge.vision.challenge import ChallengeJudge, ChallengeOptions
    from edge.vision.liveness import LivenessCheck, LivenessOptions

    b = load_bundle(bundle)
    threshold = b.threshold.cosine
    pipeline = bundle_stages(b, num_threads=threads, use_edgetpu=False).pipeline(
        liveness=LivenessCheck(LivenessOptions(enabled=True)))
    todo = [(name, image, image) for name, image in (load_portraits().items() if portraits else ())]
    todo += [(p.name, p.enrol, p.probe) for p in (door_people(Path(root), people, seed) if people else [])]
    rng = np.random.default_rng(seed + 1)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, enrol, photo) in enumerate(bar(todo, "challenge attempts", progress)):
            enrol, photo = (read_image_rgb(x) if isinstance(x, Path) else x for x in (enrol, photo))
            try:
                emb = pipeline.embed_image(enrol)
            except NoFaceError:
                continue
            face = pipeline.subject(photo).face
            if face is None or face.mesh is None:
                continue
            with Gallery(Path(tmp) / f"{i}.db") as gallery:
                gallery.enroll(name, emb[None])
                pipeline.matcher = Matcher(gallery)
                results += played(pipeline, photo, face.mesh.astype(np.float64), name, threshold, rng)
    res = {"kinds": summarise_played(results), "attacks": {}}
    for passive in (False, True):
        for kind in ATTACKS:
            rows = [s for s in scored if s.kind == kind]
            if not rows:
                continue
            opened = sum(decide(s.trace, threshold, ChallengeJudge(
                ChallengeOptions(enabled=True), LivenessCheck(LivenessOptions(enabled=True)) if passive else None,
                random.Random(j)))[0] is not None for j, s in enumerate(rows))
            res["attacks"].setdefault(kind, {})["passive_on" if passive else "challenge_only"] = opened / len(rows)
            res["attacks"][kind]["n"] = len(rows)
    return res


def print_challenge(res: dict) -> None:
    from convert.bench.challenge import OWNER_ANSWERS, OWNER_STILL, VIDEO

    k = res["kinds"]
    rows = [[kind, c["n"], pct(c["opened"]), secs(c["open_s"]), secs(c["answer_s"])] for kind, c in k.items()]
    print(table(rows, ["played against the lock (challenge on)", "attempts", "opened", "median time to open",
                       "median from the challenge"]))
    owner, video = k.get(OWNER_ANSWERS), k.get(VIDEO)
    if owner:
        asked = ", ".join(f"{a} {n}" for a, n in owner["asked"].items())
        print(f"owner answers: BPCER {pct(owner['bpcer'])}, median rise over the same person without the "
              f"challenge {secs(owner['rise_s'])}; asked: {asked}")
        for why in owner["failed_why"]:
            print(f"  not opened: {why}")
    if video:
        print(f"video replay: APCER {pct(video['apcer'])} (its move was the one asked in "
              f"{pct(video['move_was_asked'])})")
    print()
    rows = [[kind, c["n"], pct(c["challenge_only"]), pct(c["passive_on"])] for kind, c in res["attacks"].items()]
    print(table(rows, ["attack", "sequences", "APCER: challenge alone", "APCER: challenge + passive"]))
    print()
    prints = [res["attacks"][x][y] * res["attacks"][x]["n"] for x in (PRINT_MOVING, PRINT_STILL)
              if x in res["attacks"] for y in ("challenge_only",)]
    n_prints = sum(res["attacks"][x]["n"] for x in (PRINT_MOVING, PRINT_STILL) if x in res["attacks"])
    screens = [x for x in ATTACKS if x.startswith("screen") and x in res["attacks"]]
    n_screens = sum(res["attacks"][x]["n"] for x in screens)
    p_apcer = sum(prints) / n_prints if n_prints else None
    s_apcer = sum(res["attacks"][x]["challenge_only"] * res["attacks"][x]["n"] for x in screens) / n_screens \
        if n_screens else None
    still = k.get(OWNER_STILL)
    verdict = lambda x, goal: "–" if x is None else ("PASS" if x <= goal else "FAIL")
    target_rows = [
        ["print attacks: APCER (challenge)", pct(p_apcer), "<= 1%", verdict(p_apcer, 0.01)],
        ["screen replays of a photo: APCER (challenge)", pct(s_apcer), "<= 5%", verdict(s_apcer, 0.05)],
        ["owner answering: BPCER", pct(owner and owner["bpcer"]), "<= 5%", verdict(owner and owner["bpcer"], 0.05)],
        ["owner: median rise in time to open", secs(owner and owner["rise_s"]), "<= 1.0 s",
         verdict(owner and owner["rise_s"], 1.0)],
        ["(baseline: owner without the challenge opened)", pct(still and still["opened"]), "", ""],
    ]
    print(table(target_rows, ["target (challenge on)", "measured", "goal", "verdict"]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", default="out/full/bundle", help="model bundle (default out/full/bundle)")
    ap.add_argument("--lfw", help="LFW folder (default ../shared/data/lfw)")
    ap.add_argument("--people", type=int, default=40, help="LFW test people, drawn at random (default 40; 0: "
                    "the two portraits only)")
    ap.add_argument("--no-portraits", action="store_true", help="LFW people only")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sweep", action="append", default=[], metavar="FIELD=v1,v2,...",
                    help="also decide the same frames with these values of a LivenessOptions field (repeatable)")
    ap.add_argument("--challenge", action="store_true",
                    help="also play the active challenge: owners answering it, blind video replays, and the "
                    "prints and screens re-decided with it (convert/bench/challenge.py)")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args()
    bundle = Path(args.bundle)
    if not (bundle / "manifest.json").is_file():
        raise SystemExit(f"{bundle}: no bundle there; run `facelock convert` first (or pass --bundle)")
    plans = [sweep_plan(spec) for spec in args.sweep]
    m = machine()
    print(f"machine: {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable), SIMD: {m['simd'] or 'n/a'}; "
          f"load {m['load_1min']}")
    root = lfw_dir(args.lfw) if args.people else Path(args.lfw or ".")
    res, scored = run_attacks(root, bundle, args.people, args.threads, args.seed, not args.no_portraits,
                              progress=True)
    res["machine"] = m
    print(f"{res['people']} people ({'the 2 portraits + ' if not args.no_portraits else ''}LFW test people, "
          f"sequences from photo 2, enrolled from photo 1), {res['sequences']} sequences; bundle threshold "
          f"{res['threshold']:.4f}; subject where the face was put in {pct(res['placed'])} of the frames"
          + (f"; skipped (no usable face): {', '.join(res['skipped'])}" if res["skipped"] else ""))
    print_figures(res)
    res["sweeps"] = {}
    for name, plan in plans:
        rows = [{"value": v, "kinds": summarise(scored, res["threshold"], o)} for v, o in plan]
        res["sweeps"][name] = rows
        print()
        print(table([[r["value"], pct(pooled(r["kinds"], (PRINT_MOVING, PRINT_STILL), "accepted")),
                      pct(pooled(r["kinds"], [k for k in ATTACKS if k.startswith("screen")], "accepted")),
                      pct(pooled(r["kinds"], LIVES, "bpcer")), pct(live_bpcer_liveness(r["kinds"])),
                      secs(max((r["kinds"][k]["rise_s"] for k in LIVES
                                if k in r["kinds"] and r["kinds"][k]["rise_s"] is not None), default=None))]
                     for r in rows],
                    [f"liveness.{name}", "print APCER", "screen APCER", "live BPCER", "BPCER of liveness",
                     "worst median rise"]))
    if args.challenge:
        print()
        res["challenge"] = run_challenge(root, bundle, args.people, args.threads, args.seed, not args.no_portraits,
                                         scored, progress=True)
        print_challenge(res["challenge"])
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
