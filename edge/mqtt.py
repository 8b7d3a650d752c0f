"""MQTT for the lock: events (through the durable outbox), availability, state, stats, and commands.

Topics, all under `<base_topic>/<device_id>/` (default `facelock/<device_id>/`):

- `event`         QoS 1, never retained: one JSON `RecognitionEvent` per decision worth telling
                  (schema "facelock.event/1", unique `id`; delivery is at-least-once, drop duplicates by id).
- `availability`  retained `online`; the last will (and a clean shutdown) sets `offline`.
- `state`         retained JSON (schema "facelock.state/1"): lock state, last person, lockout, gallery size.
- `stats`         QoS 0 every `stats_interval_s`: fps, per-stage latency p50/p95, backend, outbox size.
- `cmd/<name>`    commands, only when `commands = true` (off by default): `reload`, `enroll`, `remove`,
                  and `lock` (plain LOCK / UNLOCK / OPEN, for Home Assistant's lock entity).
- `reply`         one JSON reply per command (schema "facelock.reply/1"), ok or the error.

Events go to the `Outbox` first; a sender thread publishes what is waiting, in order, at most
`max_inflight` at a time, and deletes each on its PUBACK. On every (re)connect the whole backlog is sent
again from the oldest, so nothing waits on paho's in-memory queue (duplicates are possible, losses not).

Commands are validated here (size, UTF-8, JSON object, allowed keys and their types, name syntax,
retained commands refused) and queued as `Command`s for the service loop, which executes them in its own
thread and answers with `reply()`. Anything malformed is logged in one line and answered with an error;
nothing a client sends can raise out of the network thread.
"""

from __future__ import annotations

import json
import logging
import queue
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge.errors import ConfigError, MqttError
from edge.outbox import Outbox

log = logging.getLogger(__name__)

EVENT_SCHEMA = "facelock.event/1"
STATE_SCHEMA = "facelock.state/1"
STATS_SCHEMA = "facelock.stats/1"
REPLY_SCHEMA = "facelock.reply/1"
ONLINE, OFFLINE = "online", "offline"
ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
LOCK_PAYLOADS = ("LOCK", "UNLOCK", "OPEN")
MAX_ENROLL_FRAMES = 50

# command -> {key: (type, required)}; every command may also carry "id" (a string echoed in the reply).
COMMANDS: dict[str, dict[str, tuple[type, bool]]] = {
    "reload": {},
    "enroll": {"name": (str, True), "frames": (int, False)},
    "remove": {"name": (str, True)},
    "lock": {"action": (str, True)},  # payload is plain text; parsed into {"action": ...}
}


def utc_now() -> str:
    """UTC ISO-8601 with milliseconds and `Z`."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_event_id() -> str:
    return uuid.uuid4().hex


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
    """Accept commands under <base_topic>/<device_id>/cmd/ (reload, enroll, remove, lock)."""
    max_command_bytes: int = 4096
    """Larger command payloads are refused unread."""

    def validate(self) -> MqttOptions:
        checks = [
            ("host", bool(self.host.strip()), "a host name or address"),
            ("port", 0 < self.port < 65536, "1-65535"),
            ("device_id", bool(ID_PATTERN.match(self.device_id)), "1-64 characters of A-Z a-z 0-9 _ -"),
            ("base_topic", bool(self.base_topic) and not any(c in self.base_topic for c in "#+")
             and not self.base_topic.startswith("/") and not self.base_topic.endswith("/"),
             "a topic prefix without wildcards or leading/trailing '/'"),
            ("keepalive_s", 5 <= self.keepalive_s <= 3600, "5-3600"),
            ("reconnect_min_s", self.reconnect_min_s > 0, "> 0"),
            ("reconnect_max_s", self.reconnect_max_s >= self.reconnect_min_s, ">= reconnect_min_s"),
            ("max_inflight", 1 <= self.max_inflight <= 1000, "1-1000"),
            ("stats_interval_s", self.stats_interval_s >= 0, ">= 0"),
            ("max_command_bytes", 64 <= self.max_command_bytes <= 1 << 20, "64-1048576"),
            ("key_file", not self.key_file or bool(self.cert_file), "only together with cert_file"),
            ("password", not (self.password and self.password_file), "either password or password_file"),
        ]
        for key, ok, expected in checks:
            if not ok:
                raise ConfigError(f"mqtt.{key} = {getattr(self, key)!r}: expected {expected}")
        return self


@dataclass(frozen=True)
class Topics:
    base: str  # facelock/<device_id>

    @classmethod
    def of(cls, options: MqttOptions) -> Topics:
        return cls(f"{options.base_topic}/{options.device_id}")

    @property
    def event(self) -> str:
        return f"{self.base}/event"

    @property
    def availability(self) -> str:
        return f"{self.base}/availability"

    @property
    def state(self) -> str:
        return f"{self.base}/state"

    @property
    def stats(self) -> str:
        return f"{self.base}/stats"

    @property
    def reply(self) -> str:
        return f"{self.base}/reply"

    @property
    def commands(self) -> str:
        return f"{self.base}/cmd/#"

    def command(self, name: str) -> str:
        return f"{self.base}/cmd/{name}"


@dataclass(frozen=True)
class RecognitionEvent:
    """One event message. `event_type`: recognized | unknown | rejected | lockout | unlock_allowed
    (Home Assistant's event entity uses it); `person` is a name or "unknown"."""

    event_type: str
    person: str
    decision: str
    score: float | None = None
    latency_ms: float | None = None
    reason: str = ""
    candidate: str | None = None  # best guess below the bar, for rejects
    retry_after_s: float | None = None
    device: str = ""
    id: str = field(default_factory=new_event_id)
    time: str = field(default_factory=utc_now)

    def to_dict(self) -> dict[str, Any]:
        d = {"schema": EVENT_SCHEMA, **asdict(self)}
        if d["score"] is not None:
            d["score"] = round(d["score"], 4)
        if d["latency_ms"] is not None:
            d["latency_ms"] = round(d["latency_ms"], 1)
        return {k: v for k, v in d.items() if v is not None}

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":")).encode()


