"""Delivery that knows when it failed, against a real Mosquitto with accounts (mosquitto_passwd,
`allow_anonymous false`) and an ACL:

- an event topic the ACL denies: Mosquitto acknowledges with PUBACK 0x87 (MQTT 5); the events stay in the
  outbox, the refusal is logged once and shows in the state and stats; once the ACL is fixed (broker
  restart, or SIGHUP with the connection kept) every event reaches a subscriber;
- connection failures (a closed port, a wrong password, an unknown host, TLS trouble, the broker going
  away) are logged once per cause and outage, with host:port, never the password, and the reconnect too.
"""

from __future__ import annotations

import json
import logging
import threading
import time

import pytest
from mqtt_broker import (
    DYNSEC_PLUGIN,
    MOSQUITTO,
    Broker,
    Subscriber,
    auth_listener,
    dynsec_listener,
    free_port,
    write_dynsec,
)
from test_mqtt_tls import _openssl, tls_broker  # noqa: F401  (the TLS broker fixture)
from test_service import FakeAligner, FakeDetector, FakeEmbedder, ListSource, _config, _relay

from edge.mqtt.link import MqttLink, MqttOptions
from edge.mqtt.messages import RecognitionEvent
from edge.mqtt.outbox import Outbox, OutboxOptions
from edge.service.loop import Service
from edge.service.stats import delivery_state

pytestmark = pytest.mark.skipif(MOSQUITTO is None, reason="needs mosquitto (apt install mosquitto)")

DEVICE = "svc"  # test_service's _config
EVENT = f"facelock/{DEVICE}/event"
USERS = {"lock": "lock pass 1", "sub": "sub pass 2"}
ACL_DENIED = f"""user lock
topic write facelock/{DEVICE}/availability
topic write facelock/{DEVICE}/state
topic write facelock/{DEVICE}/stats
topic write facelock/{DEVICE}/reply
topic read facelock/{DEVICE}/cmd/#

user sub
topic read facelock/#
"""
ACL_FIXED = ACL_DENIED.replace("topic write facelock/svc/reply\n",
                               "topic write facelock/svc/reply\ntopic write facelock/svc/event\n")


@pytest.fixture
def acl_broker(tmp_path):
    folder = tmp_path / "acl-broker"
    b = Broker(folder, listener=auth_listener(folder, USERS, ACL_DENIED))
    b.start()
    yield b
    b.stop()


def _password_file(tmp_path, password: str = USERS["lock"]) -> str:
    path = tmp_path / "lock.password"
    path.write_text(password + "\n")
    return str(path)


def _link(port: int, tmp_path, retry_s=(0.3, 1.0), **kw) -> MqttLink:
    options = MqttOptions(**{"host": "127.0.0.1", "port": port, "device_id": DEVICE, "reconnect_min_s": 1.0,
                             "reconnect_max_s": 1.0, **kw})
    return MqttLink(options, Outbox(OutboxOptions(path=str(tmp_path / "outbox.db"), fsync=False)),
                    retry_s=retry_s).start()


def _events(n: int) -> list[RecognitionEvent]:
    kinds = [("recognized", "alice", "accept"), ("rejected", "unknown", "reject"), ("lockout", "unknown", "lockout")]
    return [RecognitionEvent(*kinds[i % 3], device=DEVICE) for i in range(n)]


def _wait(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def _lines(caplog, fragment: str, level: int | None = None) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if fragment in r.getMessage() and (level is None or r.levelno == level)]


def _received_ids(sub) -> set[str]:
    return {json.loads(p)["id"] for p, _ in sub.on(EVENT)}


# -- refused by the ACL ---------------------------------------------------------------------------------------


