"""Commands the lock accepts over MQTT (`<base_topic>/<device_id>/cmd/<name>`, only with `mqtt.commands`):
their schema and the validation of every message before it reaches the service loop.

- `reload`  `{}` (or an empty payload): re-read the gallery.
- `enroll`  `{"name": str, "frames": int, "add": bool}` (frames optional, 1-MAX_ENROLL_FRAMES): enrol from
            the camera; a person enrolled already only with `"add": true`. Signed.
- `remove`  `{"name": str}`: remove a person. Signed.
- `rename`  `{"name": str, "to": str}`: rename a person. Signed.
- `unlock`  `{}`: open the door. Signed.
- `lock`    plain text LOCK / UNLOCK / OPEN (Home Assistant's lock entity), or `{"action": ...}`. LOCK is
            always accepted; UNLOCK / OPEN here only with `mqtt.unsigned_unlock` (Home Assistant cannot sign).

Every JSON command may carry `"id"` (a string of at most 64 characters), echoed in the reply. A command
is signed by wrapping it in an envelope, `{"cmd": {...}, "ts": ..., "nonce": ..., "sig": ...}` (see
edge.mqtt.signing); the envelope's shape and the inner command are checked here, the signature by the
service (which holds the key), before anything acts. Checked here: size, UTF-8, JSON object, allowed keys
and their types, name syntax (edge.names), and retained commands are refused (they would replay on every
reconnect). A malformed command raises `CommandRejected`, whose message is what the reply's `error` says.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from typing import Any

from edge.errors import GalleryError, MqttError
from edge.mqtt.signing import ENVELOPE_KEYS, NONCE_PATTERN, SIG_PATTERN, Envelope
from edge.names import validate_name

LOCK_PAYLOADS = ("LOCK", "UNLOCK", "OPEN")
MAX_ENROLL_FRAMES = 50

# command -> {key: (type, required)}; every command may also carry "id" (a string echoed in the reply).
COMMANDS: dict[str, dict[str, tuple[type, bool]]] = {
    "reload": {},
    "enroll": {"name": (str, True), "frames": (int, False), "add": (bool, False)},
    "remove": {"name": (str, True)},
    "rename": {"name": (str, True), "to": (str, True)},
    "unlock": {},
    "lock": {"action": (str, True)},  # payload is plain text; parsed into {"action": ...}
}
# Commands that open the door or change who may open it: refused unless signed with the lock's key.
SIGNED_COMMANDS = frozenset({"enroll", "remove", "rename", "unlock"})


@dataclass(frozen=True)
class Command:
    """A validated command for the service loop."""

    name: str  # reload | enroll | remove | rename | unlock | lock
    args: dict[str, Any]
    request_id: str | None = None
    received: float = field(default_factory=time.monotonic)
    envelope: Envelope | None = None  # signed commands: the signature to check before acting
    rejected: str | None = None  # a malformed one: why (the service refuses and audits it; it never acts)


def rejected_command(topic_name: str, error: str) -> Command:
    """A malformed command as the service sees it: refused, answered and audited like any other. The name
    is the topic's last level as the client sent it, cut to 32 characters of [A-Za-z0-9_-] (the rest '?')."""
    name = "".join(c if c.isascii() and (c.isalnum() or c in "_-") else "?" for c in topic_name[:32])
    return Command(name or "?", {}, rejected=error)


class CommandRejected(MqttError):
    """A command payload is malformed; the message says which key or what was expected."""


def parse_command(name: str, payload: bytes, max_bytes: int, retained: bool = False) -> Command:
    """Validate one command message; CommandRejected saying what is wrong, and nothing else: whatever a
    client sends (nesting 4,000 deep, a 5,000-digit number) ends in a reply, never in a traceback."""
    try:
        return _parse(name, payload, max_bytes, retained)
    except CommandRejected:
        raise
    except Exception as exc:  # noqa: BLE001 -- the payload is the client's; no payload may raise past here
        raise CommandRejected(f"payload could not be read ({type(exc).__name__})") from None


def _parse(name: str, payload: bytes, max_bytes: int, retained: bool) -> Command:
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
        return Command("lock", {"action": _lock_action(text)})
    obj = _json(text) if text.strip() else {}
    if not isinstance(obj, dict):
        raise CommandRejected(f"payload is a JSON {type(obj).__name__}, expected an object")
    if is_envelope(obj):
        return parse_signed(name, obj)
    return _command_from(name, obj)