@dataclass(frozen=True)
class Command:
    """A validated command for the service loop."""

    name: str  # reload | enroll | remove | lock
    args: dict[str, Any]
    request_id: str | None = None
    received: float = field(default_factory=time.monotonic)


class CommandRejected(MqttError):
    """A command payload is malformed; the message says which key or what was expected."""


def parse_command(name: str, payload: bytes, max_bytes: int, retained: bool = False) -> Command:
    """Validate one command message; CommandRejected saying what is wrong."""
    if retained:
        raise CommandRejected("retained commands are refused (they would replay on every reconnect)")
    if name not in COMMANDS:
        raise CommandRejected(f"unknown command {name!r}; expected one of {', '.join(COMMANDS)}")
    if len(payload) > max_bytes:
        raise CommandRejected(f"payload is {len(payload)} bytes, at most {max_bytes} accepted")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise CommandRejected("payload is not UTF-8 text") from None
    if name == "lock":
        action = text.strip().upper()
        if action.startswith("{"):
            try:
                obj = json.loads(text)
                action = str(obj.get("action", "")).upper() if isinstance(obj, dict) else ""
            except ValueError:
                action = ""
        if action not in LOCK_PAYLOADS:
            raise CommandRejected(f"lock payload {text[:20]!r}: expected one of {', '.join(LOCK_PAYLOADS)}")
        return Command("lock", {"action": action})
    try:
        obj = json.loads(text) if text.strip() else {}
    except ValueError as exc:
        raise CommandRejected(f"payload is not JSON ({exc.msg} at {exc.pos})") from None
    if not isinstance(obj, dict):
        raise CommandRejected(f"payload is a JSON {type(obj).__name__}, expected an object")
    request_id = obj.pop("id", None)
    if request_id is not None and (not isinstance(request_id, str) or len(request_id) > 64):
        raise CommandRejected("key 'id': expected a string of at most 64 characters")
    schema = COMMANDS[name]
    unknown = sorted(set(obj) - set(schema))
    if unknown:
        raise CommandRejected(f"unknown key(s) {', '.join(map(repr, unknown))}; expected "
                              f"{', '.join(map(repr, ['id', *schema]))}")
    for key, (tp, required) in schema.items():
        if key not in obj:
            if required:
                raise CommandRejected(f"key {key!r} missing: expected {tp.__name__}")
            continue
        value = obj[key]
        if not isinstance(value, tp) or isinstance(value, bool) and tp is not bool:
            raise CommandRejected(f"key {key!r} = {_short(value)}: expected {tp.__name__}")
    if "name" in obj:
        from edge.errors import GalleryError
        from edge.gallery import validate_name

        try:
            obj["name"] = validate_name(obj["name"])
        except GalleryError as exc:
            raise CommandRejected(f"key 'name': {exc}") from None
    if "frames" in obj and not 1 <= obj["frames"] <= MAX_ENROLL_FRAMES:
        raise CommandRejected(f"key 'frames' = {obj['frames']}: expected 1-{MAX_ENROLL_FRAMES}")
    return Command(name, obj, request_id)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class MqttLink:
    """The lock's MQTT connection. `start()` connects in the background (and keeps reconnecting);
    `publish_event` stores in the outbox and returns at once; `close()` flushes and says `offline`."""

    def __init__(self, options: MqttOptions, outbox: Outbox):
        self.options = options.validate()
        self.outbox = outbox
        self.topics = Topics.of(options)
        self.commands: queue.Queue[Command] = queue.Queue(maxsize=32)
        self.on_connected: list[Callable[[], None]] = []  # called in the network thread after each connect
        self.on_ha_online: Callable[[], None] | None = None
        self.ha_status_topic: str | None = None
        self._connected = threading.Event()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._acks: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._generation = 0
        self._state: bytes | None = None
        self._client = self._make_client()
        self._sender = threading.Thread(target=self._send_loop, name="mqtt-outbox", daemon=True)

    # -- setup -----------------------------------------------------------------------------------------------

    def _make_client(self):
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        o = self.options
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=o.client_id or f"facelock-{o.device_id}",
                             clean_session=True, protocol=mqtt.MQTTv311)
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
        return client

    def start(self) -> MqttLink:
        o = self.options
        log.info("mqtt: connecting to %s:%d as %s (tls %s)", o.host, o.port, o.client_id or f"facelock-{o.device_id}",
                 "on" if o.tls else "off")
        self._client.connect_async(o.host, o.port, keepalive=o.keepalive_s)
        self._client.loop_start()
        self._sender.start()
        return self

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    # -- paho callbacks (network thread): never raise ---------------------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.warning("mqtt: broker %s:%d refused the connection: %s", self.options.host, self.options.port,
                        reason_code)
            return
        log.info("mqtt: connected to %s:%d", self.options.host, self.options.port)
        client.publish(self.topics.availability, ONLINE, qos=1, retain=True)
        self._generation += 1  # the sender sends the whole backlog again on this connection
        self._connected.set()
        if self.options.commands:
            client.subscribe(self.topics.commands, qos=1)
        if self.ha_status_topic:
            client.subscribe(self.ha_status_topic, qos=1)
        for hook in self.on_connected:
            try:
                hook()
            except Exception:  # a hook must not break the connection
                log.exception("mqtt: on-connect hook failed")
        if self._state is not None:
            client.publish(self.topics.state, self._state, qos=1, retain=True)
        self._wake.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        was = self._connected.is_set()
        self._connected.clear()
        if was and not self._stop.is_set():
            log.warning("mqtt: disconnected from %s:%d (%s); reconnecting", self.options.host, self.options.port,
                        reason_code)

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        self._acks.put(mid)
        self._wake.set()

    def _on_message(self, client, userdata, message) -> None:
        try:
            self._handle_message(message.topic, bytes(message.payload), bool(message.retain))
        except Exception:  # a message must never kill the network thread
            log.exception("mqtt: failed to handle a message on %s", message.topic)

    def _handle_message(self, topic: str, payload: bytes, retained: bool) -> None:
        if self.ha_status_topic and topic == self.ha_status_topic:
            if payload.strip() == b"online" and self.on_ha_online is not None:
                log.info("mqtt: Home Assistant is online; publishing discovery again")
                self.on_ha_online()
            return
        prefix = self.topics.command("")
        if not topic.startswith(prefix):
            return
        name = topic[len(prefix):]
        try:
            command = parse_command(name, payload, self.options.max_command_bytes, retained)
        except CommandRejected as exc:
            log.warning("mqtt: command on %s refused (%d bytes): %s", topic, len(payload), exc)
            self.reply(name[:32], None, ok=False, error=str(exc))
            return
        try:
            self.commands.put_nowait(command)
        except queue.Full:
            log.warning("mqtt: command %s refused: too many commands waiting", name)
            self.reply(name, command.request_id, ok=False, error="busy: too many commands waiting")
            return
        log.info("mqtt: command %s queued", name)

    # -- publishing ----------------------------------------------------------------------------------------------

    def publish_event(self, event: RecognitionEvent) -> str:
        """Store the event in the outbox (durably) and have it sent; returns its id."""
        self.outbox.put(event.id, self.topics.event, event.to_json(), qos=1)
        self._wake.set()
        return event.id

    def publish_state(self, state: dict[str, Any]) -> None:
        """Retained state; kept and re-published after every reconnect."""
        payload = json.dumps({"schema": STATE_SCHEMA, "time": utc_now(), **state}, separators=(",", ":")).encode()
        self._state = payload
        if self.connected:
            self._client.publish(self.topics.state, payload, qos=1, retain=True)

    def publish_stats(self, stats: dict[str, Any]) -> None:
        if self.connected:
            payload = {"schema": STATS_SCHEMA, "time": utc_now(), **stats}
            self._client.publish(self.topics.stats, json.dumps(payload, separators=(",", ":")), qos=0)

    def publish_raw(self, topic: str, payload: str | bytes, qos: int = 1, retain: bool = False) -> None:
        """A direct publish (discovery configs): sent now if connected, else dropped (re-sent on connect)."""
        if self.connected:
            self._client.publish(topic, payload, qos=qos, retain=retain)

    def reply(self, command: str, request_id: str | None, ok: bool, error: str = "",
              result: dict[str, Any] | None = None) -> None:
        payload: dict[str, Any] = {"schema": REPLY_SCHEMA, "time": utc_now(), "command": command, "ok": ok}
        if request_id is not None:
            payload["id"] = request_id
        if error:
            payload["error"] = error
        if result:
            payload["result"] = result
        self.publish_raw(self.topics.reply, json.dumps(payload, separators=(",", ":")), qos=1)

    # -- the outbox sender ------------------------------------------------------------------------------------------

    def _send_loop(self) -> None:
        inflight: dict[int, int] = {}  # mid -> seq
        sent_upto = 0
        generation = -1
        while not self._stop.is_set():
            self._wake.wait(0.5)
            self._wake.clear()
            try:
                while True:
                    mid = self._acks.get_nowait()
                    seq = inflight.pop(mid, None)
                    if seq is not None:
                        self.outbox.ack(seq)
            except queue.Empty:
                pass
            if not self._connected.is_set():
                continue
            if generation != self._generation:  # a new connection: send the whole backlog again, in order
                generation = self._generation
                inflight.clear()
                sent_upto = 0
            room = self.options.max_inflight - len(inflight)
            if room <= 0:
                continue
            try:
                entries = self.outbox.pending(limit=room, after_seq=sent_upto)
            except Exception:  # keep the sender alive; the rows stay for the next try
                log.exception("mqtt: cannot read the outbox")
                continue
            for entry in entries:
                if not self._connected.is_set():
                    break
                info = self._client.publish(entry.topic, entry.payload, qos=entry.qos, retain=False)
                if info.rc != 0:
                    break  # not connected after all: the next connection sends it
                inflight[info.mid] = entry.seq
                sent_upto = entry.seq
            if entries and len(entries) == room:
                self._wake.set()

    def flush(self, timeout: float) -> bool:
        """Wait until the outbox is empty (every event acknowledged); False on timeout."""
        deadline = time.monotonic() + timeout
        while len(self.outbox):
            if time.monotonic() >= deadline:
                return False
            self._wake.set()
            time.sleep(0.05)
        return True

    def close(self, flush_timeout: float = 5.0) -> None:
        """Flush the outbox (up to `flush_timeout` s), publish `offline`, disconnect."""
        # Waits for a reconnect too: a SIGTERM that lands while the broker is coming back (or the link is
        # still in its reconnect back-off) must not leave the backlog behind when a second would deliver it.
        flushed = self.flush(flush_timeout)
        if not flushed:
            log.warning("mqtt: %d events still in the outbox; they are sent at the next start", len(self.outbox))
        if self.connected:
            try:
                info = self._client.publish(self.topics.availability, OFFLINE, qos=1, retain=True)
                info.wait_for_publish(timeout=2.0)
            except (RuntimeError, ValueError) as exc:
                log.warning("mqtt: could not publish offline: %s", exc)
        self._stop.set()
        self._wake.set()
        self._client.disconnect()
        self._client.loop_stop()
        if self._sender.is_alive():
            self._sender.join(timeout=2.0)
        log.info("mqtt: closed")
