"""Commands the lock accepts over MQTT (`<base_topic>/<device_id>/cmd/<name>`, only with `mqtt.commands`):
their schema and the validation of every message before it reaches the service loop.

- `reload`  `{}` (or an empty payload): re-read the gallery.
- `enroll`  `{"name": str, "frames": int}` (frames optional, 1-MAX_ENROLL_FRAMES): enrol from the camera.
- `remove`  `{"name": str}`: remove a person.
- `lock`    plain text LOCK / UNLOCK / OPEN (Home Assistant's lock entity), or `{"action": ...}`.

Every JSON command may carry `"id"` (a string of at most 64 characters), echoed in the reply. Checked here:
size, UTF-8, JSON object, allowed keys and their types, name syntax (edge.names), and retained commands are
refused (they would replay on every reconnect). A malformed command raises `CommandRejected`, whose
message is what the reply's `error` says.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from edge.errors import GalleryError, MqttError
from edge.names import validate_name

LOCK_PAYLOADS = ("LOCK", "UNLOCK", "OPEN")
MAX_ENROLL_FRAMES = 50

# command -> {key: (type, required)}; every command may also carry "id" (a string echoed in the reply).
COMMANDS: dict[str, dict[str, tuple[type, bool]]] = {
    "reload": {},
    "enroll": {"name": (str, True), "frames": (int, False)},
    "remove": {"name": (str, True)},
    "lock": {"action": (str, True)},  # payload is plain text; parsed into {"action": ...}
}


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
        return Command("lock", {"action": _lock_action(text)})
    try:
        obj = json.loads(text) if text.strip() else {}
    except ValueError as exc:
        raise CommandRejected(f"payload is not JSON ({exc.msg} at {exc.pos})") from None
    if not isinstance(obj, dict):
        raise CommandRejected(f"payload is a JSON {type(obj).__name__}, expected an object")
    request_id = obj.pop("id", None)
    if request_id is not None and (not isinstance(request_id, str) or len(request_id) > 64):
        raise CommandRejected("key 'id': expected a string of at most 64 characters")
    _check_keys(COMMANDS[name], obj)
    if "name" in obj:
        try:
            obj["name"] = validate_name(obj["name"])
        except GalleryError as exc:
            raise CommandRejected(f"key 'name': {exc}") from None
    if "frames" in obj and not 1 <= obj["frames"] <= MAX_ENROLL_FRAMES:
        raise CommandRejected(f"key 'frames' = {obj['frames']}: expected 1-{MAX_ENROLL_FRAMES}")
    return Command(name, obj, request_id)


def _lock_action(text: str) -> str:
    """LOCK / UNLOCK / OPEN from a plain-text (any case) or `{"action": ...}` lock payload."""
    action = text.strip().upper()
    if action.startswith("{"):
        try:
            obj = json.loads(text)
            action = str(obj.get("action", "")).upper() if isinstance(obj, dict) else ""
        except ValueError:
            action = ""
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


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
