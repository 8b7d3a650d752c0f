"""The lock's command boundary, attacked through a real Mosquitto (TLS, password accounts, and the ACL of
docs/operations.md) against a real Service (stand-in model stages, a real gallery, gpiozero's mock relay):

- a client with a broker account but without the command key opens nothing, enrols nothing, removes and
  renames no one, while a stranger stands at the camera; every attempt is refused, replied to and audited;
- correctly signed commands from `facelock admin send` work; a replayed one is refused, also after a
  restart; an enrolment never merges into someone enrolled unless the signed command says "add";
- Home Assistant's unsigned unlock is off by default (no lock entity), opt-in, and refused during a lockout;
- under the documented ACL only Home Assistant's account can publish to cmd/lock;
- reject events name no candidate and no score unless `reveal_candidates` is on.
"""

from __future__ import annotations

import json
import re
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from mqtt_broker import Subscriber
from secure_broker import SecureBroker
from test_service import PEOPLE, FakeAligner, FakeDetector, FakeEmbedder, frame

from edge.identity.gallery import Gallery
from edge.mqtt.signing import new_key, sign, write_key_file
from edge.service.config import default_config
from edge.service.loop import Service
from facelock.cli import main as facelock

REPO = Path(__file__).resolve().parents[1]
DEVICE = "front_door"
BASE = f"facelock/{DEVICE}"
NOBODY, ALICE, STRANGER = 0, 1, 2  # FakeDetector/FakeEmbedder: no face, alice, someone not enrolled


class SwitchSource:
    """Frames of whoever `who` says, forever: the test decides who stands at the camera."""

    def __init__(self, who: int = NOBODY, interval: float = 0.02):
        self.who = who
        self.interval = interval

    def frames(self):
        i = 0
        while True:
            time.sleep(self.interval)
            yield frame(self.who, i)
            i += 1

    def close(self):
        pass


def _config(tmp_path, mqtt: dict, **decide):
    gallery = tmp_path / "gallery.db"
    if not gallery.exists():
        with Gallery(gallery) as g:
            g.enroll("alice", PEOPLE[ALICE][None])
    c = default_config().replace("gallery", path=str(gallery))
    c = c.replace("outbox", path=str(tmp_path / "state" / "outbox.db"), fsync=False)
    c = c.replace("mqtt", **{"device_id": DEVICE, "stats_interval_s": 0, **mqtt})
    c = c.replace("quality", min_sharpness=0.0, min_contrast=0.0, min_face_px=10.0, min_eye_distance_px=1.0,
                  max_yaw_deg=90.0, max_roll_deg=180.0, dim_contrast=0.0)
    c = c.replace("decide", threshold=0.5, k=2, n=3, min_attempt_frames=1, attempt_gap_s=0.05,
                  state_path=str(tmp_path / "state" / "lockout.json"), **decide)
    c = c.replace("relay", enabled=True, pin_factory="mock", unlock_s=0.2)
    # the fake stages have no landmark model, so no mesh to judge: liveness has its own tests
    c = c.replace("liveness", enabled=False)
    return c.replace("service", enroll_frames=2, enroll_interval_s=0.02, shutdown_flush_s=3.0)


def _key(tmp_path) -> Path:
    path = tmp_path / "command.key"
    if not path.exists():
        write_key_file(path, new_key())
    return path


@contextmanager
def running(config, source):
    """The service in a thread, with a mock relay whose every unlock is recorded in `opened`."""
    from gpiozero.pins.mock import MockFactory

    from edge.device.relay import Relay

    relay = Relay(config.relay, pin_factory=MockFactory())
    opened: list[float] = []
    unlock = relay.unlock
    relay.unlock = lambda seconds=None: (opened.append(time.monotonic()), unlock(seconds))
    service = Service(config, components=(FakeDetector(), FakeAligner(), FakeEmbedder()),
                      source_factory=lambda _o: source, relay=relay, install_signals=False)
    thread = threading.Thread(target=service.run)
    thread.start()
    deadline = time.monotonic() + 10
    while not (service.link is not None and service.link.subscribed) and time.monotonic() < deadline:
        time.sleep(0.05)  # subscribed: a command published before the SUBACK would simply be lost
    assert service.link is not None and service.link.subscribed, "the service did not connect and subscribe"
    try:
        yield service, opened
    finally:
        service.stopping = True
        thread.join(20)
        assert not thread.is_alive()


