"""One frame's vote, the rule the decider (edge.identity.decide) applies to every frame's match.

A frame votes for person P when P is the match, its cosine >= `threshold`, and its margin (ahead of the
runner-up and of P's own negative examples, see edge.identity.match) >= `margin`; otherwise it votes for
nobody, and the reason says why.

**Settled on the first run.** A mirror-averaging embedder runs twice per face (the chip and its mirror
image). The mirror run moves every cosine a little (by at most 0.019 on door frames near the threshold,
benchmarks/first_run.py), so a match made from the first run alone already decides the vote when its score
is at least `band` away from the threshold and, above it, its margin (a difference of two cosines, so it
moves up to twice as far) at least `2 * band` away from `margin`. The pipeline (edge.vision.pipeline) then
skips the mirror run.

**Dim and soft faces.** A face the quality gates pass under a condition where strangers pass the threshold
more often (edge.types.FaceCondition: dim, too little light; soft, a little out of focus) votes only at that
condition's own threshold, and never at a lower bar than a clear face (`vote_threshold`; both: the higher).
Its first run never settles the vote: on dim door frames the mirror run moves a cosine near the bar further
(99.9th percentile 0.017-0.021 against 0.013-0.015 in good light, benchmarks/first_run.py), past the band
chosen on clear faces; such faces are few, so they always get the mirror run.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from edge.identity.match import Match
from edge.types import FaceCondition


def vote_threshold(threshold: float, bars: Mapping[FaceCondition, float],
                   conditions: Collection[FaceCondition] = ()) -> float:
    """The cosine a frame's match needs: `threshold`, or for a face under `conditions` the highest of it and
    those conditions' `bars` (0 or missing: none known; the service then refuses dim faces,
    edge.service.operating_point, and soft ones vote at the threshold)."""
    return max([threshold, *(bars.get(c, 0.0) for c in conditions)])


def frame_vote(match: Match, threshold: float, margin: float) -> tuple[str | None, str]:
    """(the person the frame votes for, or None; why it votes for nobody, "" when it votes)."""
    if match.person is None:
        return None, "vetoed by negative examples: " + ", ".join(match.vetoed) if match.vetoed else "no candidate"
    if match.score < threshold:
        return None, f"{match.person} {match.score:.3f} below threshold {threshold:g}"
    if match.margin < margin:
        rival = match.runner_up if match.runner_up_score >= match.negative_score else "a negative example"
        return None, f"{match.person} {match.score:.3f} too close to {rival} (margin {match.margin:.3f} < {margin:g})"
    return match.person, ""


def first_run_settles(match: Match, threshold: float, margin: float, band: float) -> bool:
    """Whether `match`, made from the embedder's first run alone, decides the frame's vote whatever the
    mirror run adds: every cosine may move by up to `band` (see the module docstring). `band` 0: never."""
    if band <= 0:
        return False
    top = match.score if match.person is not None else match.runner_up_score  # vetoed: the best raw score
    if top < threshold - band:
        return True  # nobody near the threshold: no vote either way
    if match.person is None or top < threshold + band:
        return False
    return abs(match.margin - margin) >= 2 * band
