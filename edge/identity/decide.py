"""From per-frame matches to unlock decisions: voting over frames, cooldown, and lockout with back-off.

Feed `Decider.update(match, now)` once per frame, with `now` from the monotonic clock and `match` None when
the frame had no usable face (none found, or the subject failed the quality gates).

**Votes.** A frame votes for person P when P is the match, its cosine >= `threshold` and its margin >=
`margin` (edge.identity.vote); otherwise it votes for nobody. P is accepted when P has `k` votes among the
last `n` face frames, all within `window_s` seconds, and no other person has a vote among those `n` frames.
One lucky frame never opens the door; a face that wavers between two people (A/B/A/B/A) never does either:
neither opens until the other's votes have left the last `n` frames.

**Attempt.** An attempt is a run of frames with a usable face. It begins at the first such frame and ends:
- with an accept (success);
- when no usable face has been seen for `attempt_gap_s` seconds (the person left or turned away), or when
  it has lasted `attempt_max_s` without an accept (someone standing in front of the lock keeps spending
  attempts) — a failure, reported once as a REJECT decision, provided it held at least
  `min_attempt_frames` face frames (a single stray frame is noise, not an attempt).

**Liveness.** With a liveness judge (edge.vision.liveness, edge.vision.challenge; passed in, identity does
not import vision), P also needs the attempt's frames of P (a frame without P breaks the run) to look live:
once P has the votes, live -> ACCEPT; attack suspected -> the attempt fails as ATTACK (counted like a
REJECT, naming the check); failed (a challenge not answered) -> a REJECT that says why; undecided ->
PENDING until more frames come (P's frames go on to the judge for `window_s` after P last had the votes;
an attempt that ends so is a REJECT that says why). A challenge asked rides on its PENDING (`liveness.asked`).
While P's liveness is pending, a frame whose face failed only the pose gates (a head turned to answer) gives
`update(None, now, sample)`: no vote, but it goes on in P's run and keeps the attempt going.

**Cooldown.** After P is accepted, frames voting for P are ignored for `cooldown_s` (P is still in front of
the door; that is neither a new unlock nor a failed attempt). Other faces are decided as usual.

**Lockout.** `lockout_failures` failed attempts within `lockout_window_s` lock the decider for `lockout_s`;
every frame then gives LOCKED_OUT, whoever it shows (the owner uses a key). Back-off grows: after a
lockout, each further failed attempt locks again, for `lockout_s * lockout_growth ** level` (capped at
`lockout_max_s`), until an accept or `lockout_reset_s` seconds without a failure resets the level. An
accept also forgets earlier failures. Decisions carry `LockoutEvent`s: "lockout" when one starts,
"unlock_allowed" on the first frame after it ends. The back-off is computed without overflow at any level
(`edge.identity.lockout_store.backoff_s`).

**Restarts.** With a `LockoutStore` (edge.identity.lockout_store) the failures, the level and the lockout in
force are saved on every change and restored when the Decider is made: a crash, a restart or a power cut
gives an attacker no fresh attempts. Without one (tests, benchmarks) that state lives in memory.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Collection
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any, Protocol

from edge.identity.decide_options import DecideOptions
from edge.identity.lockout_store import (
    LOCKOUT,
    UNLOCK_ALLOWED,
    LockoutEvent,
    LockoutState,
    LockoutStore,
    backoff_s,
)
from edge.identity.match import Match
from edge.identity.vote import first_run_settles, frame_vote, vote_threshold
from edge.options import MAX_COUNT
from edge.types import FaceCondition, LivenessState, LivenessVerdict

log = logging.getLogger(__name__)


class Outcome(str, Enum):
    IDLE = "idle"  # no face and no attempt under way
    PENDING = "pending"  # an attempt is under way, not decided yet (or a face in cooldown)
    ACCEPT = "accept"  # open for `person`
    REJECT = "reject"  # an attempt ended without an accept
    ATTACK = "attack_suspected"  # an attempt ended because the liveness checks took the face for a print/screen
    LOCKED_OUT = "locked_out"  # too many failures: nothing is accepted until `retry_after_s` has passed


class LivenessJudge(Protocol):
    """What the decider needs of a liveness check (edge.vision.liveness.LivenessCheck, .challenge.ChallengeJudge):
    a verdict on the attempt's samples at frame time `now`; word when an attempt ends (one challenge each)."""

    def judge(self, samples: list[Any], now: float) -> LivenessVerdict: ...

    def new_attempt(self) -> None: ...


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    time: float  # the frame's monotonic timestamp
    person: str | None = None  # ACCEPT: who; REJECT/PENDING: best candidate seen (may be below threshold)
    score: float | None = None  # ACCEPT: mean cosine of the votes; else the best cosine seen
    reason: str = ""
    events: tuple[LockoutEvent, ...] = ()
    retry_after_s: float = 0.0  # LOCKED_OUT (or a REJECT that started a lockout): seconds until allowed
    attempt_frames: int = 0  # face frames in the attempt this decision is about
    liveness: LivenessVerdict | None = None  # the liveness verdict behind an ACCEPT, ATTACK or PENDING


