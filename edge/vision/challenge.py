"""The active liveness challenge: the lock asks for a move the person at the door could not have known in
advance, and opens only when the face makes it.

Why: the passive checks (`edge.vision.liveness`) stop a print or a photo on a screen, but a *video* of the
owner replayed on a phone moves like a head and passes them. A video recorded beforehand cannot know
which move will be asked, nor when: the challenge is drawn at random (`secrets`) when the face has the
votes to open, announced (MQTT `<base>/<id>/challenge`, a Home Assistant event entity whose automation can
speak it, a GPIO beeper or LED: `pulses` flashes), and answered within `deadline_s`, in one unbroken run of
the person's face (a second video swapped in starts the run afresh, see `LivenessCheck.run`).

How a move is read: between the frame the challenge was issued on and each later one, the 468-point mesh
is fitted as a homography plus a depth term (`liveness.depth_fit`); the depth term is how each point moved
*because of its depth*. Projected on the eye line it is the turn (yaw), across it the nod (pitch), signed
by the nose tip's, in face radii as the passive checks' figures. A plane (a print, a screen), however it is
tilted, has no depth term (its largest seen: 0.030): the move needs `move_parallax` (0.08, a head turned
~11 degrees), so no tilt of a photo answers a challenge. The first move over that bar decides: the one
asked passes, any other fails (a replayed video turning both ways, or an owner who turned the wrong way:
the attempt fails, it is not called an attack). `blink_twice` counts two closings of the eyes; a head move
over the bar before them fails it.

What it does not stop: someone watching the lock who plays one of several prepared videos after hearing
the challenge, a real-time face puppet, a mask. Blind replay of one video passes with about 1 /
len(actions) chance per attempt (less when its move comes at the wrong time), and failed attempts count
toward the lockout.
"""

from __future__ import annotations

import logging
import math
import random
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edge.options import check
from edge.types import Challenge, LivenessState, LivenessVerdict
from edge.vision.liveness import LivenessCheck, LivenessOptions, LivenessSample
from edge.vision.planar import depth_fit, radius

log = logging.getLogger(__name__)

# The mesh points a move is read from: the outer eye corners (the subject's right eye, on the left of an
# unmirrored picture, and the left one) give the face's horizontal axis; the nose tip the move's sign.
RIGHT_EYE_OUTER, LEFT_EYE_OUTER, NOSE_TIP = 33, 263, 1

ACTIONS = {  # action: (what the person is told, pulses on a GPIO indicator)
    "turn_left": ("Turn your head to your left", 1),
    "turn_right": ("Turn your head to your right", 2),
    "look_up": ("Look up", 3),
    "look_down": ("Look down", 4),
    "blink_twice": ("Blink twice", 5),
}
MOVES = {"turn_left": ("yaw", 1), "turn_right": ("yaw", -1), "look_up": ("pitch", -1), "look_down": ("pitch", 1)}


