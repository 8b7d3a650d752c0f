"""Section: security figures, facelock against face_recognition on the same images in one run.

1. **Verification over all pairs** of LFW `test` people: every image against every other one (about 20
   million impostor pairs for 6,311 images): TAR at FAR 1e-3 / 1e-4 / 1e-5. A face that is not found never
   verifies: its pairs count as rejected, genuine and impostor alike.
2. **The household**: 10 enrolled people with one photo each, every other `test` person a stranger.
   Many households are drawn (seeded); the threshold is set on the pooled stranger attempts so that a
   stranger is accepted at the given rate per attempt (1e-3 / 1e-4), and the identification rate is the
   share of the enrolled people's other photos that come out as the right person above it.
3. **Strangers against the real decider**: each stranger stands at the door of a household and makes
   attempts, frame streams of their own photos (cycled; a person with one photo holds it still), through
   the real `Matcher` and `Decider` (k of n, margin, lockout) at the bundle's threshold. Reported: door
   openings per million stranger attempts, and how many attempts the lockout leaves an attacker per day.
   The peer has no decider: as face_recognition is used (one frame within its 0.6 tolerance opens), on the
   same streams.

Scores: facelock's cosine; the peer's own, -Euclidean distance.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FARS = (1e-3, 1e-4, 1e-5)
HOUSEHOLD_RATES = (1e-3, 1e-4)
HOUSEHOLD_SIZE = 10
PEER_TOLERANCE = 0.6  # face_recognition.compare_faces' default


@dataclass(frozen=True)
class Embedded:
    """One pipeline's embeddings of a set of images: rows of `e` are unit vectors (cosine) or dlib
    descriptors (euclidean); `found` False where no face was found; `labels` the person index per image."""

    e: np.ndarray  # (N, D) float32
    found: np.ndarray  # (N,) bool
    labels: np.ndarray  # (N,) int
    kind: str  # "cosine" or "euclidean"

    def scores(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Scores of images `rows` against images `cols` (higher = more alike), -inf where a face is missing."""
        a, b = self.e[rows].astype(np.float64), self.e[cols].astype(np.float64)
        if self.kind == "cosine":
            s = a @ b.T
        else:
            d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
            s = -np.sqrt(np.maximum(d2, 0))
        s[~self.found[rows], :] = -np.inf
        s[:, ~self.found[cols]] = -np.inf
        return s


def _threshold_at(impostors: np.ndarray, rate: float) -> float:
    """The score above which at most `rate` of the impostor scores lie (accept when score > it)."""
    k = math.floor(rate * len(impostors))
    if k >= len(impostors):
        return -np.inf
    return float(np.partition(impostors, len(impostors) - 1 - k)[len(impostors) - 1 - k])


