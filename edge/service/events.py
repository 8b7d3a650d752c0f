"""The events the lock reports: a decision (recognized / rejected / unknown / attack_suspected: the liveness
checks took the face for a print or a screen, and the reason names the check), a lockout starting or ending,
and the audit record of every command (accepted or refused, and why).

Translates `edge.identity.decide`'s results into `RecognitionEvent` messages for the MQTT event topic
(what Home Assistant's event entity and any audit log read) and hands them to the link, which stores each
one in the durable outbox before it is sent. An event that cannot be stored (an SQLite error such as a
full disk, or a payload over `outbox.max_payload_bytes`) is logged and dropped: the door's decision has
already been made and must not wait on the report of it.

A reject says nothing about how close the face came (no candidate, no score, a reason without either)
unless `mqtt.reveal_candidates` is on: a stranger who can read the events could otherwise tune a photo
against the lock, one reject at a time.
"""

from __future__ import annotations

import logging

from edge.errors import FacelockError
from edge.identity.decide import Outcome
from edge.identity.lockout_store import LOCKOUT
from edge.mqtt.messages import RecognitionEvent
from edge.service.stats import StageStats

log = logging.getLogger(__name__)


class Events:
    """Builds and sends the events of one device; counts them in `stats.events`."""

    def __init__(self, link, stats: StageStats, device_id: str, reveal_candidates: bool = False):
        self.link = link
        self.stats = stats
        self.device_id = device_id
        self.reveal_candidates = reveal_candidates

    def decision(self, decision, latency_ms: float) -> None:
        """An ACCEPT or REJECT decision. A reject never names anyone as `person` (an automation keyed on
        the person cannot fire for a face that did not open the door); with `reveal_candidates` it names
        its best candidate (below the bar) and score, else it says only that the attempt failed."""
        accept = decision.outcome is Outcome.ACCEPT
        if decision.outcome is Outcome.ATTACK:  # distinct from a stranger; whose photo it was stays hidden
            event_type, score, candidate = "attack_suspected", None, None
            check = decision.liveness.check if decision.liveness is not None else "liveness"
            reason = decision.reason if self.reveal_candidates else \
                f"attack suspected: {check} ({decision.attempt_frames} frames)"
            if self.reveal_candidates:
                score, candidate = decision.score, decision.person
        elif accept or self.reveal_candidates:
            event_type = "recognized" if accept else ("rejected" if decision.person else "unknown")
            score, reason, candidate = decision.score, decision.reason, None if accept else decision.person
        else:  # "unknown" vs "rejected" would tell whether some enrolled face came close: one type for both
            event_type, score, candidate = "rejected", None, None
            reason = f"attempt failed ({decision.attempt_frames} frames)"
        self.send(RecognitionEvent(
            event_type=event_type, person=decision.person if accept and decision.person else "unknown",
            decision=decision.outcome.value, score=score, latency_ms=latency_ms, reason=reason,
            candidate=candidate, retry_after_s=decision.retry_after_s or None, device=self.device_id))

    def command(self, name: str, decision: str, reason: str, request_id: str | None, signed: bool,
                target: str | None = None) -> None:
        """The audit record of one command: `decision` accepted | refused (never acted) | done | failed
        (accepted, then it did not work out); `reason` says why. Never the key or the signature."""
        self.send(RecognitionEvent(event_type="command", person="unknown", decision=decision, reason=reason,
                                   device=self.device_id, command=name, request_id=request_id, signed=signed,
                                   target=target))

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
