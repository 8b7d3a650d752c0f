"""A durable outbox for events: written to SQLite before publishing, deleted only when the broker's PUBACK
arrives. paho-mqtt's own queue lives in memory (lost on a crash or power cut), so the outbox is what makes
delivery at-least-once across broker outages and process restarts (SIGKILL included).

Storage: WAL journal, `synchronous=FULL` by default (an event committed here survives a power cut too),
one row per event in insertion order (`seq`), keyed by the event's unique `id` (putting the same id twice
is a no-op, so a producer that crashed between "put" and "remember I put it" can safely put again).

Bounded: at most `max_events` rows. When full, `when_full` decides: "drop_oldest" (default: the newest
events matter most at a door, and the backlog is old news) deletes the oldest rows to make room;
"drop_newest" refuses the new event. Either way the number dropped is counted (persisted, reported in
stats) and logged.
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
    """Most events kept while the broker is unreachable."""
    when_full: Literal["drop_oldest", "drop_newest"] = "drop_oldest"
    """What to drop when `max_events` are waiting: the oldest waiting event, or the new one."""
    max_payload_bytes: int = 65536
    """Largest event payload accepted."""
    fsync: bool = True
    """Flush each event to disk before publishing it (SQLite synchronous=FULL); false: NORMAL (survives a
    process crash, not a power cut), fewer writes to the SD card."""

    def validate(self) -> OutboxOptions:
        return check("outbox", self, [
            ("max_events", self.max_events >= 1, ">= 1"),
            ("max_payload_bytes", self.max_payload_bytes >= 256, ">= 256"),
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
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


class Outbox:
    """`put` an event (committed before it returns), `pending` to send in order, `ack` when PUBACKed.
    Thread-safe: one connection behind a lock (the MQTT network thread acks, the service thread puts)."""

    def __init__(self, options: OutboxOptions | None = None):
        self.options = (options or OutboxOptions()).validate()
        self.path = Path(self.options.path) if self.options.path else default_outbox_path()
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=10.0, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute(f"PRAGMA synchronous = {'FULL' if self.options.fsync else 'NORMAL'}")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise OutboxError(f"outbox {self.path}: cannot open ({exc})") from exc

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0])

    @property
    def dropped(self) -> int:
        """Events dropped because the outbox was full, since it was created."""
        with self._lock:
            row = self._db.execute("SELECT value FROM counters WHERE name = 'dropped'").fetchone()
            return int(row[0]) if row else 0

    def put(self, event_id: str, topic: str, payload: bytes, qos: int = 1) -> bool:
        """Store an event durably. False when it was refused (full with drop_newest) or already stored."""
        if len(payload) > self.options.max_payload_bytes:
            raise OutboxError(f"event {event_id} for {topic}: payload {len(payload)} bytes, at most "
                              f"{self.options.max_payload_bytes} (outbox.max_payload_bytes)")
        o = self.options
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    count = self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
                    drop = count - o.max_events + 1
                    if drop > 0 and o.when_full == "drop_newest":
                        self._count_dropped(1)
                        self._db.execute("COMMIT")
                        log.warning("outbox full (%d events): dropped new event %s for %s", count, event_id,
                                    topic)
                        return False
                    if drop > 0:
                        self._db.execute("DELETE FROM events WHERE seq IN (SELECT seq FROM events ORDER BY seq "
                                         "LIMIT ?)", (drop,))
                        self._count_dropped(drop)
                        log.warning("outbox full (%d events): dropped the %d oldest", count, drop)
                    cur = self._db.execute(
                        "INSERT OR IGNORE INTO events (id, topic, payload, qos, created) VALUES (?, ?, ?, ?, ?)",
                        (event_id, topic, payload, qos, time.time()))
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise OutboxError(f"outbox {self.path}: cannot store event {event_id} ({exc})") from exc
            return cur.rowcount == 1

    def _count_dropped(self, n: int) -> None:
        self._db.execute("INSERT INTO counters (name, value) VALUES ('dropped', ?) "
                         "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value", (n,))

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
