"""The lock's MQTT connection: events (through the durable outbox), availability, state, stats, and commands.

What is published where, and in which format, is edge.mqtt.messages; which commands are accepted and how
they are checked, edge.mqtt.commands; Home Assistant discovery, edge.mqtt.discovery.

The connection is MQTT 5, for its PUBACK reason codes: a broker that acknowledges a publish it refuses
(an ACL that denies the topic, a quota) says so, where MQTT 3.1.1 acknowledges it as if delivered.
Events go to the `Outbox` first; `OutboxSender` (edge.mqtt.sender) publishes what is waiting, in order,
and deletes each row only on a PUBACK that accepts it; a refused one stays, is logged once per topic and
reason, shows in `refused` (the state and stats messages), and is retried with back-off and after every
reconnect. Every connection failure is logged once per cause and outage with host:port and the cause
(edge.mqtt.connection), and so is the connection coming back.

Commands (only with `commands = true`) are validated by `parse_command` and queued as `Command`s for the
service loop, which executes them in its own thread and answers with `reply()`. Anything malformed is
logged in one line and answered with an error; nothing a client sends can raise out of the network thread.
Other topics can be subscribed to with `subscriptions` (topic -> handler), as discovery does for Home
Assistant's status topic.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.errors import ConfigError
from edge.mqtt.commands import Command, CommandRejected, parse_command, rejected_command
from edge.mqtt.connection import (
    ConnectionLog,
    describe_connack,
    describe_disconnect,
    describe_error,
    reporting_client,
)
from edge.mqtt.messages import (
    OFFLINE,
    ONLINE,
    RecognitionEvent,
    Topics,
    challenge_payload,
    reply_payload,
    state_payload,
    stats_payload,
)
from edge.mqtt.outbox import Outbox
from edge.mqtt.sender import RETRY_S, OutboxSender, Refusals
from edge.mqtt.subscriptions import Subscriptions
from edge.options import DAY_S, HOUR_S, check

log = logging.getLogger(__name__)

ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class MqttOptions:
    """The broker, the device's topics, and the commands it accepts."""

    host: str = "localhost"
    """Broker host name or address."""
    port: int = 1883
    """Broker port (8883 is usual with TLS)."""
    device_id: str = "door"
    """This lock's id in topics and Home Assistant ids: 1-64 of A-Z a-z 0-9 _ -."""
    base_topic: str = "facelock"
    """Topics are <base_topic>/<device_id>/..."""
    client_id: str = ""
    """MQTT client id; empty: facelock-<device_id>."""
    username: str = ""
    """User name; empty: connect anonymously."""
    password: str = ""
    """Password (prefer password_file, which keeps it out of the config)."""
    password_file: str = ""
    """File whose first line is the password."""
    tls: bool = False
    """Connect with TLS."""
    ca_file: str = ""
    """CA certificate(s) to verify the broker with; empty: the system's."""
    cert_file: str = ""
    """Client certificate for mutual TLS (optional)."""
    key_file: str = ""
    """Private key of cert_file."""
    tls_insecure: bool = False
    """Do not check the broker's host name against its certificate (test setups only)."""
    keepalive_s: int = 30
    """Seconds between keep-alive pings; the broker sends the last will after 1.5 times this."""
    reconnect_min_s: float = 1.0
    """First delay before reconnecting; doubles on each failure ..."""
    reconnect_max_s: float = 60.0
    """... up to this many seconds."""
    max_inflight: int = 20
    """Events published and not yet acknowledged, at most."""
    stats_interval_s: float = 60.0
    """Seconds between stats messages (0: none)."""
    commands: bool = False
    """Accept commands under <base_topic>/<device_id>/cmd/ (reload, enroll, remove, rename, unlock, lock).
    Only with tls and credentials (username + password or password_file, or a client certificate); unlock,
    enroll, remove and rename must also be signed with the command key (see command_key_file)."""
    command_key_file: str = ""
    """File with this lock's command key (`facelock admin keygen`; mode 600): signed commands are checked
    with it. Empty: signed commands are refused."""
    unsigned_unlock: bool = False
    """Let a plain UNLOCK / OPEN on cmd/lock open the door (Home Assistant's lock entity cannot sign). Needs
    commands = true and a broker ACL that lets only Home Assistant's account publish to cmd/lock
    (docs/operations.md); refused during a lockout. Also what makes Home Assistant discovery offer a lock."""
    reveal_candidates: bool = False
    """Reject events name the best candidate and its score (useful when tuning; also an oracle for someone
    tuning a photo against the lock, so off by default)."""
    max_command_bytes: int = 4096
    """Larger command payloads are refused unread."""

    def validate(self) -> MqttOptions:
        return check("mqtt", self, [
            ("host", bool(self.host.strip()), "a host name or address"),
            ("port", 0 < self.port < 65536, "1-65535"),
            ("device_id", bool(ID_PATTERN.match(self.device_id)), "1-64 characters of A-Z a-z 0-9 _ -"),
            ("base_topic", bool(self.base_topic) and not any(c in self.base_topic for c in "#+")
             and not self.base_topic.startswith("/") and not self.base_topic.endswith("/"),
             "a topic prefix without wildcards or leading/trailing '/'"),
            ("keepalive_s", 5 <= self.keepalive_s <= 3600, "5-3600"),
            ("reconnect_min_s", 0 < self.reconnect_min_s <= HOUR_S, "0 < seconds <= 3600"),
            ("reconnect_max_s", self.reconnect_min_s <= self.reconnect_max_s <= DAY_S,
             ">= reconnect_min_s, at most 86400 seconds"),
            ("max_inflight", 1 <= self.max_inflight <= 1000, "1-1000"),
            ("stats_interval_s", 0 <= self.stats_interval_s <= DAY_S, "0-86400 seconds"),
            ("max_command_bytes", 64 <= self.max_command_bytes <= 1 << 20, "64-1048576"),
            ("key_file", not self.key_file or bool(self.cert_file), "only together with cert_file"),
            ("password", not (self.password and self.password_file), "either password or password_file"),
            ("commands", not self.commands or (self.tls and (bool(self.cert_file) or bool(
                self.username and (self.password or self.password_file)))),
             ("true only with tls = true and credentials (username with password or password_file, or "
              "cert_file): without them any client on the network could send the lock commands")),
            ("unsigned_unlock", not self.unsigned_unlock or self.commands,
             "true only with commands = true (and the broker ACL in docs/operations.md)"),
        ])