def _ready(publisher, listener) -> None:
    """Wait until the lock is subscribed to its commands (connected is not yet subscribed): a reload it
    answers. Replies and audits of these reloads are left out by `_payloads` and `_audits`."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        publisher.publish(f"{BASE}/cmd/reload", b'{"id": "ready"}')
        if listener.wait_for(lambda m: any(t == f"{BASE}/reply" and b'"ready"' in p for t, p, _ in m), 0.5):
            return
    raise AssertionError("the lock never answered a reload")


def _payloads(sub, topic: str) -> list[dict]:
    """The JSON messages on `topic` of a client, or of a list of messages (inside `wait_for`, which holds
    the client's lock)."""
    if isinstance(sub, list):
        messages = sub
    else:
        with sub.lock:
            messages = list(sub.messages)
    return [d for t, p, _ in messages if t == topic and (d := json.loads(p)).get("id") != "ready"]


def _audits(sub) -> list[dict]:
    return [e for e in _payloads(sub, f"{BASE}/event") if e["event_type"] == "command" and e["command"] != "reload"]


def _reply(sub, request_id: str, timeout: float = 10.0) -> dict:
    assert sub.wait_for(lambda m: any(r.get("id") == request_id for r in _payloads(m, f"{BASE}/reply")),
                        timeout), f"no reply to {request_id}"
    return next(r for r in _payloads(sub, f"{BASE}/reply") if r.get("id") == request_id)


def _send(secure, key_file, *command: str, user: str = "admin", capsys=None) -> tuple[int, dict]:
    """`facelock admin send --json ...` as the admin's machine runs it; (exit status, the lock's reply)."""
    rc = facelock(["admin", "send", "--key-file", str(key_file), *secure.admin_args(user), "--device", DEVICE,
                   "--timeout", "20", "--json", *command])
    out = capsys.readouterr().out.strip().splitlines()
    return rc, json.loads(out[-1])


def _people(service) -> dict[str, int]:
    return {p.name: p.templates for p in service.gallery.people()}


def test_a_broker_account_without_the_key_opens_enrols_and_removes_nothing(secure_broker, tmp_path):
    config = _config(tmp_path, secure_broker.mqtt_options("lock", commands=True,
                                                          command_key_file=str(_key(tmp_path))))
    source = SwitchSource(STRANGER)  # a stranger stands at the camera the whole time
    listener = secure_broker.client("admin", [f"{BASE}/#", "homeassistant/#"])
    mallory = secure_broker.client("mallory")
    wrong_key = new_key()
    attacks = [  # (topic, payload, what the reply must say)
        ("lock", b"UNLOCK", "unsigned_unlock = false"),
        ("lock", b"OPEN", "unsigned_unlock = false"),
        ("unlock", b'{"id": "a1"}', "unsigned"),
        ("unlock", sign(wrong_key, f"{BASE}/cmd/unlock", {"id": "a2"}), "bad signature"),
        ("enroll", b'{"name": "alice", "id": "a3"}', "unsigned"),  # merge the stranger into alice
        ("enroll", b'{"name": "mallory", "frames": 2, "id": "a4"}', "unsigned"),
        ("enroll", sign(wrong_key, f"{BASE}/cmd/enroll", {"name": "alice", "add": True, "id": "a5"}),
         "bad signature"),
        ("remove", b'{"name": "alice", "id": "a6"}', "unsigned"),
        ("rename", b'{"name": "alice", "to": "mallory", "id": "a7"}', "unsigned"),
        ("remove", json.dumps({"cmd": {"name": "alice", "id": "a8"}, "ts": int(time.time()), "nonce": "ab" * 16,
                               "sig": "0" * 64}).encode(), "bad signature"),
    ]
    try:
        with running(config, source) as (service, opened):
            _ready(mallory, listener)
            for name, payload, _ in attacks:
                mallory.publish(f"{BASE}/cmd/{name}", payload)
            assert listener.wait_for(lambda m: len(_payloads(m, f"{BASE}/reply")) >= len(attacks))
            assert listener.wait_for(lambda m: len(_audits(m)) >= len(attacks))
            time.sleep(0.5)  # an enrolment would have had time to take the stranger's frames
            people = _people(service)
            state = service.state()
            lock_config = next(m.payload for m in service.discovery.messages if "/lock/" in m.topic)
        replies = _payloads(listener, f"{BASE}/reply")
        assert len(replies) == len(attacks) and not any(r["ok"] for r in replies)
        by_id = {r.get("id"): r for r in replies}
        for name, payload, expected in attacks:
            request_id = re.search(rb'"id": ?"(a\d)"', payload)
            reply = by_id[request_id.group(1).decode()] if request_id else next(
                r for r in replies if r["command"] == "lock")
            assert expected in reply["error"], (name, reply)
        assert opened == []  # the relay was never energised
        assert people == {"alice": 1} and state["enrolling"] is None  # no one enrolled, removed or renamed
        audits = _audits(listener)
        assert len(audits) == len(attacks) and {a["decision"] for a in audits} == {"refused"}
        assert sum(a["signed"] for a in audits) == 3 and {a["command"] for a in audits} == \
            {"lock", "unlock", "enroll", "remove", "rename"}
        everything = b" ".join(p for t, p, _ in listener.messages if not t.startswith(f"{BASE}/cmd/"))
        assert b'"sig"' not in everything and b"0" * 64 not in everything
        assert lock_config == ""  # Home Assistant is offered no lock entity: its UNLOCK would be refused
        assert all(p == b"" for p, _ in listener.on(f"homeassistant/lock/facelock_{DEVICE}/lock/config"))
    finally:
        listener.close()
        mallory.close()


def test_a_flood_of_refused_commands_is_answered_but_cannot_fill_the_outbox(secure_broker, tmp_path):
    """Audit events are never dropped at the outbox cap; a client flooding refused (malformed and unsigned)
    commands gets every one answered, but only the audit budget's worth become events, and the rest are
    counted into the next audited refusal and the stats."""
    config = _config(tmp_path, secure_broker.mqtt_options("lock", commands=True, stats_interval_s=0.2,
                                                          command_key_file=str(_key(tmp_path))))
    listener = secure_broker.client("admin", [f"{BASE}/#"])
    mallory = secure_broker.client("mallory")
    flood = [(b'{"name": 7, "id": "f%d"}' % i) if i % 2 else (b'{"id": "f%d"}' % i) for i in range(120)]
    try:
        with running(config, SwitchSource(NOBODY)) as (service, opened):
            _ready(mallory, listener)
            budget = service.commands.refusals.burst
            for i, payload in enumerate(flood):
                mallory.publish(f"{BASE}/cmd/{'remove' if i % 2 else 'unlock'}", payload)
                time.sleep(0.002)  # the lock's command queue holds 32; keep the flood within what it answers
            assert listener.wait_for(lambda m: len(_payloads(m, f"{BASE}/reply")) >= len(flood), 30)
            assert listener.wait_for(lambda m: any(s.get("commands_unaudited", 0) >= len(flood) - budget - 5
                                                   for s in _payloads(m, f"{BASE}/stats")), 10)
            service.commands.refusals.tokens = 1.0  # the budget refilled: the next refusal says how many
            mallory.publish(f"{BASE}/cmd/unlock", b'{"id": "last"}')
            assert listener.wait_for(lambda m: any("not audited one by one" in a["reason"] for a in _audits(m)))
        replies = _payloads(listener, f"{BASE}/reply")
        assert all(not r["ok"] for r in replies) and opened == []
        audits = [a for a in _audits(listener) if a.get("request_id") != "last"]
        assert budget <= len(audits) <= budget + 3  # + what the budget refilled during the flood
        summary = next(a for a in _audits(listener) if a.get("request_id") == "last")
        skipped = int(re.search(r"and (\d+) more refused", summary["reason"]).group(1))
        assert len(audits) + skipped == len(flood)
    finally:
        listener.close()
        mallory.close()


def test_signed_commands_from_admin_send_work_once(secure_broker, tmp_path, capsys):
    key_file = _key(tmp_path)
    config = _config(tmp_path, secure_broker.mqtt_options("lock", commands=True, command_key_file=str(key_file)))
    source = SwitchSource(STRANGER)
    listener = secure_broker.client("homeassistant", [f"{BASE}/#"])
    mallory = secure_broker.client("mallory")
    try:
        with running(config, source) as (service, opened):
            _ready(mallory, listener)
            rc, reply = _send(secure_broker, key_file, "unlock", capsys=capsys)
            assert rc == 0 and reply["ok"] and len(opened) == 1
            # the same signed payload again (captured off the broker): refused, the door stays shut
            captured = listener.on(f"{BASE}/cmd/unlock")[0][0]
            mallory.publish(f"{BASE}/cmd/unlock", captured)
            assert listener.wait_for(lambda m: sum(json.loads(p).get("id") == reply["id"]
                                                   for t, p, _ in m if t == f"{BASE}/reply") >= 2)
            replayed = [r for r in _payloads(listener, f"{BASE}/reply") if r.get("id") == reply["id"]][-1]
            assert not replayed["ok"] and "replayed" in replayed["error"] and len(opened) == 1
            # signed, but too old
            stale = sign(_raw_key(key_file), f"{BASE}/cmd/unlock", {"id": "old"}, ts=int(time.time()) - 120)
            mallory.publish(f"{BASE}/cmd/unlock", stale)
            assert "stale" in _reply(listener, "old")["error"] and len(opened) == 1

            rc, reply = _send(secure_broker, key_file, "enroll", "Alice", capsys=capsys)  # the stranger as alice
            assert rc == 1 and "enrolled already" in reply["error"] and '"add": true' in reply["error"]
            assert _people(service) == {"alice": 1}
            rc, reply = _send(secure_broker, key_file, "enroll", "bob", "--frames", "2", capsys=capsys)
            assert rc == 0 and reply["result"]["name"] == "bob"
            assert set(_people(service)) == {"alice", "bob"}
            rc, reply = _send(secure_broker, key_file, "rename", "bob", "robert", capsys=capsys)
            assert rc == 0 and set(_people(service)) == {"alice", "robert"}
            rc, reply = _send(secure_broker, key_file, "enroll", "robert", "--add", "--frames", "2", capsys=capsys)
            assert rc == 0  # said so explicitly, signed
            rc, reply = _send(secure_broker, key_file, "remove", "robert", capsys=capsys)
            assert rc == 0 and reply["result"]["removed"] == "robert" and _people(service) == {"alice": 1}
            assert listener.wait_for(lambda m: len(_audits(m)) >= 10)
        audits = [(a["command"], a["decision"]) for a in _audits(listener)]
        assert audits.count(("unlock", "accepted")) == 1 and audits.count(("unlock", "refused")) == 2
        assert ("enroll", "refused") in audits and audits.count(("enroll", "done")) == 2
        assert ("rename", "accepted") in audits and ("remove", "accepted") in audits
        assert all(a["signed"] for a in _audits(listener) if a["command"] != "lock")
    finally:
        listener.close()
        mallory.close()


def _raw_key(path: Path) -> bytes:
    from edge.mqtt.signing import read_key_file

    return read_key_file(path)


def test_a_replay_is_refused_after_a_restart(secure_broker, tmp_path):
    key_file = _key(tmp_path)
    config = _config(tmp_path, secure_broker.mqtt_options("lock", commands=True, command_key_file=str(key_file)))
    listener = secure_broker.client("admin", [f"{BASE}/reply"])
    try:
        with running(config, SwitchSource()) as (_, opened):
            _ready(listener, listener)
            # Signed once the service runs: a first start (no nonce file yet) refuses commands signed more
            # than a second before it started, and a slow start made that race fail this test.
            payload = sign(_raw_key(key_file), f"{BASE}/cmd/unlock", {"id": "once"})
            listener.publish(f"{BASE}/cmd/unlock", payload)
            assert _reply(listener, "once")["ok"] and len(opened) == 1
        with running(config, SwitchSource()) as (_, opened):  # the service restarted: the nonce is remembered
            listener.messages.clear()
            _ready(listener, listener)
            listener.publish(f"{BASE}/cmd/unlock", payload)
            assert "replayed" in _reply(listener, "once")["error"] and opened == []
    finally:
        listener.close()


def test_home_assistant_unsigned_unlock_is_opt_in_and_refused_during_a_lockout(secure_broker, tmp_path, capsys):
    key_file = _key(tmp_path)
    config = _config(tmp_path, secure_broker.mqtt_options("lock", commands=True, unsigned_unlock=True,
                                                          command_key_file=str(key_file)),
                     lockout_failures=1, lockout_s=600.0, lockout_max_s=600.0)
    source = SwitchSource(NOBODY)
    ha = secure_broker.client("homeassistant", [f"{BASE}/reply", f"{BASE}/event",
                                                f"homeassistant/lock/facelock_{DEVICE}/lock/config"])
    try:
        with running(config, source) as (service, opened):
            _ready(ha, ha)
            assert ha.wait_for(lambda m: any(t.startswith("homeassistant/lock/") for t, _, _ in m))
            lock = json.loads(ha.on(f"homeassistant/lock/facelock_{DEVICE}/lock/config")[0][0])
            assert lock["command_topic"] == f"{BASE}/cmd/lock"  # offered: its UNLOCK can act
            ha.publish(f"{BASE}/cmd/lock", b"UNLOCK")
            assert ha.wait_for(lambda m: len(_payloads(m, f"{BASE}/reply")) >= 1)
            assert _payloads(ha, f"{BASE}/reply")[0]["ok"] and len(opened) == 1
            source.who = STRANGER  # a stranger tries and goes: one failed attempt, a 600 s lockout
            time.sleep(0.3)
            source.who = NOBODY
            deadline = time.monotonic() + 10
            while not service.state()["locked_out"] and time.monotonic() < deadline:
                time.sleep(0.05)
            assert service.state()["locked_out"]
            ha.publish(f"{BASE}/cmd/lock", b"OPEN")
            assert ha.wait_for(lambda m: len(_payloads(m, f"{BASE}/reply")) >= 2)
            refused = _payloads(ha, f"{BASE}/reply")[1]
            assert not refused["ok"] and "locked out" in refused["error"] and len(opened) == 1
            rc, _ = _send(secure_broker, key_file, "unlock", capsys=capsys)  # the owner, signed: allowed
            assert rc == 0 and len(opened) == 2
            ha.publish(f"{BASE}/cmd/lock", b"LOCK")  # locking is always allowed
            assert ha.wait_for(lambda m: len(_payloads(m, f"{BASE}/reply")) >= 4)
            assert _payloads(ha, f"{BASE}/reply")[-1]["ok"]
            assert ha.wait_for(lambda m: len(_audits(m)) >= 4)
        audits = [(a["command"], a["decision"], a["signed"]) for a in _audits(ha)]
        assert audits[:2] == [("lock", "accepted", False), ("lock", "refused", False)]
        assert ("unlock", "accepted", True) in audits
    finally:
        ha.close()


def documented_acl() -> str:
    """The ACL in docs/operations.md, exactly as the reader copies it."""
    text = (REPO / "docs" / "operations.md").read_text()
    block = re.search(r"```conf\n(# mosquitto acl_file for facelock.*?)```", text, re.DOTALL)
    assert block, "docs/operations.md lost its ACL block"
    return block.group(1)


def test_only_home_assistant_can_publish_cmd_lock_under_the_documented_acl(pki, tmp_path, capsys):
    users = (f"facelock-{DEVICE}", "homeassistant", "facelock-admin", "mallory")
    secure = SecureBroker(tmp_path / "acl", pki, users=users, acl=documented_acl())
    secure.broker.start()
    key_file = _key(tmp_path)
    config = _config(tmp_path, secure.mqtt_options(f"facelock-{DEVICE}", commands=True, unsigned_unlock=True,
                                                   command_key_file=str(key_file)))
    ha = admin = mallory = None
    try:
        with running(config, SwitchSource()) as (_, opened):
            ha = secure.client("homeassistant", [f"{BASE}/#"])
            admin = secure.client("facelock-admin")
            mallory = secure.client("mallory")
            _ready(admin, ha)
            for client in (admin, mallory):  # both hold a broker account; the broker drops their publish
                client.publish(f"{BASE}/cmd/lock", b"UNLOCK")
            time.sleep(1.5)
            assert opened == [] and not _payloads(ha, f"{BASE}/reply")
            assert not ha.on(f"{BASE}/cmd/lock")  # not delivered to anyone
            ha.publish(f"{BASE}/cmd/lock", b"UNLOCK")  # the same from Home Assistant's account: delivered
            assert ha.wait_for(lambda m: len(_payloads(m, f"{BASE}/reply")) >= 1)
            assert _payloads(ha, f"{BASE}/reply")[0]["ok"] and len(opened) == 1
            # the admin's account still sends signed commands, and the lock's events get through
            rc, _ = _send(secure, key_file, "unlock", user="facelock-admin", capsys=capsys)
            assert rc == 0 and len(opened) == 2
            assert ha.wait_for(lambda m: len(_audits(m)) >= 2)
            assert ha.on(f"{BASE}/state") and ha.on(f"{BASE}/availability")
    finally:
        for client in (ha, admin, mallory):
            if client is not None:
                client.close()
        secure.broker.stop()


@pytest.mark.parametrize("reveal", [False, True])
def test_reject_events_reveal_no_candidate_unless_asked(broker, tmp_path, reveal):
    config = _config(tmp_path, {"host": "127.0.0.1", "port": broker.port, "reconnect_max_s": 1.0,
                                "reveal_candidates": reveal})
    source = SwitchSource(STRANGER)
    sub = Subscriber(broker.port, [f"{BASE}/event"])
    try:
        with running(config, source):
            time.sleep(0.2)
            source.who = NOBODY  # the stranger leaves: the attempt fails
            assert sub.wait_for(lambda m: any(json.loads(p)["decision"] == "reject" for _, p, _ in m))
        reject = next(e for e in _payloads(sub, f"{BASE}/event") if e["decision"] == "reject")
        if reveal:
            assert reject["candidate"] == "alice" and "score" in reject and "alice" in reject["reason"]
        else:
            assert "candidate" not in reject and "score" not in reject and "alice" not in json.dumps(reject)
            assert reject["event_type"] == "rejected" and reject["person"] == "unknown"
    finally:
        sub.close()


def test_admin_send_with_a_wrong_password_says_so_without_the_password(secure_broker, tmp_path, capsys):
    (tmp_path / "wrong.pw").write_text("not-the-password\n")
    args = secure_broker.admin_args("admin")
    args[args.index("--password-file") + 1] = str(tmp_path / "wrong.pw")
    started = time.monotonic()
    rc = facelock(["admin", "send", "--key-file", str(_key(tmp_path)), *args, "--device", DEVICE, "unlock"])
    err = capsys.readouterr().err
    assert rc == 1 and "refused the connection" in err and "not-the-password" not in err
    assert time.monotonic() - started < 10  # said at once, not after the reply timeout
