"""Liveness in layers: the mesh checks (passive 3D evidence, the challenge) plus per-frame layers that score
the frame itself (the anti-spoofing CNN, edge.vision.antispoof; the near-infrared view, edge.vision.ir),
each switchable, all required.

`LayeredLiveness` is the pipeline's liveness stage and the decider's judge in one, like the mesh checks it
wraps. Per frame, `sample(face, frame)` keeps the mesh checks' own sample and each layer's score
(`FrameEvidence`; a layer that cannot score a frame leaves it out). Per attempt, `judge(samples, now)`:

- a layer that found an attack ends the attempt as ATTACK, naming that layer (its verdict);
- else the mesh checks' verdict when it is not LIVE (UNDECIDED waits, a challenge asked is announced, ATTACK
  and FAILED end the attempt), with the layers' figures added;
- else a layer still short of frames: UNDECIDED, naming it;
- else LIVE: the mesh checks' reason and check (the layers' names when no mesh check runs), every layer's
  reason and figure beside it.

A frame's scores come only from frames the decider files under the candidate, like the mesh samples, so one
person's frames never vouch for another.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np

from edge.types import Face, LivenessState, LivenessVerdict


class FrameLayer(Protocol):
    """A liveness layer that scores each frame on its own (edge.vision.antispoof.AntiSpoofLayer,
    edge.vision.ir.IrLayer): a score, or None when this frame cannot be scored (no near-infrared view)."""

    name: str

    def score(self, frame: np.ndarray, face: Face, ir: np.ndarray | None = None) -> float | None: ...

    def verdict(self, scores: Sequence[float]) -> LivenessVerdict: ...


def median_verdict(name: str, scores: Sequence[float], threshold: float, min_frames: int, max_frames: int,
                   what: str, attack: str = "") -> LivenessVerdict:
    """A frame layer's verdict: the median of its latest `max_frames` scores at or over `threshold` is LIVE,
    under it ATTACK (`what` names the score, `attack` says what that means); UNDECIDED under `min_frames`."""
    recent = list(scores)[-max_frames:]
    n = len(recent)
    if n < min_frames:
        return LivenessVerdict(LivenessState.UNDECIDED, name, f"{n} frames scored ({what}), need {min_frames}",
                               frames=n)
    median = float(np.median(recent))
    figures = {name: round(median, 4)}
    if median < threshold:
        return LivenessVerdict(LivenessState.ATTACK, name, f"{what} {median:.2f} over {n} frames (< {threshold:g})"
                               + (f": {attack}" if attack else ""), n, figures)
    return LivenessVerdict(LivenessState.LIVE, name, f"{what} {median:.2f} over {n} frames (>= {threshold:g})",
                           n, figures)


class MeshJudge(Protocol):
    """The mesh checks: edge.vision.liveness.LivenessCheck or edge.vision.challenge.ChallengeJudge."""

    def sample(self, face: Face | None, frame: np.ndarray | None = None, ir: np.ndarray | None = None) -> Any: ...

    def judge(self, samples: Sequence[Any], now: float = 0.0) -> LivenessVerdict: ...

    def new_attempt(self) -> None: ...


@dataclass(frozen=True, eq=False)
class FrameEvidence:
    """One frame's liveness evidence: the mesh checks' sample (None: they are off or saw no mesh) and
    each frame layer's score by layer name."""

    mesh: Any = None
    scores: Mapping[str, float] = field(default_factory=dict)


class LayeredLiveness:
    def __init__(self, mesh: MeshJudge | None, layers: Sequence[FrameLayer]):
        self.mesh = mesh
        self.layers = tuple(layers)

    def sample(self, face: Face | None, frame: np.ndarray | None = None,
               ir: np.ndarray | None = None) -> FrameEvidence | None:
        """The frame's evidence (`ir`: the near-infrared view of the same scene, when the build has one)."""
        if face is None:
            return None
        mesh = self.mesh.sample(face, frame, ir) if self.mesh is not None else None
        scores = {}
        for layer in self.layers if frame is not None else ():
            value = layer.score(frame, face, ir)
            if value is not None:
                scores[layer.name] = float(value)
        return FrameEvidence(mesh, scores)

    def new_attempt(self) -> None:
        if self.mesh is not None:
            self.mesh.new_attempt()

    def judge(self, samples: Sequence[FrameEvidence | None], now: float = 0.0) -> LivenessVerdict:
        verdicts = [layer.verdict([s.scores[layer.name] for s in samples
                                   if s is not None and layer.name in s.scores]) for layer in self.layers]
        for v in verdicts:
            if v.state is LivenessState.ATTACK:
                return v
        figures = {k: val for v in verdicts for k, val in v.figures.items()}
        if self.mesh is not None:
            inner = self.mesh.judge([s.mesh if s is not None else None for s in samples], now)
            if inner.state is not LivenessState.LIVE:
                return replace(inner, figures={**inner.figures, **figures})
        else:
            inner = LivenessVerdict(LivenessState.LIVE, "+".join(layer.name for layer in self.layers),
                                    "no mesh checks", frames=max((v.frames for v in verdicts), default=0))
        for v in verdicts:
            if v.state is not LivenessState.LIVE:
                return replace(v, figures={**inner.figures, **figures})
        reasons = [inner.reason] if self.mesh is not None else []
        reason = "; ".join([*reasons, *(v.reason for v in verdicts)])
        return replace(inner, reason=reason, figures={**inner.figures, **figures})
