"""The challenge benchmark: does the owner who answers the lock's challenge get in, how long does it take,
and how often does a replayed video pass it?

Unlike the attack benchmark's sequences (convert/bench/attacks.py), an answer depends on what the lock
asks, so these attempts are played frame by frame against the real stages and the real `Decider` with a
`ChallengeJudge`: each frame is rendered (`HeadRenderer`: the photo turned as a head with the landmark
model's 3D mesh, 640x480, sensor noise, JPEG 85) from the pose the person has at that moment, then
detected, meshed, embedded and decided on, 0.1 s apart (a 10 fps camera). The kinds:

- `owner, no challenge`: the person steps up and stands (a little sway, 1-2 degrees): the time to open
  with votes alone, the baseline;
- `owner answers`: the same, and when the lock asks, after a reaction time of 0.5-1.0 s the head makes the
  move asked, 15-25 degrees at 30-60 degrees/s, and holds it;
- `video replay`: a recording of the person that ignores the lock: still for 0.5-3 s, then one of the four
  moves at random, 15-25 degrees, held (a blind replay; its chance is about 1 / the number of moves).

Prints and screens are the attack benchmark's own traces, re-decided with the challenge judge.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from convert.bench.attacks import FPS, WIDTHS, HeadRenderer

OWNER_STILL, OWNER_ANSWERS, VIDEO = "owner, no challenge", "owner answers", "video replay"
KINDS = (OWNER_STILL, OWNER_ANSWERS, VIDEO)
PER_PERSON = {OWNER_STILL: 1, OWNER_ANSWERS: 3, VIDEO: 2}
# Pose direction of each move (yaw > 0: the person's right; pitch > 0: down), as HeadRenderer takes it.
DIRECTION = {"turn_left": (-1, 0), "turn_right": (1, 0), "look_up": (0, -1), "look_down": (0, 1)}
MAX_S = 8.0  # an attempt is played for at most this long (the decider's own attempt_max_s is 10 s)


@dataclass(frozen=True)
class Played:
    """One attempt played against the lock."""

    kind: str
    person: str
    asked: str | None  # what the challenge asked (None: nothing asked)
    made: str | None  # the move the head made (None: none)
    opened_s: float | None  # from the first frame to the ACCEPT; None: not opened
    answer_s: float | None  # from the challenge to the ACCEPT
    why: str  # the ending decision's reason (or "timeout")


def play(pipeline, photo: np.ndarray, mesh: np.ndarray, person: str, kind: str, threshold: float,
         rng: np.random.Generator, challenge_options=None, bars=None) -> Played:
    """One attempt of `kind` by `person` (their photo and its mesh) against the lock's stages (a dim or soft
    face's vote at its threshold in `bars`, DecideOptions.bars)."""
    from edge.identity.decide import Decider, Outcome
    from edge.identity.decide_options import at_operating_point
    from edge.vision.challenge import ChallengeJudge, ChallengeOptions

    options = challenge_options or ChallengeOptions(enabled=True)
    judge = None if kind == OWNER_STILL else ChallengeJudge(options, rng=random.Random(int(rng.integers(2**31))))
    decider = Decider(at_operating_point(threshold, bars), liveness=judge)
    width = float(rng.uniform(*WIDTHS))
    head = HeadRenderer(photo, mesh, rng, width)
    sway_amp, sway_f, sway_ph = rng.uniform(0.5, 2.0, 2), rng.uniform(0.3, 0.8, 2), rng.uniform(0, 2 * np.pi, 2)
    reaction, amp, speed = rng.uniform(0.5, 1.0), rng.uniform(15, 25), rng.uniform(30, 60)
    video_move, video_at = str(rng.choice(sorted(DIRECTION))), rng.uniform(0.5, 3.0)
    asked = asked_at = made = None
    n = int(MAX_S * FPS)
    for i in range(n):
        t = i / FPS
        yaw, pitch = sway_amp * np.sin(2 * np.pi * sway_f * t + sway_ph)
        move, start = None, None
        if kind == OWNER_ANSWERS and asked in DIRECTION:
            move, start = asked, asked_at + reaction
        elif kind == VIDEO:
            move, start = video_move, video_at
        if move is not None and t > start:
            a = min(amp, speed * (t - start))
            yaw, pitch = yaw + a * DIRECTION[move][0], pitch + a * DIRECTION[move][1]
            made = move
        frame, _ = head.render((yaw, pitch, 0.0), t, 0.9 + 0.1 * i / n, False, rng)
        a = pipeline.process(frame)
        out = decider.update(a.match if a.usable else None, t, a.liveness, a.quality.conditions if a.usable else ())
        if out.liveness is not None and out.liveness.asked is not None:
            asked, asked_at = out.liveness.asked.action, t
        if out.outcome is Outcome.ACCEPT:
            return Played(kind, person, asked, made, t, None if asked_at is None else t - asked_at, out.reason)
        if out.outcome in (Outcome.REJECT, Outcome.ATTACK):
            return Played(kind, person, asked, made, None, None, out.reason)
    return Played(kind, person, asked, made, None, None, "timeout")


def played(pipeline, photo, mesh, person: str, threshold: float, rng, per_person: dict | None = None,
           challenge_options=None, bars=None) -> list[Played]:
    return [play(pipeline, photo, mesh, person, kind, threshold, rng, challenge_options, bars)
            for kind, count in (per_person or PER_PERSON).items() for _ in range(count)]


def summarise_played(results: list[Played]) -> dict:
    """Per kind: n, opened share, median time to open and from the challenge; for the owner: BPCER (not
    opened), BPCER of the challenge (not opened, of the people whose baseline attempt opened) and the
    median rise in time to open over the same person's baseline; for the video: APCER,
    and the share whose move happened to be the one asked."""
    med = lambda xs: float(np.median(xs)) if xs else None
    out: dict = {}
    for kind in KINDS:
        rows = [r for r in results if r.kind == kind]
        if not rows:
            continue
        opened = [r.opened_s for r in rows if r.opened_s is not None]
        cell = {"n": len(rows), "opened": len(opened) / len(rows), "open_s": med(opened),
                "answer_s": med([r.answer_s for r in rows if r.answer_s is not None])}
        if kind == OWNER_ANSWERS:
            base = {r.person: r.opened_s for r in results if r.kind == OWNER_STILL and r.opened_s is not None}
            cell["bpcer"] = 1 - cell["opened"]
            known = [r for r in rows if r.person in base]  # people the lock opens for without the challenge
            cell["bpcer_challenge"] = (1 - sum(r.opened_s is not None for r in known) / len(known)) if known else None
            cell["rise_s"] = med([r.opened_s - base[r.person] for r in rows
                                  if r.opened_s is not None and r.person in base])
            cell["asked"] = {a: sum(r.asked == a for r in rows) for a in DIRECTION}
            failed = [r.why for r in rows if r.opened_s is None]
            cell["failed_why"] = failed[:10]
        if kind == VIDEO:
            cell["apcer"] = cell["opened"]
            cell["move_was_asked"] = sum(r.made == r.asked for r in rows) / len(rows)
        out[kind] = cell
    return out
