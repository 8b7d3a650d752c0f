"""Presentation attacks: do prints and screens of an enrolled person open the door, and what does the
passive liveness check cost the owner?

    .venv/bin/python benchmarks/attacks.py [--bundle out/full/bundle] [--people N] [--json OUT]
        [--sweep live_parallax=0.03,0.035,0.04] [--challenge] [--condition low_light]

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

from common import lfw_dir, table

from convert.bench.attack_section import (
    challenge_verdicts,
    live_bpcer_liveness,
    pct,
    pooled,
    run_attacks,
    run_challenge,
    secs,
    verdicts,
)
from convert.bench.attacks import ATTACKS, LIVES, PRINT_MOVING, PRINT_STILL, summarise
from convert.bench.door import CONDITIONS
from convert.bench.machine import machine
from edge.types import FaceCondition

REASONS = ("planar", "static", "undecided", "not recognised")


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


def print_challenge(res: dict) -> None:
    from convert.bench.challenge import OWNER_ANSWERS, VIDEO

    k = res["kinds"]
    rows = [[kind, c["n"], pct(c["opened"]), secs(c["open_s"]), secs(c["answer_s"])] for kind, c in k.items()]
    print(table(rows, ["played against the lock (challenge on)", "attempts", "opened", "median time to open",
                       "median from the challenge"]))
    owner, video = k.get(OWNER_ANSWERS), k.get(VIDEO)
    if owner:
        asked = ", ".join(f"{a} {n}" for a, n in owner["asked"].items())
        print(f"owner answers: BPCER {pct(owner['bpcer'])} (of the people opened for without the challenge: "
              f"{pct(owner['bpcer_challenge'])}), median rise over the same person without the "
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
    print(table(challenge_verdicts(res), ["target (challenge on)", "measured", "goal", "verdict"]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", default="out/full/bundle", help="model bundle (default out/full/bundle)")
    ap.add_argument("--lfw", help="LFW folder (default ../shared/data/lfw)")
    ap.add_argument("--people", type=int, default=40, help="LFW test people, drawn at random (default 40; 0: "
                    "the two portraits only)")
    ap.add_argument("--no-portraits", action="store_true", help="LFW people only")
    ap.add_argument("--split", choices=("test", "train"), default="test",
                    help="LFW people to draw: test (default: the figures to report) or train (to tune the "
                    "checks' settings on, as ../shared/data/INDEX.md requires)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sweep", action="append", default=[], metavar="FIELD=v1,v2,...",
                    help="also decide the same frames with these values of a LivenessOptions field (repeatable)")
    ap.add_argument("--challenge", action="store_true",
                    help="also play the active challenge: owners answering it, blind video replays, and the "
                    "prints and screens re-decided with it (convert/bench/challenge.py)")
    ap.add_argument("--condition", choices=tuple(CONDITIONS), default="clean",
                    help="the picture every frame is taken in (convert/bench/door.py CONDITIONS; default clean): "
                    "low_light is a porch at dusk, where the lock tries dim faces at its dim-light threshold")
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
                              progress=True, split=args.split, condition=args.condition)
    res["machine"] = m
    print(f"{res['people']} people ({'the 2 portraits + ' if not args.no_portraits else ''}LFW {args.split} people, "
          f"sequences from photo 2, enrolled from photo 1), {res['sequences']} sequences; bundle threshold "
          f"{res['threshold']:.4f} (dim faces: {res['dim_threshold']:.4f}, soft: {res['soft_threshold']:.4f}); picture: {res['condition']}; subject "
          f"where the face was put in {pct(res['placed'])} of the frames"
          + (f"; skipped (no usable face): {', '.join(res['skipped'])}" if res["skipped"] else ""))
    print_figures(res)
    res["sweeps"] = {}
    bars = {FaceCondition.DIM: res["dim_threshold"], FaceCondition.SOFT: res["soft_threshold"]}
    for name, plan in plans:
        rows = [{"value": v, "kinds": summarise(scored, res["threshold"], o, bars)} for v, o in plan]
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
                                         scored, progress=True, split=args.split)
        print_challenge(res["challenge"])
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
