"""What the lock publishes over MQTT: the topics and the payload formats (the one place that defines them).

Topics, all under `<base_topic>/<device_id>/` (default `facelock/<device_id>/`):

- `event`         QoS 1, never retained: one JSON `RecognitionEvent` per decision worth telling
                  (schema "facelock.event/1", unique `id`; delivery is at-least-once, drop duplicates by id).
- `availability`  retained `online`; the last will (and a clean shutdown) sets `offline`.
- `state`         retained JSON (schema "facelock.state/1"): lock state, last person, lockout, gallery size.
- `stats`         QoS 0 every `stats_interval_s`: fps, per-stage latency p50/p95, backend, outbox size.
- `cmd/<name>`    commands, only when `commands = true` (off by default): `reload`, `enroll`, `remove`,
                  `rename`, `unlock` (signed, edge.mqtt.signing) and `lock` (plain LOCK / UNLOCK / OPEN,
                  for Home Assistant's lock entity); see edge.mqtt.commands. Each is audited on `event`.
- `reply`         one JSON reply per command (schema "facelock.reply/1"), ok or the error.
- `challenge`     QoS 1, never retained, sent at once or not at all (a stale one means nothing): the move
                  the active challenge asks for (schema "facelock.challenge/1"; `event_type` the action, as
                  Home Assistant's event entity reads it, `prompt` the words to say, `deadline_s`, `pulses`).

Every JSON payload carries its `schema` and a UTC `time` (ISO-8601 with milliseconds and `Z`).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

EVENT_SCHEMA = "facelock.event/1"
STATE_SCHEMA = "facelock.state/1"
STATS_SCHEMA = "facelock.stats/1"
REPLY_SCHEMA = "facelock.reply/1"
CHALLENGE_SCHEMA = "facelock.challenge/1"
ONLINE, OFFLINE = "online", "offline"
# Events the outbox never drops at its cap (with any event whose decision is "accept": the door opened).
SECURITY_EVENT_TYPES = frozenset({"lockout", "unlock_allowed", "command", "attack_suspected"})


def utc_now() -> str:
    """UTC ISO-8601 with milliseconds and `Z`."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_event_id() -> str:
    return uuid.uuid4().hex


def compact(payload: dict[str, Any]) -> str:
    """JSON without spaces, as every payload is sent."""
    return json.dumps(payload, separators=(",", ":"))


def state_payload(state: dict[str, Any]) -> bytes:
    """The retained `state` message."""
    return compact({"schema": STATE_SCHEMA, "time": utc_now(), **state}).encode()


def stats_payload(stats: dict[str, Any]) -> str:
    """A `stats` message."""
    return compact({"schema": STATS_SCHEMA, "time": utc_now(), **stats})


def challenge_payload(action: str, prompt: str, deadline_s: float, pulses: int) -> str:
    """A `challenge` message (edge.types.Challenge's fields)."""
    return compact({"schema": CHALLENGE_SCHEMA, "time": utc_now(), "event_type": action, "prompt": prompt,
                    "deadline_s": deadline_s, "pulses": pulses})


def reply_payload(command: str, request_id: str | None, ok: bool, error: str = "",
                  result: dict[str, Any] | None = None) -> str:
    """The `reply` to one command: `id` echoes the request's, `error` when refused or failed."""
    payload: dict[str, Any] = {"schema": REPLY_SCHEMA, "time": utc_now(), "command": command, "ok": ok}
    if request_id is not None:
        payload["id"] = request_id
    if error:
        payload["error"] = error
    if result:
        payload["result"] = result
    return compact(payload)


@dataclass(frozen=True)
class Topics:
    base: str  # facelock/<device_id>

    @classmethod
    def of(cls, base_topic: str, device_id: str) -> Topics:
        return cls(f"{base_topic}/{device_id}")

    @property
    def event(self) -> str:
        return f"{self.base}/event"

    @property
    def availability(self) -> str:
        return f"{self.base}/availability"

    @property
    def state(self) -> str:
        return f"{self.base}/state"

    @property
    def stats(self) -> str:
        return f"{self.base}/stats"

    @property
    def reply(self) -> str:
        return f"{self.base}/reply"

    @property
    def challenge(self) -> str:
        return f"{self.base}/challenge"

    @property
    def commands(self) -> str:
        return f"{self.base}/cmd/#"

    def command(self, name: str) -> str:
        return f"{self.base}/cmd/{name}"


@dataclass(frozen=True)
class RecognitionEvent:
    """One event message. `event_type`: recognized | unknown | rejected | attack_suspected (a print or screen,
    `reason` names the liveness check) | lockout | unlock_allowed | command (Home Assistant's event entity uses it); `person` is a name or "unknown". A `command` event is the audit
    record of one command: `command`, `decision` accepted | refused | done | failed, `reason`, `request_id`,
    `signed`, `target` (the person it is about); never the signature."""

    event_type: str
    person: str
    decision: str
    score: float | None = None
    latency_ms: float | None = None
    reason: str = ""
    candidate: str | None = None  # best guess below the bar, for rejects
    retry_after_s: float | None = None
    device: str = ""
    command: str | None = None  # command audit events only
    request_id: str | None = None
    signed: bool | None = None
    target: str | None = None
    id: str = field(default_factory=new_event_id)
    time: str = field(default_factory=utc_now)

    def to_dict(self) -> dict[str, Any]:
        d = {"schema": EVENT_SCHEMA, **asdict(self)}
        if d["score"] is not None:
            d["score"] = round(d["score"], 4)
        if d["latency_ms"] is not None:
            d["latency_ms"] = round(d["latency_ms"], 1)
        return {k: v for k, v in d.items() if v is not None}

    def to_json(self) -> bytes:
        return compact(self.to_dict()).encode()

    @property
    def security(self) -> bool:
        """A lockout, its end, a face that opened the door, or a command's audit record: what an owner (or
        an investigation) needs most, so the outbox keeps it when full (edge.mqtt.outbox)."""
        return is_security_event(self.event_type, self.decision)


def is_security_event(event_type: object, decision: object) -> bool:
    return (isinstance(event_type, str) and event_type in SECURITY_EVENT_TYPES) or decision == "accept"


def is_security_payload(payload: bytes) -> bool:
    """`RecognitionEvent.security` of a stored event payload (False for anything that is not one)."""
    try:
        d = json.loads(payload)
    except (ValueError, RecursionError):
        return False
    return isinstance(d, dict) and is_security_event(d.get("event_type"), d.get("decision"))
