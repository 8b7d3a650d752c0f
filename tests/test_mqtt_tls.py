"""TLS and username/password against a real Mosquitto: certificates made here with openssl, a password file
made with mosquitto_passwd. The link verifies the broker's certificate and host name."""

from __future__ import annotations

import json
import shutil
import subprocess
import time

import pytest
from mqtt_broker import MOSQUITTO, Broker

from edge.mqtt.link import MqttLink, MqttOptions
from edge.mqtt.messages import RecognitionEvent
from edge.mqtt.outbox import Outbox, OutboxOptions

PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
pytestmark = pytest.mark.skipif(MOSQUITTO is None or shutil.which("openssl") is None,
                                reason="needs mosquitto and openssl (Debian packages)")


def _openssl(*args: str, cwd) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def tls_broker(tmp_path):
    d = tmp_path / "pki"
    d.mkdir()
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=facelock test CA",
             "-keyout", "ca.key", "-out", "ca.crt", cwd=d)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", "server.key",
             "-out", "server.csr", cwd=d)
    (d / "san.ext").write_text("subjectAltName = IP:127.0.0.1, DNS:localhost\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "1", "-extfile", "san.ext", "-out", "server.crt", cwd=d)
    subprocess.run([PASSWD, "-c", "-b", str(d / "passwd"), "lock", "s3cret pass"], check=True, capture_output=True)
    (d / "passwd").chmod(0o644)  # mosquitto may drop to its own user and still has to read it
    broker = Broker(tmp_path / "broker", listener=[
        f"cafile {d / 'ca.crt'}", f"certfile {d / 'server.crt'}", f"keyfile {d / 'server.key'}",
        "allow_anonymous false", f"password_file {d / 'passwd'}"])
    broker.start()
    yield broker, d
    broker.stop()


def _options(broker, pki, **kw) -> MqttOptions:
    return MqttOptions(host="127.0.0.1", port=broker.port, device_id="tls", tls=True, ca_file=str(pki / "ca.crt"),
                       username="lock", reconnect_max_s=1.0, **kw)


def _tls_subscriber_publish_check(broker, pki, link) -> dict:
    """An event through the TLS link, read back by a TLS client with the same credentials."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    got: list[bytes] = []
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="tls-sub")
    sub.tls_set(ca_certs=str(pki / "ca.crt"))
    sub.username_pw_set("lock", "s3cret pass")
    sub.on_connect = lambda c, *a: c.subscribe("facelock/tls/event", qos=1)
    sub.on_message = lambda c, u, m: got.append(m.payload)
    sub.connect("127.0.0.1", broker.port)
    sub.loop_start()
    try:
        time.sleep(0.5)
        event_id = link.publish_event(RecognitionEvent("recognized", "alice", "accept", score=0.9))
        deadline = time.monotonic() + 10
        while not got and time.monotonic() < deadline:
            time.sleep(0.05)
        assert got, "no event over TLS"
        event = json.loads(got[0])
        assert event["id"] == event_id
        return event
    finally:
        sub.disconnect()
        sub.loop_stop()


def test_tls_with_password_file(tls_broker, tmp_path):
    broker, pki = tls_broker
    (tmp_path / "password").write_text("s3cret pass\n")
    link = MqttLink(_options(broker, pki, password_file=str(tmp_path / "password")),
                    Outbox(OutboxOptions(path=str(tmp_path / "o.db"), fsync=False))).start()
    try:
        assert link.wait_connected(10), "TLS + password did not connect"
        assert _tls_subscriber_publish_check(broker, pki, link)["person"] == "alice"
    finally:
        link.close(flush_timeout=2)


def test_wrong_password_is_refused_and_events_wait(tls_broker, tmp_path, caplog):
    broker, pki = tls_broker
    link = MqttLink(_options(broker, pki, password="wrong"),
                    Outbox(OutboxOptions(path=str(tmp_path / "o.db"), fsync=False))).start()
    try:
        link.publish_event(RecognitionEvent("recognized", "alice", "accept"))
        assert not link.wait_connected(3)
        assert len(link.outbox) == 1  # kept for when the credentials are fixed
        assert any("refused the connection" in r.message for r in caplog.records)
    finally:
        link.close(flush_timeout=0.5)


def test_an_unknown_ca_is_not_trusted(tls_broker, tmp_path):
    broker, _ = tls_broker
    other = tmp_path / "other"
    other.mkdir()
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=someone else",
             "-keyout", "ca.key", "-out", "ca.crt", cwd=other)
    (tmp_path / "password").write_text("s3cret pass\n")
    link = MqttLink(_options(broker, other, password_file=str(tmp_path / "password")),
                    Outbox(OutboxOptions(path=str(tmp_path / "o.db"), fsync=False))).start()
    try:
        assert not link.wait_connected(3)  # the broker's certificate does not chain to this CA
    finally:
        link.close(flush_timeout=0.5)

