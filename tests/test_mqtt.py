"""The MQTT link against a real Mosquitto: availability and last will, retained state, events through the
outbox, and commands (valid, malformed, oversized, retained, disabled)."""

from __future__ import annotations

import json
import os
import queue
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mqtt_broker import Subscriber

from edge.mqtt.commands import CommandRejected, parse_command
from edge.mqtt.link import MqttLink, MqttOptions
from edge.mqtt.messages import RecognitionEvent
from edge.mqtt.outbox import Outbox, OutboxOptions

HERE = Path(__file__).resolve().parent


def _link(broker, tmp_path, **kw) -> MqttLink:
    options = MqttOptions(host="127.0.0.1", port=broker.port, device_id="t1", reconnect_max_s=1.0, **kw)
    link = MqttLink(options, Outbox(OutboxOptions(path=str(tmp_path / "outbox.db"), fsync=False))).start()
    assert link.wait_subscribed(10)  # connected, and its commands subscription is in place
    return link


def test_event_payload_shape():
    d = json.loads(RecognitionEvent("recognized", "alice", "accept", score=0.91234, latency_ms=12.345).to_json())
    assert d["schema"] == "facelock.event/1" and d["person"] == "alice" and d["score"] == 0.9123
    assert len(d["id"]) == 32 and d["time"].endswith("Z") and "T" in d["time"]
    assert RecognitionEvent("x", "a", "b").id != RecognitionEvent("x", "a", "b").id


def test_availability_state_and_events(broker, tmp_path):
    link = _link(broker, tmp_path)
    sub = Subscriber(broker.port, ["facelock/t1/#"])
    link.publish_state({"lock": "LOCKED", "last_person": "nobody"})
    eid = link.publish_event(RecognitionEvent("recognized", "alice", "accept", score=0.9))
    assert sub.wait_for(lambda m: any(t == "facelock/t1/event" for t, _, _ in m))
    (payload, retained), = sub.on("facelock/t1/event")
    assert json.loads(payload)["id"] == eid and not retained
    assert link.flush(5) and len(link.outbox) == 0
    sub.close()
    # a late subscriber still sees the retained availability and state
    late = Subscriber(broker.port, ["facelock/t1/availability", "facelock/t1/state"])
    assert late.wait_for(lambda m: len(m) >= 2)
    assert late.on("facelock/t1/availability") == [(b"online", True)]
    state, retained = late.on("facelock/t1/state")[0]
    assert retained and json.loads(state)["last_person"] == "nobody"
    link.close()
    assert late.wait_for(lambda m: (b"offline", False) in [(p, r) for t, p, r in m if t.endswith("availability")])
    late.close()


