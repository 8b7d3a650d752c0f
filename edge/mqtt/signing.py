"""Signed commands: what proves that a command comes from the lock's owner and not from any client on the
broker.

A broker account is not an identity one can open a door with: every device, app and integration on the
broker has one. So the commands that open the door or change who may open it (`unlock`, `enroll`, `remove`,
`rename`) must carry an HMAC made with this lock's command key: 32 random bytes made by
`facelock admin keygen`, kept in `mqtt.command_key_file` on the lock and in a file on the admin's machine
(`facelock admin send` signs with it). The key never travels over MQTT.

The envelope, the payload of `<base_topic>/<device_id>/cmd/<name>`:

    {"cmd": {...the command's keys, and "id"...}, "ts": 1767225600, "nonce": "<32 hex>", "sig": "<64 hex>"}

The signature is HMAC-SHA256(key, M), in hex, where M is the canonical JSON of the list

    ["facelock.cmd/1", "<the full command topic>", ts, "<nonce>", {the cmd object}]

(keys sorted, no spaces, non-ASCII escaped: `json.dumps(..., sort_keys=True, separators=(",", ":"))`). The
topic binds the command to this lock and this command name; the lock re-serialises the `cmd` object it
parsed, so what it executes is exactly what was signed.

The lock accepts a signed command only if the signature matches (`hmac.compare_digest`), `ts` (UNIX
seconds) is within `WINDOW_S` of its clock, and the nonce was not used before. Checked in that order: a
command that is not signed with the key learns nothing about the clock or the nonces. Used nonces are kept
(with their `ts`) in a small JSON file in the state directory, written before the command acts, so a
replay inside the window is refused across restarts and power cuts too. When that file is missing or
unreadable (first start, a damaged SD card), commands signed before the service started are refused
as well: nothing recorded can have been forgotten then.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.errors import ConfigError, MqttError

log = logging.getLogger(__name__)

VERSION = "facelock.cmd/1"
KEY_BYTES = 32
WINDOW_S = 60.0
MAX_NONCES = 1000  # used nonces kept at once; only correctly signed commands ever add one
NONCE_PATTERN = re.compile(r"^[0-9a-f]{16,64}$")
SIG_PATTERN = re.compile(r"^[0-9a-f]{64}$")
ENVELOPE_KEYS = ("cmd", "ts", "nonce", "sig")


class CommandRefused(MqttError):
    """A command is not authorised (unsigned, badly signed, stale, replayed, or not allowed now). The
    message is the reply's `error`: it says why, never anything about the key."""


@dataclass(frozen=True)
class Envelope:
    """The signature part of a signed command, as received. `body` is the `cmd` object as parsed (with its
    `id`), which is what the signature covers."""

    body: dict[str, Any]
    ts: int
    nonce: str
    sig: str


# -- keys --------------------------------------------------------------------------------------------------


def new_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def encode_key(key: bytes) -> str:
    return base64.b64encode(key).decode("ascii")


def decode_key(text: str, where: str) -> bytes:
    """The key from its base64 text; ConfigError naming `where` (never the text) if it is not one."""
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != KEY_BYTES:
        raise ConfigError(f"{where}: not a facelock command key (expected {KEY_BYTES} bytes in base64, "
                          "as `facelock admin keygen` writes)")
    return key


