"""The host's side of MQTT for the board test: a Mosquitto broker on 127.0.0.1 (tests/mqtt_broker.py, with
persistence, so it can be stopped and started again on the same port) and a subscriber with a persistent
session, so messages published while it was away (broker restarts) still reach it."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for mqtt_broker
from mqtt_broker import MOSQUITTO, Broker

__all__ = ["MOSQUITTO", "Broker", "Subscriber"]


class Subscriber:
    """Everything under facelock/# at QoS 1; `events` maps event id -> payload (first copy), `duplicates`
    counts copies received again (delivery is at-least-once)."""

    def __init__(self, port: int, client_id: str = "facelock-board-test"):
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.lock = threading.Lock()
        self.events: dict[str, dict] = {}
        self.order: list[str] = []
        self.duplicates = 0
        self.states: dict[str, dict] = {}
        self.availability: dict[str, str] = {}
        self.messages = 0
        self.subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        self.client.on_connect = lambda c, *a: c.subscribe("facelock/#", qos=1)
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(min_delay=1, max_delay=2)
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        if not self.subscribed.wait(20):
            raise RuntimeError(f"subscriber: no SUBACK from 127.0.0.1:{port}")

    def _on_message(self, client, userdata, msg) -> None:
        topic = msg.topic
        text = msg.payload.decode(errors="replace")
        with self.lock:
            self.messages += 1
            device = topic.split("/")[1] if topic.count("/") >= 2 else ""
            if topic.endswith("/event"):
                try:
                    event = json.loads(text)
                except ValueError:
                    return
                eid = event.get("id", "")
                if eid in self.events:
                    self.duplicates += 1
                else:
                    self.events[eid] = event
                    self.order.append(eid)
            elif topic.endswith("/state"):
                try:
                    self.states[device] = json.loads(text)
                except ValueError:
                    pass
            elif topic.endswith(("/availability", "/status")):
                self.availability[device] = text

    def event_ids(self, device: str | None = None) -> set[str]:
        with self.lock:
            return {i for i, e in self.events.items() if device is None or e.get("device") == device}

    def decisions(self, device: str | None = None) -> dict[str, int]:
        with self.lock:
            out: dict[str, int] = {}
            for e in self.events.values():
                if device is None or e.get("device") == device:
                    key = f"{e.get('event_type')}:{e.get('person')}"
                    out[key] = out.get(key, 0) + 1
            return out

    def wait_for(self, predicate, timeout: float, poll: float = 2.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(poll)
        return predicate()

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
