"""The service loop with stand-in model stages, a real gallery, a real broker and gpiozero's mock pins:
accept -> relay + event + state; bad frames skipped; commands; SIGTERM; sd_notify."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time

import numpy as np
from mqtt_broker import Subscriber
from support.fake_service import FakeAligner, FakeDetector

from edge.device.sources import Frame
from edge.device.systemd import sd_notify
from edge.identity.gallery import Gallery
from edge.mqtt.outbox import Outbox
from edge.service.config import default_config
from edge.service.loop import Service

DIM = 8
PEOPLE = {1: np.eye(DIM, dtype=np.float32)[0], 2: np.eye(DIM, dtype=np.float32)[1]}  # 1 alice, 2 stranger


class FakeEmbedder:
    name = "fake"

    def embed(self, chips):
        who = int(chips[0, 0, 0, 0])
        if who == 9:
            raise RuntimeError("interpreter exploded")
        return PEOPLE.get(who, np.eye(DIM, dtype=np.float32)[2])[None]


def frame(who: int, i: int = 0) -> Frame:
    img = np.zeros((200, 200, 3), np.uint8)
    img[0, 0, 0] = who
    return Frame(img, time.monotonic(), i, f"f{i}")


class ListSource:
    def __init__(self, items, interval=0.0, forever=False):
        self.items, self.interval, self.forever = items, interval, forever

    def frames(self):
        i = 0
        while True:
            for item in self.items:
                time.sleep(self.interval)
                yield frame(item, i) if isinstance(item, int) else item
                i += 1
            if not self.forever:
                return

    def close(self):
        pass


def _config(tmp_path, port, **mqtt):
    gallery = tmp_path / "gallery.db"
    with Gallery(gallery) as g:
        g.enroll("alice", PEOPLE[1][None])
    c = default_config()
    c = c.replace("gallery", path=str(gallery)).replace("outbox", path=str(tmp_path / "outbox.db"), fsync=False)
    c = c.replace("mqtt", host="127.0.0.1", port=port, device_id="svc", reconnect_max_s=1.0, **mqtt)
    c = c.replace("quality", min_sharpness=0.0, min_contrast=0.0, min_face_px=10.0, min_eye_distance_px=1.0,
                  max_yaw_deg=90.0, max_roll_deg=180.0, dim_contrast=0.0)
    c = c.replace("decide", threshold=0.5, k=2, n=3, min_attempt_frames=1, attempt_gap_s=0.05)
    c = c.replace("relay", enabled=True, pin_factory="mock", unlock_s=0.5)
    # the fake stages have no landmark model, so no mesh to judge: liveness has its own tests
    c = c.replace("liveness", enabled=False)
    return c.replace("service", shutdown_flush_s=5.0)


def _relay(config):
    from gpiozero.pins.mock import MockFactory

    from edge.device.relay import Relay

    factory = MockFactory()
    return Relay(config.relay, pin_factory=factory), factory.pin(config.relay.pin)


def test_accept_unlocks_publishes_and_survives_bad_frames(broker, tmp_path):
    config = _config(tmp_path, broker.port)
    relay, pin = _relay(config)
    sub = Subscriber(broker.port, ["facelock/svc/#"])
    truncated = Frame(np.zeros((5,), np.uint8), time.monotonic(), 99, "truncated")
    wrong = Frame("not an image", time.monotonic(), 98, "wrong")
    items = [0, 9, truncated, wrong, 1, 9, 1, 1, 0]
    states = []
    service = Service(config, components=(FakeDetector(), FakeAligner(), FakeEmbedder()),
                      source_factory=lambda _o: ListSource(items, 0.01), relay=relay, install_signals=False)
    orig = relay.unlock
    relay.unlock = lambda s=None: (orig(s), states.append(pin.state))
    assert service.run() == 0
    assert states == [1]  # energised on the accept
    assert service.stats.bad_frames == 4
    assert sub.wait_for(lambda m: any(t.endswith("/event") for t, _, _ in m))
    (payload, retained), = sub.on("facelock/svc/event")
    event = json.loads(payload)
    assert event["person"] == "alice" and event["event_type"] == "recognized" and event["decision"] == "accept"
    assert not retained and event["latency_ms"] >= 0
    assert sub.wait_for(lambda m: any(p == b"offline" for t, p, _ in m if t.endswith("availability")))
    last_state = json.loads(sub.on("facelock/svc/state")[-1][0])
    assert last_state["last_person"] == "alice" and last_state["lock"] in ("LOCKED", "UNLOCKED")
    assert pin.state == 0  # released at shutdown
    sub.close()


def test_state_follows_the_relay_locking_again_on_its_own(broker, tmp_path):
    """Home Assistant's lock entity reads the retained state: after the unlock period it must say LOCKED
    again while the service runs on, not only at the next decision."""
    config = _config(tmp_path, broker.port).replace("relay", enabled=True, pin_factory="mock", unlock_s=0.3)
    relay, _ = _relay(config)
    sub = Subscriber(broker.port, ["facelock/svc/state"])
    service = Service(config, components=(FakeDetector(), FakeAligner(), FakeEmbedder()),
                      source_factory=lambda _o: ListSource([1, 1, 1] + [0] * 1000, 0.01), relay=relay,
                      install_signals=False)
    thread = threading.Thread(target=service.run)
    thread.start()
    try:
        def relocked(messages) -> bool:
            locks = [json.loads(p)["lock"] for _, p, _ in messages]
            return "UNLOCKED" in locks and "LOCKED" in locks[locks.index("UNLOCKED"):]

        assert sub.wait_for(relocked, timeout=10)
        assert thread.is_alive()  # published by the running loop, not by the shutdown
    finally:
        service.stopping = True
        thread.join(20)
        sub.close()


def test_relay_times_out():
    from gpiozero.pins.mock import MockFactory

    from edge.device.relay import Relay, RelayOptions

    factory = MockFactory()
    relay = Relay(RelayOptions(enabled=True, pin=5, unlock_s=0.2), pin_factory=factory)
    relay.unlock()
    assert factory.pin(5).state == 1 and relay.is_unlocked
    time.sleep(0.4)
    assert factory.pin(5).state == 0
    relay.unlock(5)
    relay.lock()
    assert factory.pin(5).state == 0
    relay.close()


def test_commands_remove_unknown_and_known(secure_broker, tmp_path):
    """Signed removes (tests/test_commands_security.py attacks the boundary), a malformed command, a LOCK."""
    from edge.mqtt.signing import new_key, sign, write_key_file

    key = new_key()
    write_key_file(tmp_path / "command.key", key)
    config = _config(tmp_path, secure_broker.port, commands=True, command_key_file=str(tmp_path / "command.key"),
                     **secure_broker.tls_options("lock"))
    relay, _ = _relay(config)
    sub = secure_broker.client("admin", ["facelock/svc/reply", "facelock/svc/event"])
    service = Service(config, components=(FakeDetector(), FakeAligner(), FakeEmbedder()),
                      source_factory=lambda _o: ListSource([0], 0.02, forever=True), relay=relay,
                      install_signals=False)
    thread = threading.Thread(target=service.run)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not (service.link is not None and service.link.subscribed) and time.monotonic() < deadline:
            time.sleep(0.05)  # subscribed: a command published before the SUBACK would simply be lost
        sub.publish("facelock/svc/cmd/remove", sign(key, "facelock/svc/cmd/remove", {"name": "mallory", "id": "1"}))
        sub.publish("facelock/svc/cmd/remove", b'{"name": 7}')
        sub.publish("facelock/svc/cmd/remove", os.urandom(300))
        sub.publish("facelock/svc/cmd/lock", b"LOCK")
        sub.publish("facelock/svc/cmd/remove", sign(key, "facelock/svc/cmd/remove", {"name": "Alice", "id": "2"}))
        assert sub.wait_for(lambda m: sum(t == "facelock/svc/reply" for t, *_ in m) >= 5, timeout=10)
        replies = [json.loads(p) for p, _ in sub.on("facelock/svc/reply")]
        by_id = {r.get("id"): r for r in replies}
        assert by_id["1"]["ok"] is False and "unknown person 'mallory'" in by_id["1"]["error"]
        assert by_id["2"]["ok"] is True and by_id["2"]["result"]["removed"] == "alice"
        assert any(r["command"] == "lock" and r["ok"] for r in replies)
        assert sum(not r["ok"] for r in replies) == 3
        assert service.matcher.names == ()
        # every one is audited, the two malformed ones too (refused, with the parser's reason)
        assert sub.wait_for(lambda m: sum(t == "facelock/svc/event" for t, *_ in m) >= 5, timeout=10)
        audits = [json.loads(p) for p, _ in sub.on("facelock/svc/event")]
        refused = [a for a in audits if a["event_type"] == "command" and a["decision"] == "refused"]
        assert len(refused) == 2 and all(a["command"] == "remove" and not a["signed"] for a in refused), audits
        assert any("expected str" in a["reason"] for a in refused) and any("UTF-8" in a["reason"] for a in refused)
    finally:
        service.stopping = True
        thread.join(20)
    assert not thread.is_alive()
    sub.close()


def test_sigterm_and_sd_notify(broker, tmp_path, monkeypatch):
    config = _config(tmp_path, broker.port)
    relay, _ = _relay(config)
    sock_path = str(tmp_path / "notify.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(sock_path)
    server.settimeout(0.1)
    messages: list[str] = []
    reading = threading.Event()

    def read():  # systemd reads its notify socket at once; so does this stand-in
        while not reading.is_set():
            try:
                messages.append(server.recv(1024).decode())
            except TimeoutError:
                pass

    reader = threading.Thread(target=read)
    reader.start()
    monkeypatch.setenv("NOTIFY_SOCKET", sock_path)
    monkeypatch.setenv("WATCHDOG_USEC", "40000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    service = Service(config, components=(FakeDetector(), FakeAligner(), FakeEmbedder()),
                      source_factory=lambda _o: ListSource([0, 2], 0.01, forever=True), relay=relay)
    old = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    timer = threading.Timer(1.5, lambda: os.kill(os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        assert service.run() == 0
    finally:
        timer.cancel()
        signal.signal(signal.SIGTERM, old[0])
        signal.signal(signal.SIGINT, old[1])
        time.sleep(0.2)
        reading.set()
        reader.join()
        server.close()
    assert messages[0].startswith("READY=1") and "WATCHDOG=1" in messages and messages[-1] == "STOPPING=1"
    assert service.stats.frames > 10
    assert len(Outbox(config.outbox)) == 0  # every event acknowledged before the exit


def test_sd_notify_never_blocks_on_a_full_socket(tmp_path, monkeypatch):
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(tmp_path / "full.sock"))
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "full.sock"))
    results = [sd_notify("WATCHDOG=1") for _ in range(5000)]  # nobody reads: the queue fills up
    assert results[0] is True and results[-1] is False
    server.close()


def test_sd_notify_without_socket(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sd_notify("READY=1") is False


def test_run_cli_check(tmp_path, capsys):
    from facelock.cli import main

    assert main(["run", "--print-example"]) == 0
    assert "[mqtt]" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text("[relay]\npin = 'x'\n")
    assert main(["run", "--config", str(bad), "--check"]) == 1
    assert "relay.pin = 'x': expected an integer" in capsys.readouterr().err


def test_the_relay_from_the_config_opens_the_door_on_the_services_one_pin_factory(broker, tmp_path):
    """No relay handed in: the service builds it from `[relay]` (pin_factory "mock") on its PinFactory,
    opened once and closed at shutdown after the relay."""
    config = _config(tmp_path, broker.port)
    sub = Subscriber(broker.port, ["facelock/svc/state"])
    service = Service(config, components=(FakeDetector(), FakeAligner(), FakeEmbedder()),
                      source_factory=lambda _o: ListSource([0, 1, 1, 1, 0], 0.01), install_signals=False)
    assert service.run() == 0
    assert service.has_lock and service.pins.opened == 1
    assert service.relay._device.pin_factory is not None and service.relay._device.closed
    assert sub.wait_for(lambda m: any(json.loads(p)["lock"] == "UNLOCKED" for _, p, _ in m))
    sub.close()
