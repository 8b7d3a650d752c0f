"""Who is this? One probe embedding against every template, as one matrix-vector product.

Scores are cosine similarities (embeddings are unit length, so a dot product). A person's score is the
best of their templates' scores: several templates cover different looks, and the closest one is the
relevant one.

**Negative examples and look-alikes.** Each person may carry negative templates: embeddings of a stranger
who must not open as them. For the best-scoring person P the matcher also computes P's negative score, the
best cosine between the probe and P's negatives. Two rules use it:

1. *Veto.* If P's negative score + `negative_margin` >= P's own score, the probe looks at least as much like
   the known stranger as like P, and P is not a candidate at all: P goes into `Match.vetoed` and the next
   best person is considered under the same rule. So the stranger's face, which sits right on their own
   negative template (cosine near 1), can never be reported as P, however close P's templates are.
2. *Margin.* For the person reported, `Match.margin` is their score minus the larger of the runner-up's
   score and their own negative score. The decider demands a minimum margin, so a probe that is only a bit
   closer to P than to P's look-alike is refused as ambiguous, exactly as a probe between two enrolled
   people is.

The runner-up is the best other person by raw score, vetoed or not: if the probe is closer to a vetoed
person than to the reported one, the margin is negative and nobody is accepted.

Speed: templates are one contiguous (M, D) float32 matrix grouped by person, so scoring is one
matrix-vector product (numpy's own loops by default, BLAS with `use_blas`, see MatchOptions) and per-person
maxima one `np.maximum.reduceat`; 10,000 templates take well under a millisecond.
The matcher works on a `GallerySnapshot`; `refresh()` reloads it when the gallery's revision has changed
(checked at most every `reload_check_s` seconds from `match`).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from dataclasses import dataclass

import numpy as np

from edge.errors import GalleryError
from edge.identity.gallery import Gallery
from edge.identity.templates import GallerySnapshot
from edge.options import DAY_S, check

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MatchOptions:
    """How a probe is compared with the gallery."""

    negative_margin: float = 0.0
    """A person is vetoed when their best negative cosine + this >= their own best cosine (0: vetoed when
    the probe is at least as close to one of their negatives as to them; 0.05 also vetoes near-ties)."""
    reload_check_s: float = 2.0
    """How often `match` asks the gallery whether it changed (seconds; 0 checks every call, < 0 never)."""
    use_blas: bool = False
    """Score with numpy's BLAS (matmul) instead of its own single-threaded loops (einsum). BLAS is ~2x
    faster when single-threaded (OPENBLAS_NUM_THREADS=1), but a multi-threaded OpenBLAS on a busy CPU (the
    interpreter's threads, other services) has multi-millisecond tail latency: measured on 2 loaded cores,
    10,000 templates: einsum median 0.26 / p95 0.38 ms; threaded BLAS 0.06 / 9 ms; 1-thread BLAS 0.10 / 0.14."""

    def validate(self) -> MatchOptions:
        """Raise ConfigError naming the first field out of range."""
        return check("match", self, [
            ("negative_margin", -1.0 <= self.negative_margin <= 1.0, "in [-1, 1]"),
            ("reload_check_s", self.reload_check_s <= DAY_S, "<= 86400 seconds (< 0: never)"),
        ])


@dataclass(frozen=True)
class Match:
    """The result for one probe. `person` is None when the gallery is empty or everyone was vetoed.
    Scores are cosines in [-1, 1]; absent ones are -1.0."""

    person: str | None
    score: float
    runner_up: str | None
    runner_up_score: float
    negative_score: float  # best cosine between the probe and `person`'s negative examples
    margin: float  # score - max(runner_up_score, negative_score)
    vetoed: tuple[str, ...] = ()  # people refused because the probe is closer to their negatives

    def to_dict(self) -> dict:
        return {"person": self.person, "score": round(self.score, 4), "runner_up": self.runner_up,
                "runner_up_score": round(self.runner_up_score, 4),
                "negative_score": round(self.negative_score, 4), "margin": round(self.margin, 4),
                "vetoed": list(self.vetoed)}


def _dot_no_threads(matrix: np.ndarray, vector: np.ndarray) -> np.ndarray:
    """matrix @ vector in numpy's own SIMD loops: no BLAS thread pool, so no spin-waiting threads competing
    with the interpreter's, and a latency that does not depend on how busy the CPU is."""
    return np.einsum("ij,j->i", matrix, vector)


NO_MATCH = Match(person=None, score=-1.0, runner_up=None, runner_up_score=-1.0, negative_score=-1.0,
                 margin=0.0)


class Matcher:
    """`match(embedding)` -> Match against a gallery (reloaded on change) or a fixed snapshot."""

    def __init__(self, source: Gallery | GallerySnapshot, options: MatchOptions | None = None, space: str = ""):
        """`space`: the running embedder's embedding space (`Embedder.space`); gallery templates recorded in
        another space are left out, with a warning naming the people to enrol again."""
        self.options = (options or MatchOptions()).validate()
        self.gallery = source if isinstance(source, Gallery) else None
        self.space = space
        self._lock = threading.Lock()
        self._checked = time.monotonic()
        self._state = self._prepare(source.snapshot(space) if isinstance(source, Gallery) else source)

    def _load(self, snap: GallerySnapshot) -> None:
        self._state = self._prepare(snap)  # one attribute swap: a concurrent match() sees the old or the new, whole

    def _prepare(self, snap: GallerySnapshot) -> tuple:
        if snap.ignored_templates:
            log.warning("gallery %s: %d templates of %s were made with another embedder (this one is %s) and "
                        "are ignored: enrol them again with this model",
                        self.gallery.path if self.gallery else "snapshot", snap.ignored_templates,
                        ", ".join(snap.ignored), self.space)
        # Negatives sorted by owner, so that per-owner maxima are one reduceat over the groups present.
        order = np.argsort(snap.negative_owner, kind="stable")
        owners = snap.negative_owner[order]
        starts = np.flatnonzero(np.r_[True, owners[1:] != owners[:-1]]) if len(owners) else owners
        return snap, np.ascontiguousarray(snap.negatives[order]), starts, owners[starts]

    @property
    def snapshot(self) -> GallerySnapshot:
        return self._state[0]

    @property
    def names(self) -> tuple[str, ...]:
        return self._state[0].names

    @property
    def revision(self) -> int:
        return self.snapshot.revision

    def refresh(self, force: bool = False) -> bool:
        """Reload from the gallery if its revision changed (or `force`). True when reloaded."""
        if self.gallery is None:
            return False
        with self._lock:
            self._checked = time.monotonic()
            if not force and self.gallery.revision() == self.snapshot.revision:
                return False
            self._load(self.gallery.snapshot(self.space))
            return True

    def match(self, embedding: np.ndarray) -> Match:
        o = self.options
        if self.gallery is not None and o.reload_check_s >= 0 and \
                time.monotonic() - self._checked >= o.reload_check_s:
            try:
                self.refresh()
            except (GalleryError, sqlite3.Error) as exc:  # keep recognising with what we have
                self._checked = time.monotonic()
                log.warning("gallery %s: reload failed, keeping revision %d: %s", self.gallery.path,
                            self.revision, exc)
        snap, negatives, neg_starts, neg_owners = self._state
        if not snap.names:
            return NO_MATCH
        probe = np.asarray(embedding, dtype=np.float32).reshape(-1)
        if probe.shape[0] != snap.dim:
            raise GalleryError(f"probe embedding has {probe.shape[0]} dimensions, the gallery's templates "
                               f"have {snap.dim} (enrolled with another model?)")
        norm = float(np.linalg.norm(probe))
        if not np.isfinite(norm) or norm < 1e-6:
            return NO_MATCH  # a broken embedding matches nobody
        probe = probe / norm
        dot = np.matmul if o.use_blas else _dot_no_threads
        person_scores = np.maximum.reduceat(dot(snap.templates, probe), snap.template_offsets[:-1])
        if len(negatives):
            neg_scores = np.full(len(snap.names), -1.0, dtype=np.float32)
            neg_scores[neg_owners] = np.maximum.reduceat(dot(negatives, probe), neg_starts)
        else:
            neg_scores = None
        if neg_scores is not None:
            barred = neg_scores + o.negative_margin >= person_scores
            best = int(np.argmax(np.where(barred, -np.inf, person_scores))) if not barred.all() else -1
        else:
            barred, best = None, int(np.argmax(person_scores))
        # Reported as vetoed: barred people who scored above the one reported (those the veto changed).
        floor = person_scores[best] if best >= 0 else -np.inf
        vetoed = tuple(snap.names[i] for i in np.flatnonzero(barred & (person_scores >= floor))
                       if i != best) if barred is not None else ()
        if best < 0:
            top = int(np.argmax(person_scores))
            return Match(person=None, score=-1.0, runner_up=snap.names[top],
                         runner_up_score=float(person_scores[top]), negative_score=-1.0, margin=0.0,
                         vetoed=vetoed)
        score = float(person_scores[best])
        if len(person_scores) > 1:
            rest = person_scores.copy()
            rest[best] = -np.inf
            runner = int(np.argmax(rest))
        else:
            runner = -1
        runner_score = float(person_scores[runner]) if runner >= 0 else -1.0
        neg = float(neg_scores[best]) if neg_scores is not None else -1.0
        return Match(person=snap.names[best], score=score,
                     runner_up=snap.names[runner] if runner >= 0 else None, runner_up_score=runner_score,
                     negative_score=neg, margin=score - max(runner_score, neg), vetoed=vetoed)
