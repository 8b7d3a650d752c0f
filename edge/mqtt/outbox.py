"""A durable outbox for events: written to SQLite before publishing, deleted only when the broker's PUBACK
says it took the event (an MQTT 5 success reason code: edge.mqtt.sender). paho-mqtt's own queue lives in memory (lost on a crash or power cut), so the outbox is what makes
delivery at-least-once across broker outages and process restarts (SIGKILL included).

Storage: WAL journal, `synchronous=FULL` by default (an event committed here survives a power cut too),
one row per event in insertion order (`seq`), keyed by the event's unique `id` (putting the same id twice
is a no-op, so a producer that crashed between "put" and "remember I put it" can safely put again).

Bounded: at most `max_events` rows, except for security events. Each row says whether it is a security
event (`put(..., security=True)`: a lockout, its end, an accepted face that opened the door, a command's
audit record); those are never dropped. When a new event would exceed the cap, `when_full` decides for a
new ordinary event: "drop_oldest" (default: the newest events matter most at a door, the backlog is old
news) deletes the oldest ordinary rows to make room, "drop_newest" refuses the new event. A new security
event always takes the place of the oldest ordinary row; when only security events are left, it is stored
beyond the cap rather than dropping one (the outbox then grows, one row per lockout or door opening, until
the broker is back). What is dropped is counted (persisted: `dropped` survives restarts; reported in the
state and stats messages) and logged: the first drop after the outbox was below its cap, then every 1000th.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from edge.errors import FacelockError
from edge.files import SQLITE_COMPANIONS, private_file
from edge.mqtt.messages import is_security_payload
from edge.options import check

log = logging.getLogger(__name__)


class OutboxError(FacelockError):
    """The outbox database cannot be opened or written."""


def default_outbox_path() -> Path:
    """$XDG_STATE_HOME/facelock/outbox.db (~/.local/state/facelock/outbox.db)."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "facelock" / "outbox.db"


@dataclass(frozen=True)
class OutboxOptions:
    """Where undelivered events wait, and how many."""

    path: str = ""
    """SQLite file; empty: $XDG_STATE_HOME/facelock/outbox.db (~/.local/state/facelock/outbox.db)."""
    max_events: int = 10000
    """Most events kept while the broker is unreachable (security events are kept beyond it: never dropped)."""
    when_full: Literal["drop_oldest", "drop_newest"] = "drop_oldest"
    """What to drop when `max_events` are waiting: the oldest ordinary event, or the new one (if ordinary);
    lockout, accepted-face and command audit events are never dropped."""
    max_payload_bytes: int = 65536
    """Largest event payload accepted."""
    fsync: bool = True
    """Flush each event to disk before publishing it (SQLite synchronous=FULL); false: NORMAL (survives a
    process crash, not a power cut), fewer writes to the SD card."""

    def validate(self) -> OutboxOptions:
        return check("outbox", self, [
            ("max_events", 1 <= self.max_events <= 10**7, "1-10000000"),
            ("max_payload_bytes", 256 <= self.max_payload_bytes <= 1 << 24, "256-16777216"),
        ])


@dataclass(frozen=True)
class OutboxEntry:
    seq: int
    id: str
    topic: str
    payload: bytes
    qos: int
    created: float  # UNIX seconds


_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    created REAL NOT NULL,
    security INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
_INDEX = "CREATE INDEX IF NOT EXISTS events_by_kind ON events (security, seq)"
_LOG_EVERY = 1000  # drops (and rows beyond the cap) between two warnings


