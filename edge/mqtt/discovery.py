"""Home Assistant MQTT discovery: the lock appears in Home Assistant without any YAML.

Entities, one device (`facelock_<device_id>`), all wired to the availability topic:
- `event`  recognitions: state topic = the event topic; `event_type` is recognized | unknown | rejected |
           attack_suspected (liveness: a print or a screen) | lockout | unlock_allowed | command (the audit
           of a command); the other keys become attributes.
- `sensor` the last person recognized ("nobody" until someone is; published at start so it is never
           "unknown"), from the retained state topic; the whole state as attributes.
- `lock`   only when it can act (`offers_lock_entity`): a relay, and Home Assistant allowed to unlock
           (`mqtt.unsigned_unlock`, which needs commands, TLS and credentials). State LOCKED / UNLOCKED from
           the state topic, commands on `.../cmd/lock` (LOCK / UNLOCK / OPEN), never retained. Otherwise an
           empty retained config removes a lock entity left from an earlier setup: a lock whose unlock is
           ignored would only mislead.

Configs are retained and published after every connect and whenever Home Assistant's status topic says
`online` (its birth message after a restart), followed by the current state.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from edge import __version__
from edge.mqtt.messages import OFFLINE, ONLINE, Topics
from edge.options import check

log = logging.getLogger(__name__)

EVENT_TYPES = ("recognized", "unknown", "rejected", "attack_suspected", "lockout", "unlock_allowed", "command")


def offers_lock_entity(mqtt_options, has_relay: bool) -> bool:
    """Whether Home Assistant gets a lock entity: only when its UNLOCK can act (a relay, commands on and
    `unsigned_unlock` opted in; Home Assistant's lock entity cannot sign)."""
    return has_relay and mqtt_options.commands and mqtt_options.unsigned_unlock


@dataclass(frozen=True)
class DiscoveryOptions:
    """Home Assistant MQTT discovery."""

    enabled: bool = True
    """Publish discovery configs for Home Assistant."""
    prefix: str = "homeassistant"
    """Home Assistant's discovery prefix."""
    status_topic: str = "homeassistant/status"
    """Home Assistant's birth/last-will topic; discovery is published again when it says `online`."""
    device_name: str = ""
    """Device name shown in Home Assistant; empty: "Facelock <device_id>"."""

    def validate(self) -> DiscoveryOptions:
        return check("homeassistant", self, [
            (key, _plain_topic(getattr(self, key)), "a topic without wildcards")
            for key in ("prefix", "status_topic")
        ])


def _plain_topic(value: str) -> bool:
    return bool(value) and not any(c in value for c in "#+") and not value.endswith("/")


@dataclass(frozen=True)
class DiscoveryMessage:
    topic: str
    payload: str  # JSON, or "" to remove the entity


def discovery_messages(options: DiscoveryOptions, topics: Topics, device_id: str, has_lock: bool,
                       model: str = "facelock", challenge_actions: tuple[str, ...] = ()) -> list[DiscoveryMessage]:
    """The retained config messages for this device (pure: no network); `has_lock`: offer the lock entity
    (`offers_lock_entity`); `challenge_actions`: offer the challenge's event entity, whose automation can
    speak the prompt (its `prompt` attribute) on a speaker by the door (empty: the challenge is off)."""
    node = f"facelock_{device_id}"
    device = {"identifiers": [node], "name": options.device_name or f"Facelock {device_id}",
              "model": model, "manufacturer": "facelock", "sw_version": __version__}
    common: dict[str, Any] = {
        "device": device,
        "origin": {"name": "facelock", "sw_version": __version__},
        "availability_topic": topics.availability,
        "payload_available": ONLINE,
        "payload_not_available": OFFLINE,
    }
    event = {**common, "unique_id": f"{node}_recognition", "name": "Recognition", "state_topic": topics.event,
             "event_types": list(EVENT_TYPES), "icon": "mdi:face-recognition"}
    sensor = {**common, "unique_id": f"{node}_last_person", "name": "Last person", "state_topic": topics.state,
              "value_template": "{{ value_json.last_person }}", "json_attributes_topic": topics.state,
              "icon": "mdi:account"}
    messages = [
        DiscoveryMessage(f"{options.prefix}/event/{node}/recognition/config", json.dumps(event)),
        DiscoveryMessage(f"{options.prefix}/sensor/{node}/last_person/config", json.dumps(sensor)),
    ]
    challenge_topic = f"{options.prefix}/event/{node}/challenge/config"
    if challenge_actions:
        challenge = {**common, "unique_id": f"{node}_challenge", "name": "Liveness challenge",
                     "state_topic": topics.challenge, "event_types": list(challenge_actions),
                     "icon": "mdi:head-sync"}
        messages.append(DiscoveryMessage(challenge_topic, json.dumps(challenge)))
    else:
        messages.append(DiscoveryMessage(challenge_topic, ""))
    lock_topic = f"{options.prefix}/lock/{node}/lock/config"
    if has_lock:
        lock = {**common, "unique_id": f"{node}_lock", "name": "Door", "state_topic": topics.state,
                "value_template": "{{ value_json.lock }}", "command_topic": topics.command("lock"),
                "payload_lock": "LOCK", "payload_unlock": "UNLOCK", "payload_open": "OPEN",
                "state_locked": "LOCKED", "state_unlocked": "UNLOCKED", "retain": False, "optimistic": False,
                "qos": 1}
        messages.append(DiscoveryMessage(lock_topic, json.dumps(lock)))
    else:
        messages.append(DiscoveryMessage(lock_topic, ""))
    return messages


class Discovery:
    """Publishes the configs through an `MqttLink` on connect and on Home Assistant's birth message;
    `has_lock`: offer the lock entity (`offers_lock_entity`)."""

    def __init__(self, options: DiscoveryOptions, link, has_lock: bool, model: str = "facelock",
                 challenge_actions: tuple[str, ...] = ()):
        self.options = options
        self.link = link
        self.messages = discovery_messages(options, link.topics, link.options.device_id, has_lock, model,
                                           challenge_actions)
        self.published = 0

    def attach(self) -> Discovery:
        if not self.options.enabled:
            return self
        self.link.subscriptions[self.options.status_topic] = self.on_ha_status
        self.link.on_connected.insert(0, self.publish)
        return self

    def on_ha_status(self, payload: bytes) -> None:
        """Home Assistant's status topic: `online` is its birth message (it restarted and forgot us)."""
        if payload.strip() == b"online":
            log.info("mqtt: Home Assistant is online; publishing discovery again")
            self.republish()

    def publish(self) -> None:
        for m in self.messages:
            self.link.publish_raw(m.topic, m.payload, qos=1, retain=True)
        self.published += 1

    def republish(self) -> None:
        """After Home Assistant restarted: configs, then the current state again."""
        self.publish()
        self.link.republish_state()