def is_envelope(obj: dict[str, Any]) -> bool:
    """A signed command's envelope (rather than a plain command): it has any of the envelope's keys, none
    of which is a command key."""
    return any(key in obj for key in ENVELOPE_KEYS)


def parse_signed(name: str, obj: dict[str, Any]) -> Command:
    """A signed command: the envelope's shape, then the inner command as any other. The signature itself is
    checked by the service (edge.mqtt.signing.Verifier) before the command acts."""
    keys = sorted(set(obj) ^ set(ENVELOPE_KEYS))
    if keys:
        raise CommandRejected(f"signed command: expected exactly the keys {', '.join(map(repr, ENVELOPE_KEYS))}"
                              f" (missing or extra: {', '.join(_short(k) for k in keys[:5])})")
    body, ts, nonce, sig = (obj[k] for k in ENVELOPE_KEYS)
    if not isinstance(body, dict):
        raise CommandRejected("signed command: key 'cmd': expected an object")
    if type(ts) is not int or not 0 < ts < 1 << 40:
        raise CommandRejected("signed command: key 'ts': expected UNIX seconds (an integer)")
    if not isinstance(nonce, str) or not NONCE_PATTERN.match(nonce):
        raise CommandRejected("signed command: key 'nonce': expected 16-64 lowercase hex digits")
    if not isinstance(sig, str) or not SIG_PATTERN.match(sig):
        raise CommandRejected("signed command: key 'sig': expected 64 lowercase hex digits (HMAC-SHA256)")
    command = _command_from(name, dict(body))
    return replace(command, envelope=Envelope(body, ts, nonce, sig))


def _command_from(name: str, obj: dict[str, Any]) -> Command:
    """A plain command's object (or a signed one's `cmd`): id, keys, types, names and ranges."""
    request_id = obj.pop("id", None)
    if request_id is not None and (not isinstance(request_id, str) or len(request_id) > 64):
        raise CommandRejected("key 'id': expected a string of at most 64 characters")
    _check_keys(COMMANDS[name], obj)
    for key in ("name", "to"):
        if key in obj:
            try:
                obj[key] = validate_name(obj[key])
            except GalleryError as exc:
                raise CommandRejected(f"key {key!r}: {exc}") from None
    if "frames" in obj and not 1 <= obj["frames"] <= MAX_ENROLL_FRAMES:
        raise CommandRejected(f"key 'frames' = {obj['frames']}: expected 1-{MAX_ENROLL_FRAMES}")
    return Command(name, obj, request_id)


def _lock_action(text: str) -> str:
    """LOCK / UNLOCK / OPEN from a plain-text (any case) or `{"action": ...}` lock payload."""
    action = text.strip().upper()
    if action.startswith("{"):
        obj = _json(text)
        action = obj.get("action") if isinstance(obj, dict) else None
        action = action.upper() if isinstance(action, str) else ""
    if action not in LOCK_PAYLOADS:
        raise CommandRejected(f"lock payload {text[:20]!r}: expected one of {', '.join(LOCK_PAYLOADS)}")
    return action


def _check_keys(schema: dict[str, tuple[type, bool]], obj: dict[str, Any]) -> None:
    """Only the schema's keys, the required ones present, each of its type (a bool is not an int)."""
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


def _json(text: str) -> Any:
    """The decoded JSON, or CommandRejected: invalid JSON, nesting deeper than Python's recursion limit (the
    decoder recurses once per level: `[[[...]]]` under the size cap is enough), or an integer past
    Python's 4,300-digit limit (a ValueError without a position)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CommandRejected(f"payload is not JSON ({exc.msg} at {exc.pos})") from None
    except RecursionError:
        raise CommandRejected("payload is not JSON this lock reads (nested too deeply)") from None
    except ValueError as exc:
        raise CommandRejected(f"payload is not JSON this lock reads ({str(exc)[:80]})") from None


def _short(value: Any) -> str:
    try:
        text = repr(value)
    except (RecursionError, ValueError):  # nested too deeply; an integer too long to print
        return f"a {type(value).__name__}"
    return text if len(text) <= 40 else text[:37] + "..."