def write_key_file(path: str | os.PathLike, key: bytes, overwrite: bool = False) -> Path:
    """Write `key` (base64, one line) to a new file readable by its owner only (0600)."""
    path = Path(path)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise ConfigError(f"{path}: exists already (a key in use; --force replaces it)") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot create the key file ({exc.strerror})") from exc
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        os.fchmod(fh.fileno(), 0o600)  # also when overwriting a file that had other permissions
        fh.write(encode_key(key) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return path


def read_key_file(path: str | os.PathLike, what: str = "command key file") -> bytes:
    """The key in `path`; ConfigError if it cannot be read, is not a key, or others may read or change it."""
    path = Path(path)
    where = f"{what} {str(path)!r}"
    try:
        st = path.stat()
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: cannot read it ({getattr(exc, 'strerror', None) or exc})") from exc
    if st.st_mode & (stat.S_IRWXO | stat.S_IWGRP):
        raise ConfigError(f"{where}: readable or writable by others (mode {stat.S_IMODE(st.st_mode):o}); "
                          f"chmod 600 {path}")
    return decode_key(text, where)


# -- signing ---------------------------------------------------------------------------------------------


def signed_bytes(topic: str, ts: int, nonce: str, body: dict[str, Any]) -> bytes:
    """The bytes the HMAC covers (see the module docstring)."""
    return json.dumps([VERSION, topic, ts, nonce, body], sort_keys=True, separators=(",", ":"),
                      ensure_ascii=True, allow_nan=False).encode("ascii")


def signature(key: bytes, topic: str, ts: int, nonce: str, body: dict[str, Any]) -> str:
    return hmac.new(key, signed_bytes(topic, ts, nonce, body), hashlib.sha256).hexdigest()


def sign(key: bytes, topic: str, body: dict[str, Any], ts: int | None = None, nonce: str | None = None) -> bytes:
    """The payload of a signed command for `topic` (the admin's side)."""
    ts = int(time.time()) if ts is None else ts
    nonce = secrets.token_hex(16) if nonce is None else nonce
    envelope = {"cmd": body, "ts": ts, "nonce": nonce, "sig": signature(key, topic, ts, nonce, body)}
    return json.dumps(envelope, separators=(",", ":")).encode("utf-8")


# -- verifying ---------------------------------------------------------------------------------------------


class NonceStore:
    """Nonces of accepted commands with their `ts`, kept while a replay could still be inside the window
    (2 x WINDOW_S, a margin for a clock that steps back), in a JSON file written atomically before the
    command acts. `path` None: memory only (tests)."""

    def __init__(self, path: str | os.PathLike | None, clock: Callable[[], float] = time.time):
        self.path = Path(path) if path is not None else None
        self.clock = clock
        self.started = clock()
        self.nonces: dict[str, int] = {}
        # Commands signed before this are refused when the file could not be read (nothing to check against).
        self.not_before: float | None = None
        self._lock = threading.Lock()
        if self.path is not None:
            self._load()

    def _load(self) -> None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            nonces = data["nonces"]
            if not isinstance(nonces, dict) or not all(isinstance(k, str) and type(v) is int
                                                       for k, v in nonces.items()):
                raise ValueError("not a table of nonce -> ts")
            self.nonces = dict(nonces)
        except FileNotFoundError:
            self.not_before = self.started
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("commands: nonce file %s unreadable (%s); refusing commands signed before now",
                        self.path, type(exc).__name__)
            self.not_before = self.started

    def seen(self, nonce: str) -> bool:
        with self._lock:
            return nonce in self.nonces

    def record(self, nonce: str, ts: int) -> None:
        """Remember an accepted nonce (on disk before this returns); CommandRefused if it cannot be kept."""
        with self._lock:
            now = self.clock()
            kept = {n: t for n, t in self.nonces.items() if abs(now - t) <= 2 * WINDOW_S}
            if len(kept) >= MAX_NONCES:
                raise CommandRefused(f"busy: more than {MAX_NONCES} signed commands within "
                                     f"{2 * WINDOW_S:.0f} s; try again later")
            kept[nonce] = ts
            if self.path is not None:
                self._write(kept)
            self.nonces = kept

    def _write(self, nonces: dict[str, int]) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "w", encoding="utf-8") as fh:
                json.dump({"nonces": nonces}, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            log.error("commands: cannot write the nonce file %s: %s", self.path, exc.strerror)
            raise CommandRefused("cannot record the command's nonce on the lock (state directory not "
                                 "writable); nothing done") from exc


class Verifier:
    """Checks signed commands for one lock. `key` None: no key configured, every signed command refused."""

    def __init__(self, key: bytes | None, nonces: NonceStore, clock: Callable[[], float] = time.time):
        self._key = key
        self.nonces = nonces
        self.clock = clock

    @property
    def has_key(self) -> bool:
        return self._key is not None

    def verify(self, topic: str, envelope: Envelope) -> None:
        """Accept (and use up the nonce of) a signed command, or CommandRefused saying why."""
        if self._key is None:
            raise CommandRefused("signed commands are off: this lock has no command key (mqtt.command_key_file)")
        try:
            expected = signature(self._key, topic, envelope.ts, envelope.nonce, envelope.body)
        except (TypeError, ValueError):  # a body JSON cannot hold (the parser only makes JSON values)
            raise CommandRefused("bad signature") from None
        if not hmac.compare_digest(expected, envelope.sig):
            raise CommandRefused("bad signature: not signed with this lock's command key, or changed on the way")
        now = self.clock()
        age = now - envelope.ts
        if abs(age) > WINDOW_S:
            raise CommandRefused(f"stale: signed {abs(age):.0f} s {'before' if age > 0 else 'after'} the lock's "
                                 f"clock (at most {WINDOW_S:.0f} s either way; are both clocks set?)")
        if self.nonces.not_before is not None and envelope.ts < self.nonces.not_before - 1:
            raise CommandRefused("stale: signed before the lock's service started; sign it again")
        if self.nonces.seen(envelope.nonce):
            raise CommandRefused("replayed: this command's nonce was used already")
        self.nonces.record(envelope.nonce, envelope.ts)


def open_verifier(key_file: str, nonce_path: str | os.PathLike | None) -> Verifier:
    """The lock's verifier from `mqtt.command_key_file` (empty: no key) and the nonce file's path."""
    key = read_key_file(key_file, "mqtt.command_key_file") if key_file else None
    return Verifier(key, NonceStore(nonce_path))