class MqttLink:
    """The lock's MQTT connection. `start()` connects in the background (and keeps reconnecting);
    `publish_event` stores in the outbox and returns at once; `close()` flushes and says `offline`."""

    def __init__(self, options: MqttOptions, outbox: Outbox, retry_s: tuple[float, float] = RETRY_S):
        """`retry_s`: first and longest delay between retries of a refused event (edge.mqtt.sender)."""
        self.options = options.validate()
        self.outbox = outbox
        self.topics = Topics.of(options.base_topic, options.device_id)
        self.commands: queue.Queue[Command] = queue.Queue(maxsize=32)
        self.on_connected: list[Callable[[], None]] = []  # called in the network thread after each connect
        # further topics subscribed to on each connect: topic -> handler(payload), called in the network thread
        self.subscriptions: dict[str, Callable[[bytes], None]] = {}
        self._connected = threading.Event()
        self._stop = threading.Event()
        self._state: bytes | None = None
        self.connection = ConnectionLog(self.options.host, self.options.port)
        self.refusals = Refusals(self.connection.where)
        self.granted = Subscriptions(self.connection.where, self.topics.commands)  # from the SUBACKs
        self._connack_refused = False  # the last CONNACK refused: its disconnect is not a second cause
        self._client = self._make_client()
        self._sender = OutboxSender(self._client, outbox, self._connected, self.refusals, self.options.max_inflight,
                                    retry_s)

    # -- setup -----------------------------------------------------------------------------------------------

    def _make_client(self):
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        o = self.options
        client = reporting_client(lambda exc: self.connection.failed(describe_error(exc, o.tls)),
                                  callback_api_version=CallbackAPIVersion.VERSION2,
                                  client_id=o.client_id or f"facelock-{o.device_id}", protocol=mqtt.MQTTv5)
        if o.username:
            password = o.password or None
            if o.password_file:
                try:
                    password = Path(o.password_file).read_text(encoding="utf-8").splitlines()[0].strip()
                except (OSError, IndexError) as exc:
                    raise ConfigError(f"mqtt.password_file = {o.password_file!r}: cannot read a password "
                                      f"({exc})") from exc
            client.username_pw_set(o.username, password)
        if o.tls:
            import ssl

            try:
                client.tls_set(ca_certs=o.ca_file or None, certfile=o.cert_file or None,
                               keyfile=o.key_file or None, cert_reqs=ssl.CERT_REQUIRED)
            except (OSError, ssl.SSLError, ValueError) as exc:
                raise ConfigError(f"mqtt TLS files (ca_file {o.ca_file!r}, cert_file {o.cert_file!r}): {exc}") \
                    from exc
            client.tls_insecure_set(o.tls_insecure)
        client.will_set(self.topics.availability, OFFLINE, qos=1, retain=True)
        client.reconnect_delay_set(min_delay=max(1, round(o.reconnect_min_s)), max_delay=round(o.reconnect_max_s))
        client.max_inflight_messages_set(o.max_inflight)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        return client

    def start(self) -> MqttLink:
        o = self.options
        log.info("mqtt: connecting to %s:%d as %s (tls %s)", o.host, o.port, o.client_id or f"facelock-{o.device_id}",
                 "on" if o.tls else "off")
        self._client.connect_async(o.host, o.port, keepalive=o.keepalive_s, clean_start=True)
        self._client.loop_start()
        self._sender.start()
        return self

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    @property
    def subscribed(self) -> bool:
        """Connected, and the broker has answered every subscription of this connection (commands and
        `subscriptions`): from now on a command published is one the lock receives, unless refused."""
        return self._connected.is_set() and self.granted.ready.is_set()

    def wait_subscribed(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        return self._connected.wait(timeout) and self.granted.ready.wait(max(0.0, deadline - time.monotonic()))

    # -- paho callbacks (network thread): never raise ---------------------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._connack_refused = True
            self.connection.failed(describe_connack(reason_code))
            return
        self.connection.connected()
        self._publish(self.topics.availability, ONLINE, qos=1, retain=True)
        self._sender.new_connection()  # the whole backlog again on this connection
        self.granted.connecting()
        for topic in ([self.topics.commands] if self.options.commands else []) + list(self.subscriptions):
            self.granted.sent(topic, *client.subscribe(topic, qos=1))
        self.granted.all_sent()
        self._connected.set()
        for hook in self.on_connected:
            try:
                hook()
            except Exception:  # a hook must not break the connection
                log.exception("mqtt: on-connect hook failed")
        if self._state is not None:
            self._publish(self.topics.state, self._state, qos=1, retain=True)
        self._sender.wake()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        was = self._connected.is_set()
        self._connected.clear()
        refused, self._connack_refused = self._connack_refused, False
        if self._stop.is_set():
            return
        if was:
            self.connection.lost(describe_disconnect(reason_code))
        elif not refused:  # TCP (and TLS) went through, then the broker hung up without a CONNACK
            hint = "does the broker speak MQTT 5?" if self.options.tls else "is that port TLS? mqtt.tls = false here"
            self.connection.failed(f"the broker closed the connection before answering ({reason_code}; {hint})")

    def _on_subscribe(self, client, userdata, mid, reason_code_list, properties) -> None:
        self.granted.acknowledged(mid, reason_code_list)

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        self._sender.on_publish(mid, reason_code)

    def _on_message(self, client, userdata, message) -> None:
        try:
            self._handle_message(message.topic, bytes(message.payload), bool(message.retain))
        except Exception:  # a message must never kill the network thread
            log.exception("mqtt: failed to handle a message on %s", message.topic)

    def _handle_message(self, topic: str, payload: bytes, retained: bool) -> None:
        handler = self.subscriptions.get(topic)
        if handler is not None:
            handler(payload)
            return
        prefix = self.topics.command("")
        if not topic.startswith(prefix):
            return
        name = topic[len(prefix):]
        try:
            command = parse_command(name, payload, self.options.max_command_bytes, retained)
        except CommandRejected as exc:
            # Refused, answered and audited by the service like any refused command (edge.service.commands).
            log.warning("mqtt: command on %s refused (%d bytes): %s", topic, len(payload), exc)
            command = rejected_command(name, str(exc))
        try:
            self.commands.put_nowait(command)
        except queue.Full:
            log.warning("mqtt: command %s refused: too many commands waiting", name)
            self.reply(command.name, command.request_id, ok=False, error="busy: too many commands waiting")
            return
        log.info("mqtt: command %s queued", name)

    # -- publishing ----------------------------------------------------------------------------------------------

    def publish_event(self, event: RecognitionEvent) -> str:
        """Store the event in the outbox (durably) and have it sent; returns its id."""
        self.outbox.put(event.id, self.topics.event, event.to_json(), qos=1, security=event.security)
        self._sender.wake()
        return event.id

    @property
    def refused(self) -> dict[str, dict[str, Any]]:
        """Topics the broker refuses publishes on now: {topic: {"reason": "Not authorized", "count": n}}."""
        return self.refusals.summary()

    def publish_state(self, state: dict[str, Any]) -> None:
        """Retained state; kept and re-published after every reconnect."""
        self._state = state_payload(state)
        self.republish_state()

    def republish_state(self) -> None:
        """The last state again, if there is one (after a subscriber that keeps it, Home Assistant, restarted)."""
        if self._state is not None and self.connected:
            self._publish(self.topics.state, self._state, qos=1, retain=True)

    def publish_stats(self, stats: dict[str, Any]) -> None:
        if self.connected:
            self._publish(self.topics.stats, stats_payload(stats), qos=0)

    def publish_challenge(self, action: str, prompt: str, deadline_s: float, pulses: int) -> None:
        """The active challenge, now or never: not through the outbox (by the time a reconnect sent it, the
        person would have gone)."""
        self.publish_raw(self.topics.challenge, challenge_payload(action, prompt, deadline_s, pulses), qos=1)

    def publish_raw(self, topic: str, payload: str | bytes, qos: int = 1, retain: bool = False) -> None:
        """A direct publish (discovery configs): sent now if connected, else dropped (re-sent on connect)."""
        if self.connected:
            self._publish(topic, payload, qos=qos, retain=retain)

    def _publish(self, topic: str, payload: str | bytes, qos: int, retain: bool = False):
        """Publish now; a QoS 1 message is tracked, so that a refusal of it is logged with its topic."""
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if qos and info.rc == 0:
            self._sender.track(info.mid, topic)
        return info

    def reply(self, command: str, request_id: str | None, ok: bool, error: str = "",
              result: dict[str, Any] | None = None) -> None:
        self.publish_raw(self.topics.reply, reply_payload(command, request_id, ok, error, result), qos=1)

    # -- flushing and closing ---------------------------------------------------------------------------------------

    def flush(self, timeout: float) -> bool:
        """Wait until the outbox is empty (every event acknowledged); False on timeout."""
        deadline = time.monotonic() + timeout
        while len(self.outbox):
            if time.monotonic() >= deadline:
                return False
            if self.connected and self._sender.waiting_for_retry and self._sender.retry_at > deadline:
                return False  # refused by the broker, and not retried before the deadline
            self._sender.wake()
            time.sleep(0.05)
        return True

    def close(self, flush_timeout: float = 5.0) -> None:
        """Flush the outbox (up to `flush_timeout` s), publish `offline`, disconnect."""
        # Waits for a reconnect too: a SIGTERM that lands while the broker is coming back (or the link is
        # still in its reconnect back-off) must not leave the backlog behind when a second would deliver it.
        flushed = self.flush(flush_timeout)
        if not flushed:
            refused = self.refused.get(self.topics.event)
            log.warning("mqtt: %d events still in the outbox%s; they are sent at the next start", len(self.outbox),
                        f" (the broker refuses them: {refused['reason']})" if refused else "")
        if self.connected:
            try:
                info = self._publish(self.topics.availability, OFFLINE, qos=1, retain=True)
                info.wait_for_publish(timeout=2.0)
            except (RuntimeError, ValueError) as exc:
                log.warning("mqtt: could not publish offline: %s", exc)
        self._stop.set()
        self._sender.stop()
        self._client.disconnect()
        self._client.loop_stop()
        log.info("mqtt: closed")