class Decider:
    """`update(match, now)` -> Decision, once per frame. Not thread-safe: one frame loop owns it.

    `store`: where the lockout state is kept across restarts (None: in memory only). Its monotonic clock
    must be the clock of the `now` given to `update` (frame timestamps are `time.monotonic()`)."""

    def __init__(self, options: DecideOptions | None = None, store: LockoutStore | None = None,
                 liveness: LivenessJudge | None = None):
        self.options = (options or DecideOptions()).validate()
        self.liveness = liveness  # the attempt's frames for it: (best candidate or None, sample), oldest first
        self._evidence: deque[tuple[str | None, Any]] = deque(maxlen=MAX_COUNT)
        self._verdict: LivenessVerdict | None = None  # the last one of this attempt
        self._liveness_for: str | None = None  # whose liveness is pending (they had the votes)
        self._qualified: tuple[float, list[float]] = (float("-inf"), [])  # when they last had them, and those
        self._last_now = float("-inf")
        self._votes: deque[tuple[float, str | None, float]] = deque(maxlen=self.options.n)
        self._attempt_start: float | None = None
        self._attempt_last, self._attempt_frames = 0.0, 0
        self._attempt_best: tuple[str | None, float] = (None, -1.0)
        self._cooldown: dict[str, float] = {}
        self._failures: deque[float] = deque()
        self._last_failure: float | None = None
        self._locked_until: float | None = None
        self._lock_started, self._level = 0.0, 0
        self._store = store
        if store is not None:
            self._restore(store.load(self.options.lockout_s, self.options.lockout_max_s))

    # -- state for the service (state topic, stats) ------------------------------------------------------

    @property
    def locked_until(self) -> float | None:
        return self._locked_until

    @property
    def lockout_level(self) -> int:
        return self._level

    @property
    def recent_failures(self) -> int:
        return len(self._failures)

    # -- persistence -------------------------------------------------------------------------------------

    def _restore(self, state: LockoutState) -> None:
        self._failures = deque(state.failures)
        self._last_failure = state.last_failure
        self._level = state.level
        self._locked_until = state.locked_until
        if state.locked_until is not None:
            self._lock_started = state.locked_until - state.lockout_duration_s

    def _save(self) -> None:
        """Called on every change of the lockout state (rare: at most once per failed attempt)."""
        if self._store is None:
            return
        locked = self._locked_until is not None
        self._store.save(LockoutState(tuple(self._failures), self._last_failure, self._level, self._locked_until,
                                      self._locked_until - self._lock_started if locked else 0.0))

    # -- internals ---------------------------------------------------------------------------------------

    def _reset_attempt(self) -> None:
        self._votes.clear()
        self._attempt_start, self._attempt_frames, self._attempt_best = None, 0, (None, -1.0)
        self._evidence.clear()
        self._verdict = None
        self._liveness_for, self._qualified = None, (float("-inf"), [])
        if self.liveness is not None:
            self.liveness.new_attempt()

    def _fail_attempt(self, now: float, why: str, outcome: Outcome = Outcome.REJECT) -> Decision | None:
        """End the attempt under way as failed; the REJECT (None if it was too short to count)."""
        o = self.options
        frames, (best, best_score), verdict = self._attempt_frames, self._attempt_best, self._verdict
        self._reset_attempt()
        if outcome is Outcome.REJECT and verdict is not None and verdict.state is LivenessState.UNDECIDED:
            # P had the votes; liveness never said live
            why += f"; liveness undecided ({verdict.check}: {verdict.reason})"
        if frames < o.min_attempt_frames:
            return None
        self._failures.append(now)
        self._last_failure = now
        while self._failures and self._failures[0] <= now - o.lockout_window_s:
            self._failures.popleft()
        events: tuple[LockoutEvent, ...] = ()
        retry = 0.0
        if (self._level == 0 and len(self._failures) >= o.lockout_failures) or self._level > 0:
            duration = backoff_s(o.lockout_s, o.lockout_growth, self._level, o.lockout_max_s)
            self._level += 1
            self._locked_until, self._lock_started = now + duration, now
            events = (LockoutEvent(LOCKOUT, now, now + duration, duration, self._level, len(self._failures)),)
            log.warning("lockout %d for %.0f s after %d failed attempts", self._level, duration,
                        len(self._failures))
            self._failures.clear()
            retry = duration
        self._save()
        shown = f"best {best} {best_score:.3f}" if best else "no candidate"
        head = "attack suspected" if outcome is Outcome.ATTACK else "attempt failed"
        return Decision(outcome, now, best, best_score if best else None, f"{head}: {why} ({shown})", events,
                        retry, frames, verdict)

    # -- the one main method -----------------------------------------------------------------------------

    def update(self, match: Match | None, now: float, sample: Any = None,
               conditions: Collection[FaceCondition] = ()) -> Decision:
        """Decide on one frame. `match` None: no usable face in this frame. `now`: monotonic seconds (a
        timestamp earlier than the previous one is treated as equal to it). `sample`: the frame's liveness
        sample for the judge (None: it has none). `conditions`: the face's (QualityVerdict.conditions: a
        dim face's vote needs `dim_threshold`, a soft one's `soft_threshold`)."""
        o = self.options
        if now < self._last_now:
            log.debug("decider: time went back %.3f s; using the previous timestamp", self._last_now - now)
            now = self._last_now
        self._last_now = now
        events: list[LockoutEvent] = []

        if self._locked_until is not None:
            if now < self._locked_until:
                self._reset_attempt()
                left = self._locked_until - now
                return Decision(Outcome.LOCKED_OUT, now, reason=f"locked out (level {self._level}); "
                                f"retry in {left:.0f} s", retry_after_s=left)
            events.append(LockoutEvent(UNLOCK_ALLOWED, now, self._locked_until,
                                       self._locked_until - self._lock_started, self._level, 0))
            self._locked_until = None
            self._save()
        if self._level and self._last_failure is not None and now - self._last_failure >= o.lockout_reset_s:
            self._level = 0
            self._save()

        ended: Decision | None = None
        if self._attempt_start is not None:
            if now - self._attempt_last > o.attempt_gap_s:
                ended = self._fail_attempt(now, f"no usable face for {now - self._attempt_last:.1f} s")
            elif now - self._attempt_start >= o.attempt_max_s:
                ended = self._fail_attempt(now, f"no accept within {o.attempt_max_s:g} s")
        if ended is not None and self._locked_until is not None:
            return _with_events(ended, events)  # that failure started a lockout: this frame is not used

        decision = self._frame(match, now, sample, conditions)
        if ended is not None and decision.outcome is not Outcome.ACCEPT:
            return _with_events(ended, events)  # this frame (if it has a face) counts toward the next attempt
        return _with_events(decision, events)

    def settled(self, match: Match, conditions: Collection[FaceCondition] = ()) -> bool:
        """Whether `match`, from the embedder's first run alone, decides its frame's vote (edge.identity.vote)."""
        o = self.options  # a dim or soft face's never does: see edge.identity.vote
        return not conditions and first_run_settles(match, o.threshold, o.margin, o.first_run_band)

    def _frame(self, match: Match | None, now: float, sample: Any = None,
               conditions: Collection[FaceCondition] = ()) -> Decision:
        o = self.options
        # A head turned past the pose gates while P's liveness is pending (answering a challenge): no vote,
        # but its mesh goes on in P's run and the attempt goes on (the same face; the run checks that).
        turned = match is None and sample is not None and self._liveness_for is not None
        if match is None and not turned:
            if self._attempt_start is None:
                return Decision(Outcome.IDLE, now, reason="no face")
            self._evidence.append((None, None))  # a gap: the liveness run starts afresh
            best, top = self._attempt_best
            return Decision(Outcome.PENDING, now, best, top if best is not None else None,
                            "no usable face this frame", attempt_frames=self._attempt_frames)
        person, score = (self._liveness_for, None) if match is None else (match.person, match.score)
        if match is None:
            vote, why = None, f"{person}: head turned past the pose gates (no vote)"
        else:
            vote, why = frame_vote(match, vote_threshold(o.threshold, o.bars, conditions), o.margin)
        if vote is not None and self._cooldown.get(vote, float("-inf")) > now:
            left = self._cooldown[vote] - now
            return Decision(Outcome.PENDING, now, vote, match.score,
                            f"{vote} accepted recently (cooldown {left:.0f} s)")

        if self._attempt_start is None:
            self._attempt_start = now
        self._attempt_last = now
        self._attempt_frames += 1
        if match is not None:
            if match.person is not None and match.score > self._attempt_best[1]:
                self._attempt_best = (match.person, match.score)
            self._votes.append((now, vote, match.score))
        self._evidence.append((person, sample))
        recent = [(t, p, s) for t, p, s in self._votes if t > now - o.window_s]
        # Liveness pending: P's frames (a head turned to answer may match below the bar) go on to the judge
        who = vote if vote is not None else (person if person == self._liveness_for else None)
        if who is not None:
            scores = [s for _, p, s in recent if p == who]
            if len(scores) >= o.k:
                self._qualified = (now, scores)
            elif who == self._liveness_for and now - self._qualified[0] <= o.window_s:
                scores = self._qualified[1]
            # Anyone else voted for among the last n frames (window or not): the face wavers, nobody opens.
            rivals = sorted({p for _, p, _ in self._votes if p is not None and p != who})
            verdict = self._live(who, now) if len(scores) >= o.k and not rivals else None
            if verdict is not None and verdict.state in (LivenessState.ATTACK, LivenessState.FAILED):
                self._verdict = verdict  # (an attempt too short to count gives None: not accepted either)
                outcome = Outcome.ATTACK if verdict.state is LivenessState.ATTACK else Outcome.REJECT
                return self._fail_attempt(now, f"{verdict.check}: {verdict.reason}", outcome) or \
                    Decision(Outcome.PENDING, now, who, score, verdict.reason, liveness=verdict)
            if verdict is not None and verdict.state is LivenessState.UNDECIDED:
                self._verdict, self._liveness_for = verdict, who  # for the REJECT, should the attempt end so
                return Decision(Outcome.PENDING, now, who, score, f"{who}: waiting for liveness "
                                f"({verdict.check}: {verdict.reason})", attempt_frames=self._attempt_frames,
                                liveness=verdict)
            if verdict is not None:
                frames = self._attempt_frames
                self._reset_attempt()
                self._cooldown = {p: t for p, t in self._cooldown.items() if t > now}  # forget expired ones
                self._cooldown[who] = now + o.cooldown_s
                if self._failures or self._level:
                    self._failures.clear()
                    self._level = 0
                    self._save()
                live = "" if verdict.check == "off" else f"; live ({verdict.check})"
                return Decision(Outcome.ACCEPT, now, who, sum(scores) / len(scores),
                                f"{who}: {len(scores)} of the last {len(recent)} frames{live}",
                                attempt_frames=frames, liveness=None if live == "" else verdict)
            why = f"{who}: {len(scores)}/{o.k} votes"
            if rivals:
                why += f", but {', '.join(rivals)} also voted among the last {o.n} frames"
        return Decision(Outcome.PENDING, now, person, score if person else None, why,
                        attempt_frames=self._attempt_frames)

    def _live(self, person: str, now: float) -> LivenessVerdict:
        """The judge's verdict on the attempt's frames of `person` (live when there is no judge)."""
        if self.liveness is None:
            return LivenessVerdict(LivenessState.LIVE, "off", "no liveness check")
        return self.liveness.judge([s if p == person else None for p, s in self._evidence], now)


def _with_events(decision: Decision, events: list[LockoutEvent]) -> Decision:
    if not events:
        return decision
    return replace(decision, events=tuple(events) + decision.events)