def test_acl_denied_events_stay_until_the_acl_is_fixed(acl_broker, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    # a persistent session: what is published while the broker restarts is queued for this subscriber
    sub = Subscriber(acl_broker.port, [EVENT], client_id="acl-sub", persistent=True, username="sub",
                     password=USERS["sub"])
    link = _link(acl_broker.port, tmp_path, username="lock", password_file=_password_file(tmp_path))
    try:
        assert link.wait_connected(10)
        ids = [link.publish_event(e) for e in _events(20)]
        assert _wait(lambda: EVENT in link.refused, 10), "the broker's refusal was not seen"
        time.sleep(2.0)  # retries at 0.3, 0.6, 1.0 s ... all refused
        assert len(link.outbox) == 20  # 0 lost: every refused event kept
        assert _received_ids(sub) == set()  # and indeed none was delivered
        refused = link.refused[EVENT]
        assert refused["reason"] == "Not authorized"
        assert 2 <= refused["count"] <= 30, refused  # retried, but not in a busy loop
        assert delivery_state(link.outbox, link) == {"refused": {EVENT: refused}, "subscriptions_refused": {},
                                                  "outbox_dropped": 0}
        warned = _lines(caplog, f"refused a publish on {EVENT}")
        assert len(warned) == 1, warned  # once per topic and reason, not per event or retry
        assert "Not authorized (0x87)" in warned[0] and f"127.0.0.1:{acl_broker.port}" in warned[0]
        assert "stays in the outbox" in warned[0]

        acl_broker.write_acl(ACL_FIXED)
        acl_broker.restart()
        assert sub.wait_for(lambda m: set(ids) <= {json.loads(p)["id"] for _, p, _ in m}, timeout=30), \
            f"{len(set(ids) - _received_ids(sub))} of 20 events not delivered after the ACL was fixed"
        assert link.flush(10) and len(link.outbox) == 0
        assert link.refused == {}
        assert _lines(caplog, f"accepts publishes on {EVENT} again", logging.INFO)
    finally:
        link.close(flush_timeout=1)
        sub.close()


def test_a_reloaded_acl_delivers_on_the_next_retry_without_a_reconnect(acl_broker, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    sub = Subscriber(acl_broker.port, [EVENT], username="sub", password=USERS["sub"])
    link = _link(acl_broker.port, tmp_path, retry_s=(0.5, 1.0), username="lock",
                 password_file=_password_file(tmp_path))
    try:
        assert link.wait_connected(10)
        ids = [link.publish_event(e) for e in _events(5)]
        assert _wait(lambda: EVENT in link.refused, 10)
        acl_broker.write_acl(ACL_FIXED)
        acl_broker.reload()  # SIGHUP: the connection stays, only the back-off retry can deliver
        assert sub.wait_for(lambda m: set(ids) <= {json.loads(p)["id"] for _, p, _ in m}, timeout=10)
        assert link.flush(5)
        assert link.connection.connects == 1  # no reconnect was needed
        assert len(_lines(caplog, f"refused a publish on {EVENT}")) == 1
    finally:
        link.close(flush_timeout=1)
        sub.close()


def test_a_refused_direct_publish_is_reported_with_its_topic(acl_broker, tmp_path, caplog):
    """State, replies and discovery are not kept in the outbox, but a refusal of one is not silent either."""
    link = _link(acl_broker.port, tmp_path, username="lock", password_file=_password_file(tmp_path))
    denied = f"facelock/{DEVICE}/not-allowed"
    try:
        assert link.wait_connected(10)
        for _ in range(3):
            link.publish_raw(denied, b"{}", qos=1)
        link.publish_raw(f"facelock/{DEVICE}/reply", b"{}", qos=1)  # allowed
        assert _wait(lambda: link.refused.get(denied, {}).get("count") == 3, 10), link.refused
        assert list(link.refused) == [denied]
        lines = _lines(caplog, f"refused a publish on {denied}", logging.WARNING)
        assert len(lines) == 1 and "not retried" in lines[0]
    finally:
        link.close(flush_timeout=1)


@pytest.mark.skipif(DYNSEC_PLUGIN is None, reason="needs Mosquitto's dynamic-security plugin (Debian's mosquitto)")
def test_a_refused_subscription_is_reported_and_cleared_once_the_broker_allows_it(tmp_path, caplog):
    """A broker that refuses a subscription of the lock's (its commands, Home Assistant's status) used to
    leave it missing every message there without a word: MQTT 5's SUBACK says 0x87, and now so do the log
    and the retained state, until the broker allows it and the next connection's SUBACK grants it."""
    caplog.set_level(logging.INFO)
    status = "homeassistant/status"
    folder = tmp_path / "dynsec-broker"
    broker = Broker(folder, listener=dynsec_listener(folder, [status]))
    broker.start()
    options = MqttOptions(host="127.0.0.1", port=broker.port, device_id=DEVICE, reconnect_min_s=1.0,
                          reconnect_max_s=1.0)
    link = MqttLink(options, Outbox(OutboxOptions(path=str(tmp_path / "outbox.db"), fsync=False)))
    link.subscriptions[status] = lambda payload: None
    link.start()
    try:
        assert link.wait_subscribed(10)
        assert link.granted.refused == {status: "Not authorized (0x87)"}
        assert delivery_state(link.outbox, link)["subscriptions_refused"] == {status: "Not authorized (0x87)"}
        lines = _lines(caplog, f"refused the subscription to {status}", logging.ERROR)
        assert len(lines) == 1 and f"topic read {status}" in lines[0], lines
        assert f"127.0.0.1:{broker.port}" in lines[0]
        version = link.granted.version

        write_dynsec(folder, [])
        broker.restart()
        assert _wait(lambda: link.subscribed and link.granted.refused == {}, 30), link.granted.refused
        assert link.granted.version != version  # the service publishes its state again
        assert _lines(caplog, f"accepts the subscription to {status} again", logging.INFO)
    finally:
        link.close(flush_timeout=1)
        broker.stop()


def test_the_service_state_and_stats_show_the_refusal(acl_broker, tmp_path):
    config = _config(tmp_path, acl_broker.port, username="lock", password_file=_password_file(tmp_path),
                     stats_interval_s=0.3)
    relay, _ = _relay(config)
    sub = Subscriber(acl_broker.port, [f"facelock/{DEVICE}/#"], username="sub", password=USERS["sub"])
    service = Service(config, components=(FakeDetector(), FakeAligner(), FakeEmbedder()),
                      source_factory=lambda _o: ListSource([1, 1, 1] + [0] * 3000, 0.01), relay=relay,
                      install_signals=False)
    thread = threading.Thread(target=service.run)
    thread.start()

    def latest(kind: str, messages) -> list[dict]:
        return [json.loads(p) for t, p, _ in messages if t == f"facelock/{DEVICE}/{kind}"]

    try:
        assert sub.wait_for(lambda m: any(EVENT in s.get("refused", {}) for s in latest("state", m)), 30), \
            latest("state", sub.messages)[-1:]
        state = next(s for s in latest("state", sub.messages) if EVENT in s.get("refused", {}))
        assert state["refused"][EVENT]["reason"] == "Not authorized" and state["refused"][EVENT]["count"] >= 1
        assert state["outbox_dropped"] == 0
        assert sub.wait_for(lambda m: any(s["refused_total"] >= 1 and s["outbox_pending"] >= 1
                                          for s in latest("stats", m)), 30)
        assert not sub.on(EVENT)
    finally:
        service.stopping = True
        thread.join(20)
        sub.close()
    box = Outbox(OutboxOptions(path=str(tmp_path / "outbox.db")))
    kept = [json.loads(e.payload) for e in box.pending()]
    box.close()
    assert any(e["event_type"] == "recognized" and e["person"] == "alice" for e in kept)  # kept for later


# -- connection failures ----------------------------------------------------------------------------------------


def test_a_closed_port_is_logged_once_per_outage_and_the_reconnect_too(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    port = free_port()
    where = f"127.0.0.1:{port}"
    link = _link(port, tmp_path)
    broker = Broker(tmp_path / "broker", port=port)
    try:
        assert _wait(lambda: link.connection.failures >= 3, 20)
        refused = _lines(caplog, f"cannot connect to {where}", logging.WARNING)
        assert len(refused) == 1 and "connection refused" in refused[0], refused
        broker.start()
        assert link.wait_connected(10)
        back = _lines(caplog, f"connected to {where} again after", logging.INFO)
        assert len(back) == 1 and "failed attempt" in back[0]
        # the broker goes away: one line for the loss, one for the cause of the failed retries
        broker.stop()
        failures = link.connection.failures
        assert _wait(lambda: link.connection.failures >= failures + 3, 20)
        assert len(_lines(caplog, f"connection to {where} lost", logging.WARNING)) == 1
        assert len(_lines(caplog, f"cannot connect to {where}", logging.WARNING)) == 2  # one per outage
        broker.start()
        assert link.wait_connected(10)
        assert len(_lines(caplog, f"connected to {where} again after", logging.INFO)) == 2
    finally:
        link.close(flush_timeout=0.5)
        broker.stop()


def test_a_wrong_password_is_logged_once_and_never_shown(acl_broker, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    secret = "wr0ng-Passw0rd!"
    link = _link(acl_broker.port, tmp_path, username="lock", password_file=_password_file(tmp_path, secret))
    try:
        assert _wait(lambda: link.connection.failures >= 3, 20)
        assert not link.connected
        lines = _lines(caplog, "cannot connect to", logging.WARNING)
        assert len(lines) == 1, lines
        assert f"127.0.0.1:{acl_broker.port}" in lines[0] and "Not authorized (0x87)" in lines[0]
        assert "check mqtt.username and the password" in lines[0]
        assert secret not in caplog.text and USERS["lock"] not in caplog.text
    finally:
        link.close(flush_timeout=0.5)


def test_an_unknown_host_is_logged_once(tmp_path, caplog):
    link = _link(1883, tmp_path, host="facelock-no-such-host.invalid")
    try:
        assert _wait(lambda: link.connection.failures >= 2, 20)
        lines = _lines(caplog, "cannot connect to facelock-no-such-host.invalid:1883", logging.WARNING)
        assert len(lines) == 1 and "host name not resolved" in lines[0], lines
    finally:
        link.close(flush_timeout=0.5)


def test_tls_failures_are_logged_with_their_cause(tls_broker, acl_broker, tmp_path, caplog):  # noqa: F811
    broker, pki = tls_broker
    other = tmp_path / "other-ca"
    other.mkdir()
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=someone else",
             "-keyout", "ca.key", "-out", "ca.crt", cwd=other)
    cases = [  # (where it connects, options, what the line must say)
        (broker.port, {"tls": True, "ca_file": str(other / "ca.crt")}, "certificate is not accepted"),
        (acl_broker.port, {"tls": True, "ca_file": str(pki / "ca.crt")}, "TLS"),  # a plain port
        (broker.port, {}, "is that port TLS"),  # plain MQTT to a TLS port
    ]
    for i, (port, options, expected) in enumerate(cases):
        caplog.clear()
        folder = tmp_path / f"case{i}"
        folder.mkdir()
        link = _link(port, folder, username="lock", password="s3cret pass", **options)
        try:
            assert _wait(lambda: link.connection.failures >= 2, 25), (i, caplog.text)  # noqa: B023
            assert not link.connected
            lines = _lines(caplog, "cannot connect to", logging.WARNING)
            assert len(lines) == 1, (i, lines)
            assert expected in lines[0], (i, lines[0])
            assert "s3cret" not in caplog.text
        finally:
            link.close(flush_timeout=0.5)
