"""Presentation attacks in `facelock bench` (section 8) and in benchmarks/attacks.py: run the attack
benchmark (convert/bench/attacks.py: prints, screens and live-like heads, scored through the bundle's
stages and decided with the passive liveness checks on and off) and the challenge benchmark
(convert/bench/challenge.py: owners answering, blind video replays, the attack traces re-decided with the
challenge), check them against issue 14's targets, render the markdown."""

from __future__ import annotations

from pathlib import Path

import numpy as np

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
from convert.bench.util import say
from edge.types import FaceCondition

QUICK_PER_PERSON = {PRINT_MOVING: 1, PRINT_STILL: 1, "screen, hand-held": 1, LIVES[0]: 1}
QUICK_CHALLENGE = {"owner, no challenge": 1, "owner answers": 1, "video replay": 1}
FULL_PEOPLE = 20  # LFW test people in `facelock bench` (benchmarks/attacks.py --people for more)


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


def challenge_verdicts(res: dict) -> list[list[str]]:
    """Issue 14's targets with the challenge on: prints and screens (re-decided), the owner answering."""
    from convert.bench.challenge import OWNER_ANSWERS, OWNER_STILL

    k, a = res["kinds"], res["attacks"]
    prints = [x for x in (PRINT_MOVING, PRINT_STILL) if x in a]
    screens = [x for x in ATTACKS if x.startswith("screen") and x in a]
    share = lambda names: (sum(a[x]["challenge_only"] * a[x]["n"] for x in names)
                           / sum(a[x]["n"] for x in names)) if names else None
    owner, still = k.get(OWNER_ANSWERS) or {}, k.get(OWNER_STILL) or {}
    verdict = lambda x, goal: "–" if x is None else ("PASS" if x <= goal else "FAIL")
    p, s, bp, rise = share(prints), share(screens), owner.get("bpcer_challenge"), owner.get("rise_s")
    return [["print attacks: APCER (challenge)", pct(p), "<= 1%", verdict(p, 0.01)],
            ["screen replays of a photo: APCER (challenge)", pct(s), "<= 5%", verdict(s, 0.05)],
            ["owner answering: BPCER of the challenge (opened without it, not with it)", pct(bp), "<= 5%",
             verdict(bp, 0.05)],
            ["owner: median rise in time to open", secs(rise), "<= 1.0 s", verdict(rise, 1.0)],
            ["(baseline: owner without the challenge opened)", pct(still.get("opened")), "", ""]]


def enrolled(root, bundle, people: int | None, threads: int, seed: int, portraits: bool, label: str,
             progress: bool = False, skipped: list | None = None, split: str = "test"):
    """The bundle's pipeline (with the passive liveness stage), then per person with a usable face in both
    photos (the portraits: one photo; LFW people of `split`: photo 1 enrolled, photo 2 shown): (name, the
    photo shown, its landmark mesh), with that person alone enrolled in the pipeline's matcher while the
    caller works on them. A generator: the first item is (pipeline, threshold, dim-light threshold), the
    pipeline with the lock's quality gates for the bundle (edge.service.operating_point). Names without a
    usable face go to `skipped`."""
    import tempfile

    from convert.bench.door import door_people
    from convert.bench.util import bar
    from convert.demo_faces import load_portraits
    from edge.errors import NoFaceError
    from edge.identity.gallery import Gallery
    from edge.identity.match import Matcher
    from edge.images import read_image_rgb
    from edge.models.bundle import load_bundle
    from edge.service.config import default_config
    from edge.service.operating_point import operating_point
    from edge.vision.build import bundle_stages
    from edge.vision.liveness import LivenessCheck, LivenessOptions
    from edge.vision.quality import QualityGate

    b = load_bundle(bundle)
    decide, quality = operating_point(default_config(), b)
    pipeline = bundle_stages(b, num_threads=threads, use_edgetpu=False).pipeline(
        QualityGate(quality), liveness=LivenessCheck(LivenessOptions(enabled=True)))
    yield pipeline, decide.threshold, decide.bars
    todo = [(name, image, image) for name, image in (load_portraits().items() if portraits else ())]
    todo += [(p.name, p.enrol, p.probe) for p in (door_people(Path(root), people, seed, split) if people else [])]
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, enrol, photo) in enumerate(bar(todo, label, progress)):
            enrol, photo = (read_image_rgb(x) if isinstance(x, Path) else x for x in (enrol, photo))
            try:
                emb = pipeline.embed_image(enrol)
            except NoFaceError:
                emb = None
            face = pipeline.subject(photo).face if emb is not None else None
            if face is None or face.mesh is None:
                if skipped is not None:
                    skipped.append(name)
                continue
            with Gallery(Path(tmp) / f"{i}.db") as gallery:
                gallery.enroll(name, emb[None])
                pipeline.matcher = Matcher(gallery)
                yield name, photo, face.mesh.astype(np.float64)


