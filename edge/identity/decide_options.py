"""`[decide]`: when a face opens the lock (the operating point, the votes over frames, the cooldown) and how
failed attempts are limited (the lockout). The Decider (edge.identity.decide) applies them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from edge.options import DAY_S, HOUR_S, MAX_COUNT, WEEK_S, check
from edge.types import FaceCondition


@dataclass(frozen=True)
class DecideOptions:
    """When a face opens the lock, and how failed attempts are limited."""

    threshold: float = 0.82
    """Smallest cosine that counts as a vote (the bundle's operating threshold; dlib's 0.6 distance)."""
    dim_threshold: float = 0.0
    """The same for a dim face (`[quality] dim_contrast`; never below `threshold`): the bundle's dim-light
    threshold, chosen for the same false-accept rate on dim door frames. 0: none (dim faces are refused)."""
    soft_threshold: float = 0.0
    """The same for a soft face (`[quality] soft_sharpness`; never below `threshold`): the bundle's soft-face
    threshold, chosen for the same false-accept rate on soft door frames. 0: none (soft faces vote at
    `threshold`)."""
    margin: float = 0.05
    """How far the best person's cosine must be ahead of the runner-up and of their negative examples."""
    first_run_band: float = 0.015
    """A frame is decided on the embedder's first run alone (a mirror-averaging bundle then skips the mirror
    run) when its cosine is this far from `threshold` and its margin twice this far from `margin` (never a dim
    or soft face: edge.identity.vote). The mirror run moved lit door frames' cosines near the threshold by
    0.015 in 99.9% of LFW train comparisons; at 0.015 no vote changed (benchmarks/first_run.py). 0: always
    mirror."""
    k: int = 3
    """Votes for one person needed to accept ..."""
    n: int = 5
    """... among this many most recent frames with a usable face ..."""
    window_s: float = 3.0
    """... all within this many seconds."""
    cooldown_s: float = 10.0
    """After accepting a person, ignore frames voting for them for this many seconds."""
    attempt_gap_s: float = 2.0
    """An attempt ends (failed) when no usable face has been seen for this many seconds."""
    attempt_max_s: float = 10.0
    """An attempt that lasts this long without an accept ends as failed, and a new one begins."""
    min_attempt_frames: int = 2
    """Attempts with fewer face frames than this are ignored rather than counted as failures."""
    lockout_failures: int = 5
    """Failed attempts within `lockout_window_s` that trigger a lockout."""
    lockout_window_s: float = 300.0
    """Window, in seconds, over which failed attempts are counted."""
    lockout_s: float = 30.0
    """Length of the first lockout, in seconds."""
    lockout_growth: float = 2.0
    """Each further lockout (before the level resets) lasts this many times longer."""
    lockout_max_s: float = 900.0
    """Longest lockout, in seconds."""
    lockout_reset_s: float = 3600.0
    """Seconds without a failed attempt after which back-off starts again from `lockout_s`."""
    state_path: str = ""
    """JSON file that keeps failed attempts and the lockout across restarts and power cuts; empty:
    $XDG_STATE_HOME/facelock/lockout.json (~/.local/state/facelock/lockout.json)."""

    @property
    def bars(self) -> dict[FaceCondition, float]:
        """The threshold of each face condition (edge.identity.vote.vote_threshold)."""
        return {FaceCondition.DIM: self.dim_threshold, FaceCondition.SOFT: self.soft_threshold}

    def validate(self) -> DecideOptions:
        """Raise ConfigError naming the first field out of range."""
        return check("decide", self, [
            ("threshold", -1.0 <= self.threshold <= 1.0, "a cosine in [-1, 1]"),
            ("dim_threshold", -1.0 <= self.dim_threshold <= 1.0, "a cosine in [-1, 1] (0: none)"),
            ("soft_threshold", -1.0 <= self.soft_threshold <= 1.0, "a cosine in [-1, 1] (0: none)"),
            ("margin", 0.0 <= self.margin < 2.0, "in [0, 2)"),
            ("first_run_band", 0.0 <= self.first_run_band <= 1.0, "in [0, 1] (0: always the mirror run)"),
            ("k", 1 <= self.k <= self.n, f"between 1 and n ({self.n})"),
            ("n", 1 <= self.n <= MAX_COUNT, f"1-{MAX_COUNT}"),
            ("window_s", 0 < self.window_s <= HOUR_S, "0 < seconds <= 3600"),
            ("cooldown_s", 0 <= self.cooldown_s <= DAY_S, "0-86400 seconds"),
            ("attempt_gap_s", 0 < self.attempt_gap_s <= HOUR_S, "0 < seconds <= 3600"),
            ("attempt_max_s", 0 < self.attempt_max_s <= HOUR_S, "0 < seconds <= 3600"),
            ("min_attempt_frames", 1 <= self.min_attempt_frames <= MAX_COUNT, f"1-{MAX_COUNT}"),
            ("lockout_failures", 1 <= self.lockout_failures <= MAX_COUNT, f"1-{MAX_COUNT}"),
            ("lockout_window_s", 0 < self.lockout_window_s <= WEEK_S, "0 < seconds <= 604800 (a week)"),
            ("lockout_s", 0 <= self.lockout_s <= WEEK_S, "0-604800 seconds (a week)"),
            ("lockout_growth", 1.0 <= self.lockout_growth <= 100.0, "1-100"),
            ("lockout_max_s", self.lockout_s <= self.lockout_max_s <= WEEK_S,
             f"seconds >= lockout_s ({self.lockout_s}), at most 604800 (a week)"),
            ("lockout_reset_s", 0 < self.lockout_reset_s <= WEEK_S, "0 < seconds <= 604800 (a week)"),
            ("state_path", "\0" not in self.state_path, "a path without NUL characters"),
        ])


def at_operating_point(threshold: float, bars: Mapping[FaceCondition, float] | None = None) -> DecideOptions:
    """The default `[decide]` at `threshold`, with the face conditions' thresholds `bars` (DecideOptions.bars;
    none: 0, none known): how the benchmarks put a bundle's operating point into the real Decider."""
    bars = bars or {}
    return DecideOptions(threshold=threshold, dim_threshold=bars.get(FaceCondition.DIM, 0.0),
                         soft_threshold=bars.get(FaceCondition.SOFT, 0.0))