def test_last_will_on_sigkill(broker, tmp_path):
    sub = Subscriber(broker.port, ["facelock/dur/availability"])
    env = dict(os.environ, PYTHONPATH=str(HERE.parent))
    proc = subprocess.Popen([sys.executable, str(HERE / "durability_publisher.py"), str(broker.port),
                             str(tmp_path / "o.db"), "100000", "0", "0.5"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert sub.wait_for(lambda m: any(p == b"online" for _, p, _ in m))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert sub.wait_for(lambda m: m and m[-1][1] == b"offline", timeout=10), sub.messages
    finally:
        if proc.poll() is None:
            proc.kill()
        sub.close()


def test_events_wait_in_outbox_while_broker_down(broker, tmp_path):
    link = _link(broker, tmp_path)
    broker.stop()
    deadline = time.monotonic() + 5
    while link.connected and time.monotonic() < deadline:
        time.sleep(0.05)
    ids = [link.publish_event(RecognitionEvent("unknown", "unknown", "reject")) for _ in range(3)]
    assert len(link.outbox) == 3
    broker.start()
    sub = Subscriber(broker.port, ["facelock/t1/event"])
    assert link.wait_connected(10)
    assert link.flush(10)
    assert sub.wait_for(lambda m: {json.loads(p)["id"] for _, p, _ in m} >= set(ids))
    link.close()
    sub.close()


def test_close_waits_for_the_reconnect_to_deliver_the_backlog(broker, tmp_path):
    """SIGTERM while the broker is just back and the link is still in its reconnect back-off: close() must
    reconnect and deliver, not leave the events behind."""
    link = _link(broker, tmp_path)
    assert link.wait_connected(10)
    broker.stop()
    deadline = time.monotonic() + 5
    while link.connected and time.monotonic() < deadline:
        time.sleep(0.05)
    for _ in range(5):
        link.publish_event(RecognitionEvent("recognized", "alice", "accept"))
    broker.start()
    assert not link.connected  # still backing off
    link.close(flush_timeout=10)
    assert len(link.outbox) == 0  # every event acknowledged by the broker before close() returned


def test_no_subscriber_is_not_a_refusal(broker, tmp_path):
    """MQTT 5: with nobody subscribed Mosquitto answers PUBACK 0x10 "No matching subscribers", a success
    reason code: the event is the broker's, not refused."""
    link = _link(broker, tmp_path)
    for _ in range(3):
        link.publish_event(RecognitionEvent("recognized", "alice", "accept"))
    assert link.flush(10) and len(link.outbox) == 0
    assert link.refused == {} and link.refusals.total == 0
    link.close()


def test_commands_valid_and_malformed(secure_broker, tmp_path):
    broker, account = secure_broker.broker, secure_broker.tls_options("lock")  # commands need TLS and an account
    link = _link(broker, tmp_path, commands=True, **account)
    sub = secure_broker.client("admin", ["facelock/t1/reply"])
    base = "facelock/t1/cmd/"
    rng = random.Random(4)
    bad = [
        ("remove", bytes(rng.getrandbits(8) for _ in range(200))),  # random bytes
        ("remove", b'{"name": 5}'),  # wrong type
        ("enroll", b'{"name": "bob", "frames": "3"}'),
        ("enroll", b'{"name": "bob", "frames": true}'),
        ("remove", b"[1, 2]"),  # not an object
        ("remove", b'{"name": "bob", "extra": 1}'),  # unknown key
        ("remove", b'{"name": "bo/b"}'),  # bad name
        ("remove", b'{"name": "x' + b"a" * (1 << 20) + b'"}'),  # 1 MB
        ("reboot", b"{}"),  # unknown command
        ("lock", b"SMASH"),
    ]
    for name, payload in bad:
        sub.publish(base + name, payload)
    # Each is queued as refused (the service answers and audits it: tests/test_service.py), none can act.
    rejected = [link.commands.get(timeout=10) for _ in bad]
    assert all(c.rejected and c.args == {} for c in rejected), rejected
    assert [c.name for c in rejected] == [name for name, _ in bad]
    errors = " | ".join(c.rejected for c in rejected)
    for fragment in ("not UTF-8", "key 'name' = 5: expected str", "key 'frames'", "JSON list", "unknown key",
                     "not allowed", "bytes, at most 4096", "unknown command 'reboot'", "LOCK, UNLOCK"):
        assert fragment in errors, (fragment, errors)
    assert link.commands.empty()
    # still alive: valid commands are queued
    sub.publish(base + "reload", b"")
    sub.publish(base + "remove", b'{"name": "alice", "id": "r1"}')
    first = link.commands.get(timeout=5)
    second = link.commands.get(timeout=5)
    assert first.name == "reload" and second.name == "remove"
    assert second.args == {"name": "alice"} and second.request_id == "r1"
    # a retained command is refused when it arrives as retained (on (re)subscribing): it would replay
    sub.publish(base + "lock", b"UNLOCK", retain=True)
    assert link.commands.get(timeout=5).args == {"action": "UNLOCK"}  # live: delivered as a fresh message
    link.close()
    link = _link(broker, tmp_path, commands=True, **account)
    replayed = link.commands.get(timeout=10)
    assert replayed.name == "lock" and "retained" in replayed.rejected
    with pytest.raises(queue.Empty):
        link.commands.get(timeout=0.3)
    sub.publish(base + "lock", b"", retain=True)  # clear it from the broker
    link.close()
    sub.close()


def test_commands_off_by_default(broker, tmp_path):
    link = _link(broker, tmp_path)
    sub = Subscriber(broker.port, ["facelock/t1/reply"])
    sub.publish("facelock/t1/cmd/remove", b'{"name": "alice"}')
    time.sleep(0.5)
    assert link.commands.empty() and not sub.on("facelock/t1/reply")
    link.close()
    sub.close()


def test_parse_command_unit():
    assert parse_command("lock", b"open", 100).args == {"action": "OPEN"}
    assert parse_command("enroll", b'{"name": "Bob", "frames": 3}', 100).args == {"name": "Bob", "frames": 3}
    with pytest.raises(CommandRejected, match="reserved"):
        parse_command("remove", b'{"name": "unknown"}', 100)
    with pytest.raises(CommandRejected, match="frames"):
        parse_command("enroll", b'{"name": "Bob", "frames": 0}', 100)
    with pytest.raises(CommandRejected, match="missing"):
        parse_command("remove", b"{}", 100)