def run_attacks(root, bundle, people: int | None = 40, threads: int = 2, seed: int = 0, portraits: bool = True,
                per_person: dict | None = None, progress: bool = False, split: str = "test",
                condition: str = "clean") -> tuple[dict, list]:
    """Every person's sequences scored (convert/bench/attacks.py): (figures, the scored sequences); LFW
    people of `split` (`train` to tune the checks on, `test` to report); every frame in the picture
    `condition` (convert.bench.door.CONDITIONS: `low_light` is a porch at dusk)."""
    from edge.vision.liveness import LivenessCheck, LivenessOptions

    skipped: list[str] = []
    people_iter = enrolled(root, bundle, people, threads, seed, portraits, "attack sequences", progress, skipped,
                           split)
    pipeline, threshold, bars = next(people_iter)
    rng = np.random.default_rng(seed)
    scored, n_people = [], 0
    for name, photo, mesh in people_iter:
        scored += [score(pipeline, seq, name) for seq in sequences(photo, mesh, rng, per_person, condition)]
        n_people += 1
    res = {"people": n_people, "skipped": skipped, "sequences": len(scored), "condition": condition,
           "threshold": threshold, "dim_threshold": bars[FaceCondition.DIM],
           "soft_threshold": bars[FaceCondition.SOFT],
           "placed": sum(s.placed for s in scored) / max(1, sum(s.frames for s in scored)),
           "kinds": summarise(scored, threshold, bars=bars), "bundle": str(bundle),
           "source": str(root)}
    check = LivenessCheck(LivenessOptions(enabled=True))
    res["each"] = [{"kind": s.kind, "person": s.person, "width_px": round(s.width_px, 1), "frames": s.frames,
                    "placed": s.placed, "on": decide(s.trace, threshold, check, bars),
                    "off": decide(s.trace, threshold, None, bars)}
                   for s in scored]
    return res, scored


def run_challenge(root, bundle, people: int | None, threads: int, seed: int, portraits: bool,
                  scored: list, progress: bool = False, per_person: dict | None = None, split: str = "test") -> dict:
    """The challenge section (convert/bench/challenge.py): owners answering and blind video replays played
    frame by frame against the lock, and the attack traces of `scored` re-decided with the challenge."""
    import random

    from convert.bench.challenge import played, summarise_played
    from edge.vision.challenge import ChallengeJudge, ChallengeOptions
    from edge.vision.liveness import LivenessCheck, LivenessOptions

    people_iter = enrolled(root, bundle, people, threads, seed, portraits, "challenge attempts", progress, split=split)
    pipeline, threshold, bars = next(people_iter)
    rng = np.random.default_rng(seed + 1)
    results = []
    for name, photo, mesh in people_iter:
        results += played(pipeline, photo, mesh, name, threshold, rng, per_person, bars=bars)
    res = {"kinds": summarise_played(results), "attacks": {}}
    for passive in (False, True):
        for kind in ATTACKS:
            rows = [s for s in scored if s.kind == kind]
            if not rows:
                continue
            opened = sum(decide(s.trace, threshold, ChallengeJudge(
                ChallengeOptions(enabled=True), LivenessCheck(LivenessOptions(enabled=True)) if passive else None,
                random.Random(j)), bars)[0] is not None for j, s in enumerate(rows))
            res["attacks"].setdefault(kind, {})["passive_on" if passive else "challenge_only"] = opened / len(rows)
            res["attacks"][kind]["n"] = len(rows)
    return res


def attacks(opts, ds, conv) -> dict:
    """`facelock bench` section 8 on the run's main bundle: the attack benchmark and the challenge (quick:
    the two demo portraits, one sequence of each main kind; full: the portraits and FULL_PEOPLE LFW test
    people)."""
    people = 0 if opts.quick else FULL_PEOPLE
    root = Path(opts.lfw or ds.pairs.parent) if people else Path(".")
    per_person = QUICK_PER_PERSON if opts.quick else None
    threads = max(opts.threads)
    say(f"presentation attacks: the 2 portraits{f' and {people} LFW test people' if people else ''}")
    res, scored = run_attacks(root, bundle=conv.bundle, people=people, threads=threads, per_person=per_person,
                              progress=opts.progress)
    res.pop("each", None)
    res["challenge"] = run_challenge(root, conv.bundle, people, threads, 0, True, scored, opts.progress,
                                     QUICK_CHALLENGE if opts.quick else None)
    res["quick"] = opts.quick
    return res


def render_attacks(res: dict) -> list[str]:
    from convert.bench.attacks import __doc__ as method
    from convert.bench.challenge import __doc__ as challenge_method

    def md(header, rows):
        return "\n".join(["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
                         + ["| " + " | ".join(str(x) for x in r) + " |" for r in rows])

    kinds = res["kinds"]
    L = ["## 8. Presentation attacks", "",
         "How it was measured (convert/bench/attacks.py): " + " ".join(method.split("\n\n")[1].split()), "",
         f"{res['people']} people, {res['sequences']} sequences; bundle threshold {res['threshold']:.4f}.", ""]
    if res.get("quick"):
        L += ["**Quick mode: the two demo portraits, one sequence of each kind: plumbing, not figures.**", ""]
    L.append(md(["attack", "sequences", "APCER, passive liveness on", "opened with liveness off"],
                [[k, c["n"], pct(c["accepted"]), pct(c["accepted_off"])] for k, c in kinds.items() if k in ATTACKS]))
    L += ["", md(["live-like", "sequences", "BPCER (on)", "BPCER (off)", "median open (on)", "median rise"],
                 [[k, c["n"], pct(c["bpcer"]), pct(c["bpcer_off"]), secs(c["open_s"]), secs(c["rise_s"])]
                  for k, c in kinds.items() if k in LIVES]),
          "", md(["target (passive liveness)", "measured", "goal", "verdict"], verdicts(kinds)), ""]
    ch = res.get("challenge")
    if ch:
        L += ["**The active challenge** (convert/bench/challenge.py): "
              + " ".join(challenge_method.split("\n\n")[1].split()), "",
              md(["played against the lock", "attempts", "opened", "median time to open", "median from the challenge"],
                 [[k, c["n"], pct(c["opened"]), secs(c["open_s"]), secs(c["answer_s"])] for k, c in ch["kinds"].items()]),
              "", md(["attack", "sequences", "APCER: challenge alone", "APCER: challenge + passive"],
                     [[k, c["n"], pct(c["challenge_only"]), pct(c["passive_on"])] for k, c in ch["attacks"].items()]),
              "", md(["target (challenge on)", "measured", "goal", "verdict"], challenge_verdicts(ch)), ""]
    return L
