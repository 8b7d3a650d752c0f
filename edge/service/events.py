"""The events the lock reports: a decision (recognized / rejected / unknown), a lockout starting or ending.

Translates `edge.identity.decide`'s results into `RecognitionEvent` messages for the MQTT event topic
(what Home Assistant's event entity and any audit log read) and hands them to the link, which stores each
one in the durable outbox before it is sent. An event that cannot be stored (an SQLite error such as a
full disk, or a payload over `outbox.max_payload_bytes`) is logged and dropped: the door's decision has
already been made and must not wait on the report of it.
"""

from __future__ import annotations

import logging

from edge.errors import FacelockError
from edge.identity.decide import LOCKOUT, Outcome
from edge.mqtt.messages import RecognitionEvent
from edge.service.stats import StageStats

log = logging.getLogger(__name__)


class Events:
    """Builds and sends the events of one device; counts them in `stats.events`."""

    def __init__(self, link, stats: StageStats, device_id: str):
        self.link = link
        self.stats = stats
        self.device_id = device_id

    def decision(self, decision, latency_ms: float) -> None:
        """An ACCEPT or REJECT decision. A reject names its best candidate (below the bar) but never as
        `person`, so an automation keyed on the person cannot fire for a face that did not open the door."""
        accept = decision.outcome is Outcome.ACCEPT
        self.send(RecognitionEvent(
            event_type="recognized" if accept else ("rejected" if decision.person else "unknown"),
            person=decision.person if accept and decision.person else "unknown",
            decision=decision.outcome.value, score=decision.score, latency_ms=latency_ms,
            reason=decision.reason, candidate=None if accept else decision.person,
            retry_after_s=decision.retry_after_s or None, device=self.device_id))

    def lockout(self, ev) -> None:
        """A `LockoutEvent`: a lockout started (with how long until faces are tried again) or ended."""
        self.send(RecognitionEvent(event_type=ev.kind, person="unknown", decision=ev.kind,
                                   reason=f"level {ev.level}, {ev.duration_s:.0f} s",
                                   retry_after_s=round(max(0.0, ev.until - ev.time), 1) if ev.kind == LOCKOUT
                                   else None, device=self.device_id))

    def send(self, event: RecognitionEvent) -> None:
        try:
            self.link.publish_event(event)
            self.stats.events += 1
            log.info("event %s: %s %s (%s)", event.id, event.event_type, event.person, event.reason)
        except FacelockError as exc:
            log.error("event %s not stored: %s", event.id, exc)