class Outbox:
    """`put` an event (committed before it returns), `pending` to send in order, `ack` when PUBACKed.
    Thread-safe: one connection behind a lock (the MQTT network thread acks, the service thread puts)."""

    def __init__(self, options: OutboxOptions | None = None):
        self.options = (options or OutboxOptions()).validate()
        self.path = Path(self.options.path) if self.options.path else default_outbox_path()
        self._lock = threading.Lock()
        try:
            private_file(self.path, companions=SQLITE_COMPANIONS)  # events name people: owner only
            self._db = sqlite3.connect(self.path, timeout=10.0, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute(f"PRAGMA synchronous = {'FULL' if self.options.fsync else 'NORMAL'}")
            self._db.executescript(_SCHEMA)
            self._migrate()
            self._db.execute(_INDEX)
            row = self._db.execute("SELECT value FROM counters WHERE name = 'dropped'").fetchone()
        except (OSError, sqlite3.Error) as exc:
            raise OutboxError(f"outbox {self.path}: cannot open ({exc})") from exc
        self._dropped = int(row[0]) if row else 0
        self._full = False  # at the cap since the last warning (a warning per episode, not per event)

    def _migrate(self) -> None:
        """An outbox from before security events were marked: add the column, mark the rows waiting."""
        columns = {r[1] for r in self._db.execute("PRAGMA table_info(events)")}
        if "security" in columns:
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute("ALTER TABLE events ADD COLUMN security INTEGER NOT NULL DEFAULT 0")
            rows = self._db.execute("SELECT seq, payload FROM events").fetchall()
            marked = [(seq,) for seq, payload in rows if is_security_payload(bytes(payload))]
            self._db.executemany("UPDATE events SET security = 1 WHERE seq = ?", marked)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0])

    @property
    def dropped(self) -> int:
        """Events dropped because the outbox was full, since it was created (persisted)."""
        return self._dropped

    @property
    def over_cap(self) -> int:
        """Security events waiting beyond `max_events` (0 unless only security events were left to drop)."""
        return max(0, len(self) - self.options.max_events)

    def put(self, event_id: str, topic: str, payload: bytes, qos: int = 1, security: bool = False) -> bool:
        """Store an event durably. False when it was refused (full, and not `security`) or already stored.
        A `security` event is never refused and never dropped later (see the module doc)."""
        if len(payload) > self.options.max_payload_bytes:
            raise OutboxError(f"event {event_id} for {topic}: payload {len(payload)} bytes, at most "
                              f"{self.options.max_payload_bytes} (outbox.max_payload_bytes)")
        with self._lock:
            dropped, full = self._dropped, self._full
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    stored = self._put(event_id, topic, payload, qos, security)
                    self._db.execute("COMMIT")
                except BaseException:
                    self._dropped, self._full = dropped, full  # nothing was dropped after all
                    self._db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise OutboxError(f"outbox {self.path}: cannot store event {event_id} ({exc})") from exc
        return stored

    def _put(self, event_id: str, topic: str, payload: bytes, qos: int, security: bool) -> bool:
        """`put` inside its transaction."""
        if self._db.execute("SELECT 1 FROM events WHERE id = ?", (event_id,)).fetchone():
            return False  # already stored: nothing to make room for
        cap = self.options.max_events
        count = self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        need = count + 1 - cap
        if need <= 0:
            self._full = False
        else:
            droppable = self._db.execute("SELECT COUNT(*) FROM events WHERE security = 0").fetchone()[0]
            if not security and (self.options.when_full == "drop_newest" or droppable == 0):
                self._count_dropped(1, f"dropped the new {topic} event {event_id}", count)
                return False
            drop = min(need, droppable)
            if drop:
                self._db.execute("DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE security = 0 "
                                 "ORDER BY seq LIMIT ?)", (drop,))
                self._count_dropped(drop, f"dropped the {drop} oldest ordinary event(s)", count)
            beyond = count - drop + 1 - cap
            if beyond > 0 and (beyond == 1 or beyond % _LOG_EVERY == 0):
                log.warning("outbox %s full (%d events, only security events left to drop): security event %s "
                            "stored beyond the cap; %d beyond it now", self.path, count, event_id, beyond)
        self._db.execute("INSERT INTO events (id, topic, payload, qos, created, security) VALUES (?, ?, ?, ?, ?, ?)",
                         (event_id, topic, payload, qos, time.time(), int(security)))
        return True

    def _count_dropped(self, n: int, what: str, count: int) -> None:
        self._db.execute("INSERT INTO counters (name, value) VALUES ('dropped', ?) "
                         "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value", (n,))
        before, self._dropped = self._dropped, self._dropped + n  # restored by `put` if it rolls back
        if not self._full or before // _LOG_EVERY != self._dropped // _LOG_EVERY:
            log.warning("outbox %s full (%d events, outbox.max_events = %d): %s; %d dropped in all (lockout, "
                        "accepted-face and command events are never dropped)", self.path, count,
                        self.options.max_events, what, self._dropped)
        self._full = True

    def pending(self, limit: int = 100, after_seq: int = 0) -> list[OutboxEntry]:
        """Waiting events with seq > after_seq, oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT seq, id, topic, payload, qos, created FROM events WHERE seq > ? "
                                    "ORDER BY seq LIMIT ?", (after_seq, limit)).fetchall()
        return [OutboxEntry(r[0], r[1], r[2], bytes(r[3]), r[4], r[5]) for r in rows]

    def ack(self, seq: int) -> None:
        """The broker has the event: forget it."""
        with self._lock:
            try:
                self._db.execute("DELETE FROM events WHERE seq = ?", (seq,))
            except sqlite3.Error as exc:  # it will be sent again: duplicates are allowed, losses are not
                log.warning("outbox %s: cannot delete acknowledged event %d (%s)", self.path, seq, exc)
