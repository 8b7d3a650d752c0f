"""Home Assistant discovery: entities, availability, lock only with a relay, re-published on HA's birth."""

from __future__ import annotations

import json

from mqtt_broker import Subscriber

from edge.mqtt.discovery import Discovery, DiscoveryOptions, discovery_messages
from edge.mqtt.link import MqttLink, MqttOptions
from edge.mqtt.messages import Topics
from edge.mqtt.outbox import Outbox, OutboxOptions


def test_messages_without_and_with_lock():
    topics = Topics("facelock/door")
    msgs = {m.topic: m.payload for m in discovery_messages(DiscoveryOptions(), topics, "door", has_lock=False)}
    event = json.loads(msgs["homeassistant/event/facelock_door/recognition/config"])
    assert event["state_topic"] == "facelock/door/event" and "recognized" in event["event_types"]
    assert event["availability_topic"] == "facelock/door/availability"
    assert event["device"]["identifiers"] == ["facelock_door"] and event["unique_id"] == "facelock_door_recognition"
    sensor = json.loads(msgs["homeassistant/sensor/facelock_door/last_person/config"])
    assert sensor["state_topic"] == "facelock/door/state" and "last_person" in sensor["value_template"]
    assert msgs["homeassistant/lock/facelock_door/lock/config"] == ""  # removes a stale lock entity
    with_lock = {m.topic: m.payload for m in discovery_messages(DiscoveryOptions(), topics, "door", True)}
    lock = json.loads(with_lock["homeassistant/lock/facelock_door/lock/config"])
    assert lock["command_topic"] == "facelock/door/cmd/lock" and lock["retain"] is False
    assert lock["state_locked"] == "LOCKED" and lock["payload_open"] == "OPEN"


def test_published_on_connect_and_on_ha_birth(broker, tmp_path):
    link = MqttLink(MqttOptions(host="127.0.0.1", port=broker.port, device_id="door"),
                    Outbox(OutboxOptions(path=str(tmp_path / "o.db"), fsync=False)))
    disc = Discovery(DiscoveryOptions(), link, has_lock=True).attach()
    link.publish_state({"lock": "LOCKED", "last_person": "nobody"})
    link.start()
    topics = ["homeassistant/+/facelock_door/+/config", "facelock/door/state"]
    live = Subscriber(broker.port, topics)
    assert live.wait_for(lambda m: len({t for t, _, _ in m}) >= 4)
    live.close()
    # A client that subscribes afterwards (Home Assistant starting later) gets them all as retained messages.
    sub = Subscriber(broker.port, topics)
    assert sub.wait_for(lambda m: len({t for t, _, _ in m}) >= 4)
    configs = {t: p for t, p, _ in sub.messages if t.endswith("/config")}
    assert set(configs) == {f"homeassistant/{c}/facelock_door/{o}/config"
                            for c, o in (("event", "recognition"), ("sensor", "last_person"), ("lock", "lock"))}
    assert all(retained for _, _, retained in sub.messages)  # configs and state are retained
    assert json.loads(sub.on("facelock/door/state")[0][0])["last_person"] == "nobody"  # initial state
    before = disc.published
    n = len(sub.messages)
    sub.publish("homeassistant/status", b"online")
    assert sub.wait_for(lambda m: len(m) >= n + 4)
    assert disc.published == before + 1
    sub.publish("homeassistant/status", b"offline")
    link.close()
    sub.close()
