"""Enrolling from a live camera: which frames' embeddings are taken, and when the collection is over.

One rule for both ways of enrolling at the door, so they cannot drift apart: the `enroll` MQTT command
(`edge.service.commands`, collecting from the service's own frames) and `facelock enroll --camera`
(`facelock.commands.people`, opening the camera itself). A frame is taken when

- the pipeline made an embedding (the subject passed every quality gate) of a face that is not dim
  (edge.vision.quality: a dim face may vote at a higher bar, but a template needs good light),
- at most one face is big enough to count (`min_face_px`): with two people in view the subject may be the
  wrong one, and a gallery polluted with a stranger's face opens the door for them,
- it is at least `interval_s` after the last one taken, so the templates come from different moments
  (slightly different pose and light) rather than from one instant repeated;

and the collection is done after `wanted` frames, or expired `timeout_s` after it started.
"""

from __future__ import annotations

import time

import numpy as np


class FrameCollector:
    """Collects `wanted` embeddings from frame analyses (`edge.vision.pipeline.FrameAnalysis`)."""

    def __init__(self, wanted: int, interval_s: float, timeout_s: float, min_face_px: float,
                 now: float | None = None):
        self.wanted = wanted
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.min_face_px = min_face_px
        self.deadline = (time.monotonic() if now is None else now) + timeout_s
        self.taken: list[np.ndarray] = []
        self.last_taken = float("-inf")  # the frame timestamp of the last embedding taken

    def refusal(self, analysis) -> str:
        """Why this frame can never be taken, for the person in front of the camera ("" when it can;
        it may still come too soon after the last one)."""
        big = [f for f in analysis.faces if min(f.width, f.height) >= self.min_face_px]
        if len(big) > 1:
            return f"{len(big)} faces in view: only the person to enrol, please"
        if not analysis.usable:
            return analysis.reason
        # a template is compared with every later face: it needs good light
        if analysis.quality is not None and analysis.quality.dim:
            return f"face too dim to enrol (contrast {analysis.quality.contrast:.1f}): more light on the face"
        return ""

    def offer(self, analysis, timestamp: float) -> bool:
        """Take the frame's embedding when it qualifies (see the module docstring); True when taken."""
        if self.done or self.refusal(analysis) or timestamp - self.last_taken < self.interval_s:
            return False
        self.taken.append(analysis.embedding)
        self.last_taken = timestamp
        return True

    @property
    def done(self) -> bool:
        return len(self.taken) >= self.wanted

    def expired(self, now: float | None = None) -> bool:
        """True once `timeout_s` has passed since the collection started (monotonic clock)."""
        return (time.monotonic() if now is None else now) > self.deadline

    def embeddings(self) -> np.ndarray:
        """The embeddings taken, (N, D), in the order they were taken."""
        return np.stack(self.taken)