def verification_all_pairs(emb: Embedded, fars: tuple[float, ...] = FARS, block: int = 1024) -> dict:
    """TAR at each FAR over all pairs i < j, exactly: the highest impostor scores (as many as the largest FAR
    can accept) are collected block by block, so memory stays at one block of the similarity matrix."""
    n = len(emb.labels)
    n_imp = 0
    genuine: list[np.ndarray] = []
    k_max = math.floor(max(fars) * (n * (n - 1) // 2)) + 1
    top = np.empty(0)
    for start in range(0, n, block):
        rows = np.arange(start, min(start + block, n))
        cols = np.arange(start, n)
        s = emb.scores(rows, cols)
        upper = cols[None, :] > rows[:, None]
        same = emb.labels[rows][:, None] == emb.labels[cols][None, :]
        genuine.append(s[upper & same])
        imp = s[upper & ~same]
        n_imp += imp.size
        both = np.concatenate([top, imp[np.isfinite(imp)]])
        top = both if both.size <= k_max else np.partition(both, both.size - k_max)[-k_max:]
    gen = np.concatenate(genuine)
    top_sorted = np.sort(top)[::-1]
    out = {"images": n, "genuine_pairs": int(gen.size), "impostor_pairs": int(n_imp),
           "faces_not_found": int((~emb.found).sum()), "tar": {}}
    for far in fars:
        k = math.floor(far * n_imp)
        t = top_sorted[k] if k < top_sorted.size else -np.inf
        out["tar"][f"{far:g}"] = {"threshold": float(t), "tar": float((gen > t).mean()) if gen.size else None,
                                  "impostors_accepted": int((top_sorted > t).sum())}
    return out


def households(labels: np.ndarray, found: np.ndarray, count: int, size: int = HOUSEHOLD_SIZE,
               seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """`count` households: (people, their enrolment image index), drawn from people with >= 2 images."""
    rng = np.random.default_rng(seed)
    by_person: dict[int, np.ndarray] = {}
    for p in np.unique(labels):
        idx = np.flatnonzero((labels == p) & found)
        if len(idx) >= 2:
            by_person[int(p)] = idx
    eligible = np.array(sorted(by_person))
    out = []
    for _ in range(count):
        people = rng.choice(eligible, size, replace=False)
        # Enrol a photo whose face was found (`found`: by both pipelines, so both enrol the same photo), as a
        # user would: an enrolment that finds no face is retried with another photo.
        enrol = np.array([rng.choice(by_person[p]) for p in people])
        out.append((people, enrol))
    return out


def household_identification(emb: Embedded, homes: list[tuple[np.ndarray, np.ndarray]],
                             rates: tuple[float, ...] = HOUSEHOLD_RATES) -> dict:
    stranger_best: list[np.ndarray] = []
    genuine_best: list[np.ndarray] = []
    genuine_right: list[np.ndarray] = []
    everyone = np.arange(len(emb.labels))
    for people, enrol in homes:
        s = emb.scores(everyone, enrol)  # (N, 10)
        best = s.max(axis=1)
        who = people[s.argmax(axis=1)]
        member = np.isin(emb.labels, people)
        probe = member & ~np.isin(everyone, enrol)
        stranger = ~member & emb.found  # an attempt needs a face the pipeline sees
        stranger_best.append(best[stranger])
        genuine_best.append(best[probe])
        genuine_right.append(who[probe] == emb.labels[probe])
    sb, gb, gr = np.concatenate(stranger_best), np.concatenate(genuine_best), np.concatenate(genuine_right)
    out = {"households": len(homes), "stranger_attempts": int(sb.size), "genuine_probes": int(gb.size),
           "rates": {}}
    for rate in rates:
        t = _threshold_at(sb, rate)
        out["rates"][f"{rate:g}"] = {"threshold": t, "identification": float(((gb > t) & gr).mean()),
                                     "strangers_accepted": int((sb > t).sum())}
    return out


def _stream(images: np.ndarray, attempt: int, frames: int) -> np.ndarray:
    return images[(attempt * frames + np.arange(frames)) % len(images)]


def strangers_at_the_door(emb: Embedded, homes: list[tuple[np.ndarray, np.ndarray]], threshold: float,
                          decide_options=None, attempts: int = 5, frames: int = 10, fps: float = 10.0,
                          peer_rule: bool = False) -> dict:
    """Stranger attempts through the real decider (or, with `peer_rule`, face_recognition's one-frame rule
    at `threshold` = -tolerance). Each stranger of each household makes `attempts` attempts of `frames`
    frames, with a pause between attempts long enough to end one."""
    from edge.identity.decide import DecideOptions

    opts = decide_options or DecideOptions()
    opts = DecideOptions(**{**opts.__dict__, "threshold": threshold}) if not peer_rule else opts
    opened = tried = 0
    # Hundreds of thousands of simulated lockouts: the decider's warning for each is not news here.
    quiet = logging.getLogger("edge.identity.decide")
    level, quiet.level = quiet.level, logging.ERROR
    try:
        opened, tried = _stranger_attempts(emb, homes, threshold, opts, attempts, frames, fps, peer_rule)
    finally:
        quiet.setLevel(level)
    out = {"attempts": tried, "opened": opened, "per_million": opened / tried * 1e6 if tried else None,
           "per_million_upper95": _upper95(opened, tried) * 1e6 if tried else None,
           "frames_per_attempt": frames}
    if not peer_rule:
        out["attempts_per_day_under_lockout"] = attempts_per_day(opts)
    return out


def _stranger_attempts(emb, homes, threshold, opts, attempts, frames, fps, peer_rule) -> tuple[int, int]:
    from edge.identity.decide import Decider, Outcome
    from edge.identity.match import Match

    opened = tried = 0
    for people, enrol in homes:
        member = np.isin(emb.labels, people)
        strangers = np.unique(emb.labels[~member & emb.found])
        for person in strangers:
            images = np.flatnonzero((emb.labels == person) & emb.found)
            decider = None if peer_rule else Decider(opts)
            now = 0.0
            for a in range(attempts):
                idx = _stream(images, a, frames)
                s = emb.scores(idx, enrol)  # (frames, 10)
                tried += 1
                if peer_rule:
                    opened += bool((s.max(axis=1) > threshold).any())
                    continue
                order = np.argsort(-s, axis=1)
                accepted = False
                for f in range(frames):
                    best = s[f, order[f, 0]]
                    two = s.shape[1] > 1  # a household of one has no runner-up
                    second = s[f, order[f, 1]] if two else -1.0
                    match = Match(person=str(people[order[f, 0]]), score=float(best),
                                  runner_up=str(people[order[f, 1]]) if two else None,
                                  runner_up_score=float(second),
                                  negative_score=-1.0, margin=float(best - second))
                    d = decider.update(match, now)
                    now += 1.0 / fps
                    accepted |= d.outcome == Outcome.ACCEPT
                opened += accepted
                # Leave the door long enough to end the attempt (a failure that counts toward lockout), and
                # wait out a lockout: the figure is per attempt the decider actually judged.
                now += opts.attempt_gap_s + 0.5
                decider.update(None, now)
                if decider.locked_until is not None:
                    now = max(now, decider.locked_until) + 1.0
    return opened, tried


def attempts_per_day(opts) -> float:
    """Failed attempts an attacker can make in 24 h against the lockout at its longest back-off: bursts of
    `lockout_failures` attempts, each burst followed by a lockout of `lockout_max_s`."""
    burst_s = opts.lockout_failures * (opts.attempt_max_s + opts.attempt_gap_s)
    return 86400.0 / (burst_s + opts.lockout_max_s) * opts.lockout_failures


def _upper95(k: int, n: int) -> float:
    """One-sided 95% upper bound of a rate seen k times in n (Clopper-Pearson; 3/n when k = 0)."""
    if n == 0:
        return float("nan")
    if k == 0:
        return 3.0 / n
    from scipy.stats import beta

    return float(beta.ppf(0.95, k + 1, n - k))


def test_people_files(lfw: Path) -> tuple[list[str], np.ndarray]:
    """Every image of every LFW `test` person: (relative paths, person index per image)."""
    from convert.datasets import people_of_split

    people = people_of_split(lfw, "test")
    files, labels = [], []
    for i, name in enumerate(people):
        for f in sorted((lfw / name).glob("*.jpg"), key=lambda p: int(p.stem) if p.stem.isdigit() else 0):
            files.append(f"{name}/{f.name}")
            labels.append(i)
    return files, np.array(labels)


def _embed_ours(stages, lfw: Path, files: list[str], progress: bool) -> tuple[np.ndarray, np.ndarray]:
    from convert.bench.util import bar
    from convert.datasets import build_chipset

    chipset = build_chipset(lfw, [lfw / f for f in files], stages.pipeline(), min_faces=1, progress=progress)
    at = {f: i for i, f in enumerate(chipset.files)}
    found = np.array([f in at for f in files])
    dim = stages.embedder.embed(chipset.chips[:1]).shape[1]
    e = np.zeros((len(files), dim), np.float32)
    step = 64
    rows = [at[f] for f in files if f in at]
    out = np.concatenate([stages.embedder.embed(chipset.chips[rows[i:i + step]])
                          for i in bar(range(0, len(rows), step), "security: embedding", progress)])
    e[found] = out
    return e, found


def security(opts, ds, conv, peer_ok: bool, homes_count: int = 100, attempts: int = 5) -> dict:
    """The section for `facelock bench` (full mode: LFW test people; quick mode: the demo faces)."""
    from convert.bench.accuracy import _cached_embeddings, _file_key, run_peer_embeddings
    from convert.bench.util import say
    from edge.identity.decide import DecideOptions
    from edge.models.bundle import load_bundle
    from edge.vision.build import bundle_stages

    root = ds.pairs.parent
    if ds.folds:
        files, labels = test_people_files(root)
    else:  # quick mode: every demo face, one folder per person
        paths = sorted(p for p in root.glob("*/*.jpg"))
        files = [f"{p.parent.name}/{p.name}" for p in paths]
        names = sorted({p.parent.name for p in paths})
        labels = np.array([names.index(f.split("/")[0]) for f in files])
    bundle = load_bundle(conv.bundle)
    stages = bundle_stages(bundle, num_threads=max(opts.threads))
    cache = opts.work / opts.mode / "embeddings"
    key = _file_key(conv.bundle / "embedder.tflite", extra="\n".join(files))
    say(f"security: facelock int8 on {len(files)} images of {len(set(labels.tolist()))} people")
    # Cached as one matrix: the embeddings, and a last column 1.0 where a face was found.
    both = _cached_embeddings(cache / f"security-int8-{key}.npz",
                              lambda: _embeddings_and_found(stages, root, files, opts.progress))
    ours = Embedded(both[:, :-1], both[:, -1] > 0.5, labels, "cosine")
    res: dict = {"images": len(files), "people": len(set(labels.tolist())), "pipelines": {}}
    pipelines = {"facelock int8": ours}
    if peer_ok:
        pe, pfound = run_peer_embeddings(root, tuple(files), cache / f"security-peer-{key[:8]}.npz")
        pipelines["face_recognition (dlib)"] = Embedded(pe, pfound, labels, "euclidean")
    found_all = np.logical_and.reduce([p.found for p in pipelines.values()])
    # Quick mode has two people: a "household" of one, the other person the stranger.
    homes = households(labels, found_all, homes_count if ds.folds else 4, size=HOUSEHOLD_SIZE if ds.folds else 1)
    decide = DecideOptions()
    for name, emb in pipelines.items():
        say(f"security: {name}: all pairs, households, strangers at the door")
        peer = emb.kind == "euclidean"
        row = {"verification": verification_all_pairs(emb), "household": household_identification(emb, homes)}
        if peer:
            row["door"] = strangers_at_the_door(emb, homes, -PEER_TOLERANCE, attempts=attempts, peer_rule=True)
            row["door"]["rule"] = f"one frame within distance {PEER_TOLERANCE} opens (face_recognition's default)"
        else:
            t = bundle.threshold.cosine
            row["door"] = strangers_at_the_door(emb, homes, t, decide, attempts=attempts)
            row["door"]["rule"] = (f"bundle threshold {t:.4f}, {decide.k} of {decide.n} frames, margin "
                                   f"{decide.margin}, lockout after {decide.lockout_failures} failures")
        res["pipelines"][name] = row
    return res


def _embeddings_and_found(stages, root, files, progress) -> np.ndarray:
    e, found = _embed_ours(stages, root, files, progress)
    return np.concatenate([e, found.astype(np.float32)[:, None]], axis=1)


def render_security(sec: dict) -> list[str]:
    """The markdown section (tables) for docs/benchmarks.md and the script's output."""
    def pct(x):
        return "–" if x is None else f"{100 * x:.2f}%"

    names = list(sec["pipelines"])
    first = sec["pipelines"][names[0]]
    v0, h0 = first["verification"], first["household"]
    lines = ["## 6. Security", "",
             (f"{sec['images']:,} images of {sec['people']:,} LFW `test` people, every pipeline on the same images "
             "in one run. A face that is not found is a rejection."), "",
             (f"**Verification over all pairs**: {v0['genuine_pairs']:,} genuine and {v0['impostor_pairs']:,} "
             "impostor pairs."), "",
             "| pipeline | faces not found | " + " | ".join(f"TAR@FAR {k}" for k in v0["tar"]) + " |",
             "|---|---|" + "---|" * len(v0["tar"])]
    for n in names:
        v = sec["pipelines"][n]["verification"]
        lines.append(f"| {n} | {v['faces_not_found']} | " + " | ".join(pct(t["tar"]) for t in v["tar"].values()) + " |")
    lines += ["", (f"**The household**: {HOUSEHOLD_SIZE} enrolled people, one photo each; {h0['households']} "
              f"households drawn; {h0['stranger_attempts']:,} stranger attempts (every other test person's "
              f"photos), {h0['genuine_probes']:,} photos of the enrolled people."), "",
              "| pipeline | " + " | ".join(f"identified @ stranger rate {k}" for k in h0["rates"]) + " |",
              "|---|" + "---|" * len(h0["rates"])]
    for n in names:
        h = sec["pipelines"][n]["household"]
        lines.append(f"| {n} | " + " | ".join(pct(r["identification"]) for r in h["rates"].values()) + " |")
    lines += ["", ("**Strangers at the door**: every stranger of each household makes attempts of "
              f"{first['door']['frames_per_attempt']} frames (their own photos in turn)."), "",
              ("| pipeline | rule | attempts | doors opened | per million attempts (95% upper) | "
              "attempts per day under lockout |"), "|---|---|---|---|---|---|"]
    for n in names:
        d = sec["pipelines"][n]["door"]
        per_day = d.get("attempts_per_day_under_lockout")
        lines.append(f"| {n} | {d['rule']} | {d['attempts']:,} | {d['opened']} | {d['per_million']:.1f} "
                     f"({d['per_million_upper95']:.1f}) | {'no limit' if per_day is None else f'{per_day:.0f}'} |")
    return lines
