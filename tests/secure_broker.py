"""A real Mosquitto with TLS, accounts (mosquitto_passwd) and optionally an ACL file, for the tests of what
a broker account may and may not do. Certificates are made with openssl once per session.

    def test_x(secure_broker):          # (conftest.py registers the fixture) accounts: lock, homeassistant,
                                        # admin, mallory; no ACL
        secure_broker.mqtt_options("lock")      # MqttOptions keys: host, port, tls, ca_file, username, ...
        client = secure_broker.client("mallory", ["facelock/#"]); client.publish(topic, payload)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
from mqtt_broker import MOSQUITTO, Broker, Subscriber

PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
HAVE_TOOLS = MOSQUITTO is not None and shutil.which("openssl") is not None and os.path.exists(PASSWD)
USERS = ("lock", "homeassistant", "admin", "mallory")


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(folder: Path) -> Path:
    """A CA and a server certificate for 127.0.0.1 / localhost in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=facelock test CA",
             "-keyout", "ca.key", "-out", "ca.crt", cwd=folder)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", "server.key",
             "-out", "server.csr", cwd=folder)
    (folder / "san.ext").write_text("subjectAltName = IP:127.0.0.1, DNS:localhost\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "1", "-extfile", "san.ext", "-out", "server.crt", cwd=folder)
    for name in ("server.key", "ca.crt", "server.crt"):
        (folder / name).chmod(0o644)  # mosquitto may drop to its own user and still has to read them
    return folder


def password_of(user: str) -> str:
    return f"{user} pass-{len(user)}"


class SecureBroker:
    """Mosquitto with TLS and password accounts (`users`); `acl` the text of an acl_file, or None."""

    def __init__(self, folder: Path, pki: Path, users: tuple[str, ...] = USERS, acl: str | None = None):
        self.folder = folder
        self.pki = pki
        self.users = users
        folder.mkdir(parents=True, exist_ok=True)
        passwd = folder / "passwd"
        for i, user in enumerate(users):
            subprocess.run([PASSWD, *(["-c"] if i == 0 else []), "-b", str(passwd), user, password_of(user)],
                           check=True, capture_output=True)
            (folder / f"{user}.pw").write_text(password_of(user) + "\n")
        passwd.chmod(0o644)
        listener = [f"cafile {pki / 'ca.crt'}", f"certfile {pki / 'server.crt'}", f"keyfile {pki / 'server.key'}",
                    "allow_anonymous false", f"password_file {passwd}"]
        if acl is not None:
            (folder / "acl").write_text(acl)
            (folder / "acl").chmod(0o644)
            listener.append(f"acl_file {folder / 'acl'}")
        self.broker = Broker(folder / "mosquitto", listener=listener)

    @property
    def port(self) -> int:
        return self.broker.port

    @property
    def ca_file(self) -> str:
        return str(self.pki / "ca.crt")

    def password_file(self, user: str) -> str:
        return str(self.folder / f"{user}.pw")

    def tls_options(self, user: str) -> dict[str, Any]:
        """The `[mqtt]` keys of TLS and the account `user` (what `commands = true` requires)."""
        return {"tls": True, "ca_file": self.ca_file, "username": user, "password_file": self.password_file(user)}

    def mqtt_options(self, user: str, **kw: Any) -> dict[str, Any]:
        """`[mqtt]` keys for a lock connecting as `user`."""
        return dict(host="127.0.0.1", port=self.port, reconnect_max_s=1.0, **self.tls_options(user), **kw)

    def admin_args(self, user: str = "admin") -> list[str]:
        """The connection arguments of `facelock admin send` for `user`."""
        return ["--host", "127.0.0.1", "--port", str(self.port), "--tls", "--ca-file", self.ca_file,
                "--username", user, "--password-file", self.password_file(user)]

    def client(self, user: str, topics: list[str] | tuple[str, ...] = ()) -> SecureClient:
        return SecureClient(self, user, list(topics))


class SecureClient(Subscriber):
    """`mqtt_broker.Subscriber` over TLS with a password account. With no topics it only publishes."""

    def __init__(self, secure: SecureBroker, user: str, topics: list[str]):
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.messages: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.connected = threading.Event()
        self.topics = topics
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"test-{user}-{id(self)}",
                                  clean_session=True, protocol=mqtt.MQTTv311)
        self.client.tls_set(ca_certs=secure.ca_file)
        self.client.username_pw_set(user, password_of(user))
        self.client.on_connect = self._on_connect_tls
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.connect("127.0.0.1", secure.port, keepalive=10)
        self.client.loop_start()
        assert self.connected.wait(10), f"test client {user} could not connect"
        if topics:
            assert self.subscribed.wait(10), f"test client {user} could not subscribe"

    def _on_connect_tls(self, client, userdata, flags, reason_code, properties):
        if not reason_code.is_failure:
            self.connected.set()
            self._on_connect(client, userdata, flags, reason_code, properties)


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> Path:
    if not HAVE_TOOLS:
        pytest.skip("needs mosquitto, mosquitto_passwd and openssl (Debian packages)")
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def secure_broker(tmp_path, pki):
    """TLS + accounts, no ACL: every account may publish anywhere (what the signatures must hold against)."""
    b = SecureBroker(tmp_path / "secure", pki)
    b.broker.start()
    try:
        yield b
    finally:
        b.broker.stop()
