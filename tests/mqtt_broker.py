"""A real Mosquitto broker for tests, on a free port of 127.0.0.1, that can be stopped and restarted on
the same port (with its persistence, so persistent sessions survive the restart).

    def test_x(broker):  # the fixture is registered in conftest.py
        broker.port; broker.stop(); broker.start()

With accounts and an ACL (`allow_anonymous false`, a password file made by mosquitto_passwd, an acl_file
that `write_acl` rewrites and `reload` (SIGHUP) or a restart applies):

    b = Broker(folder, listener=auth_listener(folder, {"lock": "pw"}, "user lock\ntopic write x/#\n"))
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

MOSQUITTO = shutil.which("mosquitto") or next(
    (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.path.exists(p)), None)
PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"


def auth_listener(folder: Path, users: dict[str, str], acl: str) -> list[str]:
    """Listener lines for accounts (made with mosquitto_passwd) and the ACL text `acl` (folder/acl)."""
    folder.mkdir(parents=True, exist_ok=True)
    passwd = folder / "passwd"
    for i, (user, password) in enumerate(users.items()):
        subprocess.run([PASSWD, *(["-c"] if i == 0 else []), "-b", str(passwd), user, password], check=True,
                       capture_output=True)
    passwd.chmod(0o644)  # mosquitto may drop to its own user and still has to read it
    (folder / "acl").write_text(acl)
    (folder / "acl").chmod(0o644)
    return ["allow_anonymous false", f"password_file {passwd}", f"acl_file {folder / 'acl'}"]


DYNSEC_PLUGIN = next(iter(sorted(Path("/usr/lib").glob("*/mosquitto_dynamic_security.so"))), None)


def dynsec_listener(folder: Path, denied_subscriptions: list[str]) -> list[str]:
    """Listener lines for Mosquitto's dynamic-security plugin, anonymous clients allowed everything except
    subscribing to `denied_subscriptions`. Unlike an acl_file (whose SUBACK grants a subscription that it
    then delivers nothing to), the plugin refuses such a SUBSCRIBE with reason code 0x87, as EMQX and
    HiveMQ do. `write_dynsec` rewrites the rules; a restart applies them."""
    write_dynsec(folder, denied_subscriptions)
    return ["allow_anonymous true", f"plugin {DYNSEC_PLUGIN}", f"plugin_opt_config_file {folder / 'dynsec.json'}"]


def write_dynsec(folder: Path, denied_subscriptions: list[str]) -> None:
    import json

    acls = [{"acltype": "subscribePattern", "topic": t, "priority": 0, "allow": False} for t in denied_subscriptions]
    everything = {"publishClientSend": True, "publishClientReceive": True, "subscribe": True, "unsubscribe": True}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dynsec.json").write_text(json.dumps({
        "defaultACLAccess": everything, "clients": [], "anonymousGroup": "doors",
        "groups": [{"groupname": "doors", "roles": [{"rolename": "door"}]}],
        "roles": [{"rolename": "door", "acls": acls}]}))
    (folder / "dynsec.json").chmod(0o644)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    def __init__(self, folder: Path, port: int | None = None, listener: list[str] | None = None):
        """`listener`: lines for the listener (TLS files, password_file, ...); default anonymous plain MQTT."""
        self.folder = folder
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None
        folder.mkdir(parents=True, exist_ok=True)
        self.conf = folder / "mosquitto.conf"
        lines = [f"listener {self.port} 127.0.0.1", *(listener or ["allow_anonymous true"]),
                 "persistence true", f"persistence_location {folder}/", "autosave_interval 1",
                 "max_queued_messages 10000", "log_dest stderr", "log_type error", "log_type warning"]
        if os.geteuid() == 0:
            lines.append("user root")  # else it drops to `mosquitto`, who cannot write the tmp folder
        self.conf.write_text("\n".join(lines) + "\n")
        self.log = folder / "mosquitto.log"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        assert not self.running
        with open(self.log, "ab") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"mosquitto did not listen on {self.port} within {timeout} s")

    def stop(self) -> None:
        """Graceful stop (SIGTERM: it saves its persistence file)."""
        if self.running:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def write_acl(self, acl: str) -> None:
        """Replace the ACL of an `auth_listener` broker (applied by `reload` or a restart)."""
        (self.folder / "acl").write_text(acl)

    def reload(self) -> None:
        """SIGHUP: Mosquitto reads its password and ACL files again, keeping its connections."""
        assert self.running
        self.proc.send_signal(signal.SIGHUP)


@pytest.fixture
def broker(tmp_path):
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed (apt install mosquitto): the MQTT tests need a real broker")
    b = Broker(tmp_path / "broker")
    b.start()
    try:
        yield b
    finally:
        b.stop()


class Subscriber:
    """A test client that records every message (topic, payload, retain) it receives."""

    def __init__(self, port: int, topics: list[str], client_id: str | None = None, persistent: bool = False,
                 username: str | None = None, password: str | None = None):
        import threading

        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.messages: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.topics = topics
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id or f"test-{os.getpid()}-{id(self)}",
                                  clean_session=not persistent, protocol=mqtt.MQTTv311)
        self.client.reconnect_delay_set(1, 1)
        if username:
            self.client.username_pw_set(username, password)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.connect_async("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        assert self.subscribed.wait(10), "test subscriber could not subscribe"

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        for t in self.topics:
            client.subscribe(t, qos=1)

    def _on_message(self, client, userdata, message):
        with self.lock:
            self.messages.append((message.topic, bytes(message.payload), bool(message.retain)))

    def on(self, topic: str) -> list[tuple[bytes, bool]]:
        with self.lock:
            return [(p, r) for t, p, r in self.messages if t == topic]

    def wait_for(self, predicate, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if predicate(list(self.messages)):
                    return True
            time.sleep(0.02)
        return False

    def publish(self, topic: str, payload, qos: int = 1, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=qos, retain=retain).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