@dataclass(frozen=True)
class ChallengeOptions:
    """The active challenge; the `[challenge]` config section. Needs the face-landmark model's mesh."""

    enabled: bool = False
    """Before opening, ask the person for a random move (turn left or right, look up or down) and open only
    when the face makes it within `deadline_s`: stops a replayed video, which the passive checks do not. Costs
    the owner a head turn of ~15 degrees and ~1-2 s, and needs a way to tell them what to do: a speaker driven
    by Home Assistant (the `challenge` event entity), a beeper or LED on `indicator_pin` (`pulses` per move),
    or a printed legend next to it."""
    actions: tuple[str, ...] = ("turn_left", "turn_right", "look_up", "look_down")
    """The moves drawn from (at least two): turn_left, turn_right, look_up, look_down, blink_twice.
    Left and right are the person's own. blink_twice is the weakest (people blink by themselves, and a
    video can blink first), so it is not in the default set."""
    deadline_s: float = 5.0
    """Seconds from the announcement for the move (must be under `decide.attempt_max_s`)."""
    move_parallax: float = 0.08
    """How far the face must move off a plane, in face radii, for a move to count (0.08: a head turned or
    nodded ~11 degrees; the landmark model reads a 15 degree turn as 0.07-0.10). Measured at 0.06: fewer
    owners refused (BPCER 15.6% against 19.0%), but 1 of 34 hand-held prints answered (none with the
    passive checks on as well)."""
    blink_ratio: float = 0.6
    """For blink_twice: the eyes' opening under this fraction of its median over the answer is closed."""
    mirrored: bool = False
    """The camera's picture is mirrored (a selfie preview, a flipped sensor): left and right swap."""
    indicator_pin: int = -1
    """BCM GPIO of a beeper or LED that flashes the challenge (`pulses`: 1 turn left, 2 turn right,
    3 look up, 4 look down, 5 blink twice); -1: none. Uses `[relay] pin_factory`."""
    indicator_active_high: bool = True
    """True: the indicator is on with the pin high."""

    def validate(self) -> ChallengeOptions:
        unknown = [a for a in self.actions if a not in ACTIONS]
        return check("challenge", self, [
            ("actions", not unknown and len(set(self.actions)) >= 2 and len(set(self.actions)) == len(self.actions),
             f"at least two different moves of {', '.join(ACTIONS)}" + (f" (unknown: {', '.join(unknown)})"
                                                                        if unknown else "")),
            ("deadline_s", 1.0 <= self.deadline_s <= 60.0, "1-60 seconds"),
            ("move_parallax", 0.04 <= self.move_parallax <= 1.0, "0.04-1 (under 0.04 a tilted print may pass)"),
            ("blink_ratio", 0.0 < self.blink_ratio < 1.0, "in (0, 1)"),
            ("indicator_pin", -1 <= self.indicator_pin <= 27, "-1 (none) or a BCM GPIO number 0-27"),
        ])


@dataclass(frozen=True)
class Move:
    """How the face moved from the reference frame because of its depth, in face radii: `yaw` > 0 the
    person turned to their left, `pitch` > 0 they looked down."""

    yaw: float
    pitch: float

    @property
    def size(self) -> float:
        return max(abs(self.yaw), abs(self.pitch))

    def action(self) -> str:
        """The move it is (the larger component, by its sign)."""
        if abs(self.yaw) >= abs(self.pitch):
            return "turn_left" if self.yaw > 0 else "turn_right"
        return "look_down" if self.pitch > 0 else "look_up"


def move(ref: LivenessSample, now: LivenessSample, mirrored: bool = False) -> Move:
    """The depth-made part of the mesh's motion from `ref` to `now`, split along the face's eye line (yaw)
    and across it (pitch); each the RMS over the points, signed by the nose tip's shift."""
    flat, full = depth_fit(ref.points, ref.depth, now.points)
    shift = full - flat
    axis = now.points[LEFT_EYE_OUTER] - now.points[RIGHT_EYE_OUTER]
    norm = float(np.hypot(*axis))
    if norm < 1e-9:
        return Move(0.0, 0.0)
    axis = axis / norm
    across = np.array([-axis[1], axis[0]])  # image down for an upright face (y grows downwards)
    size = radius(now.points)
    h, v = shift @ axis, shift @ across
    yaw = math.copysign(float(np.sqrt((h**2).mean())) / size, h[NOSE_TIP])
    pitch = math.copysign(float(np.sqrt((v**2).mean())) / size, v[NOSE_TIP])
    return Move(-yaw if mirrored else yaw, pitch)


def blinks(openings: Sequence[float], ratio: float) -> int:
    """Closings of the eyes in a run of eye openings: dips under `ratio` x the run's median."""
    values = np.asarray(openings, np.float64)
    if len(values) < 3:
        return 0
    median = float(np.median(values))
    closed = values < ratio * median
    return int(closed[0]) + int(np.count_nonzero(closed[1:] & ~closed[:-1]))


