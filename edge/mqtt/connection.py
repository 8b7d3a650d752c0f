"""Why the broker connection failed, in one line per cause per outage.

paho retries a failed connection on its own and keeps the reason to itself (`on_connect_fail` gets no
exception), so a lock with a wrong host, a closed port, an expired certificate or a changed password
would retry forever and log nothing. `ConnectionLog` is told every failure (the exception from paho's
`reconnect`, a refusing CONNACK, a connection closed before the broker answered, a connection lost) and
logs a WARNING naming host:port and the cause the first time each distinct cause appears in an outage, not
on every retry; when the connection comes back it logs one line saying after how long and how many failed
attempts. No line ever carries the password: causes come from socket/TLS errors and MQTT reason codes.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

# CONNACK reason codes (MQTT 5) that mean "who you are", and what to check.
_CREDENTIALS = {0x86, 0x87, 0x8C}
_HINTS = {
    0x84: "the broker does not accept MQTT 5 (facelock needs it to see refused publishes; Mosquitto >= 1.6)",
    0x85: "check mqtt.client_id",
    0x8A: "this account is banned on the broker",
    0x8D: "check mqtt.keepalive_s",
}


def describe_error(exc: BaseException, tls: bool) -> str:
    """A connection attempt's exception as a cause a person can act on (no secrets are in these)."""
    if isinstance(exc, socket.gaierror):
        return f"host name not resolved (DNS: {exc.strerror or exc})"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS: the broker's certificate is not accepted ({exc.verify_message or exc.reason or exc})"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed ({exc.reason or exc})"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (nothing listens on that port, or a firewall rejects it)"
    if isinstance(exc, ConnectionResetError) and tls:
        return "connection reset during the TLS handshake (is that port TLS? mqtt.tls = true here)"
    if isinstance(exc, TimeoutError):
        return "timed out (host down or unreachable, or packets dropped)"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror} ({type(exc).__name__})"
    return f"{type(exc).__name__}: {exc}"


def describe_connack(reason: Any) -> str:
    """A refusing CONNACK's reason code, named, with what to check."""
    value = getattr(reason, "value", None)
    name = str(reason)
    text = f"the broker refused the connection: {name}" + (f" (0x{value:02X})" if isinstance(value, int) else "")
    if value in _CREDENTIALS:
        return text + ": check mqtt.username and the password (or password_file), and the broker's ACL"
    hint = _HINTS.get(value)
    return f"{text}: {hint}" if hint else text


def describe_disconnect(reason: Any) -> str:
    """Why an established connection ended."""
    value = getattr(reason, "value", None)
    if value == 0x8E:
        return f"{reason}: another client connected with this client id (mqtt.client_id, device_id)"
    if value in (0x80, None) or str(reason) == "Unspecified error":
        return "it dropped (the broker stopped or restarted, the network is down, or the keep-alive timed out)"
    return f"the broker disconnected: {reason} (0x{value:02X})"


class ConnectionLog:
    """The connection's ups and downs for the log (and for `summary()`); thread-safe, never raises."""

    def __init__(self, host: str, port: int):
        self.where = f"{host}:{port}"
        self._lock = threading.Lock()
        self._causes: set[str] = set()  # causes logged in this outage
        self._failures = 0  # failed attempts in this outage
        self._down_since: float | None = time.monotonic()  # not connected yet counts as an outage
        self._ever_connected = False
        self.last_cause: str | None = None  # of the last failure or lost connection (kept once connected again)
        self.connects = 0  # successful connections since the start
        self.failures = 0  # failed attempts since the start

    def failed(self, cause: str) -> None:
        """A connection attempt failed: the first time in this outage that `cause` is seen, a WARNING."""
        with self._lock:
            self._failures += 1
            self.failures += 1
            self.last_cause = cause
            if self._down_since is None:
                self._down_since = time.monotonic()
            new = cause not in self._causes
            self._causes.add(cause)
        if new:
            log.warning("mqtt: cannot connect to %s: %s; retrying (logged again only for another cause)",
                        self.where, cause)

    def lost(self, cause: str) -> None:
        """An established connection ended: one WARNING, and a new outage begins."""
        with self._lock:
            self._down_since = time.monotonic()
            self._causes = set()
            self._failures = 0
            self.last_cause = cause
        log.warning("mqtt: connection to %s lost: %s; reconnecting", self.where, cause)

    def connected(self) -> None:
        """Connected (CONNACK success): one INFO line, saying how long the outage lasted if there was one."""
        with self._lock:
            down = None if self._down_since is None else time.monotonic() - self._down_since
            failures, again = self._failures, self._ever_connected
            self._down_since, self._causes, self._failures = None, set(), 0
            self._ever_connected = True
            self.connects += 1
        if again or failures:
            log.info("mqtt: connected to %s again after %.0f s (%d failed attempt%s)", self.where, down or 0.0,
                     failures, "" if failures == 1 else "s")
        else:
            log.info("mqtt: connected to %s", self.where)

    def summary(self) -> dict[str, Any]:
        with self._lock:
            return {"connects": self.connects, "connect_failures": self.failures, "last_connect_error": self.last_cause}


def reporting_client(on_connect_error: Callable[[OSError], None], **kwargs):
    """A paho `Client` (built with `kwargs`) that hands every exception a connection attempt raises (DNS,
    refused, TLS, timeout) to `on_connect_error` before paho swallows it and retries."""
    import paho.mqtt.client as mqtt

    class ReportingClient(mqtt.Client):
        def __init__(self, on_error: Callable[[OSError], None], **kw):
            super().__init__(**kw)
            self.on_connect_error = on_error

        def reconnect(self):
            try:
                return super().reconnect()
            except OSError as exc:
                try:
                    self.on_connect_error(exc)
                except Exception:  # reporting must not change paho's retrying
                    log.exception("mqtt: reporting a connection error failed")
                raise

    return ReportingClient(on_connect_error, **kwargs)
