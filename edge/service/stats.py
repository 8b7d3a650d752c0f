"""The service's running numbers for the MQTT stats topic: frame counts and per-stage latencies, and what
became of the events (waiting, dropped at the outbox cap, refused by the broker).

Latencies roll over the last few hundred frames, so the percentiles describe the lock as it runs now (after a
thermal throttle, a slower camera), not averaged over its whole uptime.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np


class StageStats:
    """Rolling per-stage latencies and frame rate over the last `size` frames; counts since the start."""

    def __init__(self, size: int = 300):
        self.times: deque[tuple[float, dict[str, float]]] = deque(maxlen=size)
        self.frames = 0
        self.bad_frames = 0
        self.events = 0
        self.challenges = 0  # active challenges announced
        self.embedded_once = 0  # faces decided on the embedder's first run, the mirror run skipped (Decider.settled)

    def add(self, now: float, stages: dict[str, float], once: bool = False) -> None:
        """One analysed frame, started at `now` (monotonic seconds), with its stage times in ms; `once`: its
        face was decided without the embedder's mirror run (FrameAnalysis.once)."""
        self.frames += 1
        self.embedded_once += once
        self.times.append((now, stages))

    def summary(self) -> dict[str, Any]:
        """Counts, frames per second and p50/p95 latency per stage (ms), as published on the stats topic."""
        out: dict[str, Any] = {"frames": self.frames, "bad_frames": self.bad_frames, "events": self.events,
                               "challenges": self.challenges, "embedded_once": self.embedded_once}
        if len(self.times) >= 2:
            span = self.times[-1][0] - self.times[0][0]
            out["fps"] = round((len(self.times) - 1) / span, 2) if span > 0 else None
        latency: dict[str, dict[str, float]] = {}
        names = sorted({k for _, st in self.times for k in st})
        for name in names:
            values = np.array([st[name] for _, st in self.times if name in st])
            latency[name] = {"p50": round(float(np.percentile(values, 50)), 2),
                             "p95": round(float(np.percentile(values, 95)), 2)}
        out["latency_ms"] = latency
        return out


def stage_dict(times) -> dict[str, float]:
    """A pipeline's `StageTimes` as the flat {stage: ms} that `StageStats.add` takes (extras included)."""
    d = {"detect": times.detect, "align": times.align, "embed": times.embed, "match": times.match}
    d.update(times.extra)
    d["total"] = times.total
    return d


def delivery_state(outbox, link) -> dict[str, Any]:
    """For the retained state: topics the broker refuses publishes on now ({topic: {"reason", "count"}}; the
    refused events wait in the outbox), subscriptions it refused ({topic: reason}: commands that cannot
    arrive) and the events dropped at the outbox cap since it was created."""
    return {"refused": link.refused, "subscriptions_refused": dict(link.granted.refused),
            "outbox_dropped": outbox.dropped}


def delivery_stats(outbox, link) -> dict[str, Any]:
    """For the stats message: `delivery_state`, the backlog, security events kept beyond the outbox cap,
    refusals since the start and the (re)connections."""
    return {**delivery_state(outbox, link), "outbox_pending": len(outbox), "outbox_over_cap": outbox.over_cap,
            "refused_total": link.refusals.total, **link.connection.summary()}


def delivery_version(outbox, link) -> tuple[int, int, int]:
    """Changes when `delivery_state` does: the state is published again then."""
    return link.refusals.version, link.granted.version, outbox.dropped