class ChallengeJudge:
    """A liveness judge for the decider (`judge(samples, now)`, `new_attempt()`): the passive checks first
    (their ATTACK stands), then one challenge per attempt, issued the first time the face has the votes.

    `rng`: where the challenge is drawn from (default `secrets.SystemRandom()`: unpredictable; tests and
    the benchmark pass a seeded `random.Random`)."""

    def __init__(self, options: ChallengeOptions, passive: LivenessCheck | None = None,
                 rng: random.Random | None = None):
        self.options = options.validate()
        self.passive = passive
        # the continuity rules of the passive checks (gaps, jumps), whether or not they are enabled
        self._runs = passive or LivenessCheck(LivenessOptions(enabled=True))
        self.rng = rng or secrets.SystemRandom()
        self.asked: Challenge | None = None  # this attempt's challenge, once issued
        self._issued_at = 0.0  # the frame time it was issued at
        self._reference: LivenessSample | None = None  # the sample of the frame it was issued on
        # each frame's move from its run's first frame, computed once (the judge sees the run on every frame)
        self._moves: dict[int, tuple[LivenessSample, LivenessSample, Move]] = {}

    def new_attempt(self) -> None:
        self.asked, self._issued_at, self._reference = None, 0.0, None
        self._moves.clear()

    def _move(self, ref: LivenessSample, now: LivenessSample) -> Move:
        hit = self._moves.get(id(now))
        if hit is None or hit[0] is not ref or hit[1] is not now:
            hit = self._moves[id(now)] = (ref, now, move(ref, now, self.options.mirrored))
        return hit[2]

    def sample(self, face, frame=None, ir=None):
        return self._runs.sample(face, frame)

    def _issue(self, now: float, reference: LivenessSample) -> Challenge:
        action = self.rng.choice(self.options.actions)
        prompt, pulses = ACTIONS[action]
        self.asked = Challenge(action, prompt, self.options.deadline_s, pulses)
        self._issued_at, self._reference = now, reference
        return self.asked

    def judge(self, samples: Sequence[LivenessSample | None], now: float = 0.0) -> LivenessVerdict:
        o = self.options
        if self.passive is not None:
            verdict = self.passive.judge(samples, now)
            if verdict.state is LivenessState.ATTACK:
                return verdict
        latest = samples[-1] if samples else None
        if self.asked is None:
            if latest is None:
                return LivenessVerdict(LivenessState.UNDECIDED, "challenge", "no face mesh in this frame")
            asked = self._issue(now, latest)
            return LivenessVerdict(LivenessState.UNDECIDED, "challenge", f"asked: {asked.prompt.lower()} "
                                   f"(within {asked.deadline_s:g} s)", 1, asked=asked)
        asked, waited = self.asked, now - self._issued_at
        run = self._runs.run(samples)
        start = next((i for i, s in enumerate(run) if s is self._reference), None)
        answer = run[start:] if start is not None else run  # the run broke after the issue: the new one
        first, figures = self._answer(answer)
        if first == asked.action:
            return LivenessVerdict(LivenessState.LIVE, "challenge", f"{asked.action} done after {waited:.1f} s",
                                   len(answer), figures)
        if first is not None:
            return LivenessVerdict(LivenessState.FAILED, "challenge", f"asked {asked.action}, the face made "
                                   f"{first} first", len(answer), figures)
        if asked.action == "blink_twice" and figures["blinks"] >= 2:
            return LivenessVerdict(LivenessState.LIVE, "challenge", f"blinked twice after {waited:.1f} s",
                                   len(answer), figures)
        if waited > o.deadline_s:
            return LivenessVerdict(LivenessState.FAILED, "challenge", f"asked {asked.action}, no answer within "
                                   f"{o.deadline_s:g} s (largest move {figures['largest']:.3f})", len(answer), figures)
        return LivenessVerdict(LivenessState.UNDECIDED, "challenge", f"waiting for {asked.action} "
                               f"({waited:.1f} of {o.deadline_s:g} s)", len(answer), figures)

    def _answer(self, run: Sequence[LivenessSample]) -> tuple[str | None, dict[str, float]]:
        """(the first move over the bar since the reference, or None; figures: the largest move seen, that
        move's yaw and pitch, the blinks). For blink_twice a move after two blinks no longer counts."""
        o = self.options
        figures = {"largest": 0.0, "blinks": 0.0}
        first = None
        for i, s in enumerate(run[1:], start=1):
            m = self._move(run[0], s)
            figures["largest"] = max(figures["largest"], round(m.size, 4))
            if m.size >= o.move_parallax:
                if self.asked is not None and self.asked.action == "blink_twice" \
                        and blinks([r.eye_opening for r in run[:i + 1]], o.blink_ratio) >= 2:
                    break
                first = m.action()
                figures.update(yaw=round(m.yaw, 4), pitch=round(m.pitch, 4))
                break
        figures["blinks"] = float(blinks([r.eye_opening for r in run], o.blink_ratio))
        return first, figures
