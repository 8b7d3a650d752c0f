"""The enrolment database: people, their face templates, and negative examples. SQLite, on the lock.

What is stored: embeddings (float32, unit length) and names, never photos. A template is one embedding of
the person; several per person cover glasses, light, angle. A **negative example** is an embedding of
someone else who must not open as that person (a sibling, a look-alike the lock once let in): the matcher
refuses the person when a probe is as close to one of their negatives as to their templates (match.py).

Storage: WAL journal (the service reads while `facelock enroll` writes), foreign keys on, every change in
one IMMEDIATE transaction (all of an enrolment or none of it), a `schema_version` table checked on open,
and a `revision` number bumped by each change so a running matcher notices and reloads. `read_only=True`
(`people list`, `export`) opens with SQLite's mode=ro: no schema writes and no write lock, so it reads at
once while another process writes. Every SQLite error is a GalleryError naming the file.

Export/import (JSON with names and embeddings only): edge.identity.transfer, called by `export`/`import_`.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import numpy as np

from edge.errors import GalleryError
from edge.files import SQLITE_COMPANIONS, private_file
from edge.identity.templates import NEGATIVE, POSITIVE, GallerySnapshot, check_embeddings
from edge.names import name_key, validate_name
from edge.types import is_space_id, utc_now

SCHEMA_VERSION = 1
ENV_VAR = "FACELOCK_GALLERY"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS people (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    key TEXT NOT NULL UNIQUE,          -- casefolded name: "Alice" and "alice" are one person
    created TEXT NOT NULL,
    updated TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS templates (
    id INTEGER PRIMARY KEY,
    person_id INTEGER NOT NULL REFERENCES people(id) ON DELETE CASCADE,
    kind TEXT NOT NULL CHECK (kind IN ('positive', 'negative')),
    dim INTEGER NOT NULL,
    embedding BLOB NOT NULL,           -- little-endian float32, unit length
    digest TEXT NOT NULL,              -- sha1 of the blob: the same embedding is stored once per person
    model TEXT NOT NULL DEFAULT '',    -- the embedding space that made it ('space:<model>@<hash>'), when known
    created TEXT NOT NULL,
    UNIQUE (person_id, kind, digest)
);
CREATE INDEX IF NOT EXISTS templates_person ON templates(person_id, kind);
"""


def default_gallery_path() -> Path:
    """$FACELOCK_GALLERY, else $XDG_DATA_HOME/facelock/gallery.db (~/.local/share/facelock/gallery.db)."""
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR])
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "facelock" / "gallery.db"


def _blob(vec: np.ndarray) -> bytes:
    return np.ascontiguousarray(vec, dtype="<f4").tobytes()


@dataclass(frozen=True)
class PersonInfo:
    name: str
    templates: int
    negatives: int
    created: str  # UTC ISO-8601
    updated: str

    def to_dict(self) -> dict:
        return {"name": self.name, "templates": self.templates, "negatives": self.negatives,
                "created": self.created, "updated": self.updated}


class Gallery:
    """An open gallery file. Thread-safe (one connection behind a lock); open one per process."""

    def __init__(self, path: str | os.PathLike | None = None, create: bool = True, timeout_s: float = 10.0,
                 read_only: bool = False):
        self.path = Path(path) if path is not None else default_gallery_path()
        self.read_only = read_only
        try:
            if not self.path.exists() and (read_only or not create):
                raise GalleryError(f"{self.path}: no such gallery (enrol someone first)")
            if not read_only:  # templates are biometric data: 0600 before SQLite first writes, whatever the umask
                private_file(self.path, companions=SQLITE_COMPANIONS)
        except OSError as exc:
            raise GalleryError(f"{self.path}: cannot create or open it ({exc.strerror})") from exc
        self._lock = threading.RLock()
        try:
            target = f"{self.path.resolve().as_uri()}?mode=ro" if read_only else self.path
            self._db = sqlite3.connect(target, timeout=timeout_s, isolation_level=None, check_same_thread=False,
                                       uri=read_only)
            self._db.execute("PRAGMA foreign_keys = ON")
            if not read_only:
                self._db.execute("PRAGMA journal_mode = WAL")
            self._init_schema()
        except (sqlite3.Error, GalleryError) as exc:
            if hasattr(self, "_db"):
                self._db.close()
            if isinstance(exc, GalleryError):
                raise
            raise self._error(exc, "not a facelock gallery or unreadable") from exc

    # -- plumbing -----------------------------------------------------------------------------------------

    def _init_schema(self) -> None:
        with self._tx(write=not self.read_only) as db:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "schema_version" in tables:
                rows = db.execute("SELECT version FROM schema_version").fetchall()
                if len(rows) != 1:
                    raise GalleryError(f"{self.path}: schema_version table has {len(rows)} rows, expected 1")
                if rows[0][0] != SCHEMA_VERSION:
                    raise GalleryError(f"{self.path}: gallery schema version {rows[0][0]}, this facelock reads "
                                       f"version {SCHEMA_VERSION} (made by another facelock version?)")
                return
            if tables - {"sqlite_sequence"} or self.read_only:
                raise GalleryError(f"{self.path}: an SQLite file but not a facelock gallery "
                                   f"(tables {sorted(tables)}, no schema_version)")
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    db.execute(stmt)
            db.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
            db.execute("INSERT INTO meta (key, value) VALUES ('revision', '0')")

    @contextmanager
    def _sql(self) -> Iterator[sqlite3.Connection]:
        """The connection, under the lock; an sqlite3 error becomes a GalleryError naming the file."""
        with self._lock:
            try:
                yield self._db
            except sqlite3.Error as exc:
                raise self._error(exc) from exc

    def _error(self, exc: sqlite3.Error, what: str = "") -> GalleryError:
        """SQLITE_BUSY/LOCKED (another process held the lock for longer than `timeout_s`) is worth a retry."""
        if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
            return GalleryError(f"{self.path}: database is locked, try again (another process is writing to it)")
        corrupt = type(exc) is sqlite3.DatabaseError  # "file is not a database", ...
        what = what or ("not a facelock gallery or unreadable" if corrupt else "SQLite error")
        return GalleryError(f"{self.path}: {what} ({exc})")

    @contextmanager
    def _tx(self, write: bool = True) -> Iterator[sqlite3.Connection]:
        """One transaction: IMMEDIATE to write (the write lock up front: no upgrade deadlocks with readers),
        else a plain read (one consistent view, no write lock: WAL readers never wait for writers)."""
        with self._sql() as db:
            db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            else:
                db.execute("COMMIT")

    def _bump(self, db: sqlite3.Connection) -> None:
        db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'revision'")

    def _person_id(self, db: sqlite3.Connection, name: str) -> int | None:
        row = db.execute("SELECT id FROM people WHERE key = ?", (name_key(name),)).fetchone()
        return None if row is None else int(row[0])

    def _existing(self, db: sqlite3.Connection, name: str) -> int:
        """The id of the person called `name` (any case); GalleryError if there is none."""
        pid = self._person_id(db, name) if isinstance(name, str) else None
        if pid is None:
            raise GalleryError(f"no person {name!r} in {self.path}")
        return pid

    def _person_or_new(self, db: sqlite3.Connection, name: str) -> int:
        """The id of the person called `name` (a valid name), created if new."""
        pid = self._person_id(db, name)
        if pid is None:
            now = utc_now()
            pid = db.execute("INSERT INTO people (name, key, created, updated) VALUES (?, ?, ?, ?)",
                             (name, name_key(name), now, now)).lastrowid
        return pid

    def _dim(self, db: sqlite3.Connection, model: str = "") -> int | None:
        """The size of the embeddings new ones must match: those of `model`'s embedding space (and of
        unknown ones) when it is a space id, else of all. Templates of another space are left out of matching
        anyway (see `snapshot`), so after a change of embedder new people can be enrolled at its size."""
        if is_space_id(model):
            row = db.execute("SELECT dim FROM templates WHERE model = ? OR model NOT LIKE 'space:%' LIMIT 1",
                             (model,)).fetchone()
        else:
            row = db.execute("SELECT dim FROM templates LIMIT 1").fetchone()
        return None if row is None else int(row[0])

    def _add(self, db: sqlite3.Connection, person_id: int, kind: str, embs: np.ndarray, model: str) -> int:
        now = utc_now()
        added = 0
        for vec in embs:
            blob = _blob(vec)
            cur = db.execute(
                "INSERT OR IGNORE INTO templates (person_id, kind, dim, embedding, digest, model, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (person_id, kind, len(vec), blob, hashlib.sha1(blob).hexdigest(), model, now),
            )
            added += cur.rowcount
        db.execute("UPDATE people SET updated = ? WHERE id = ?", (now, person_id))
        return added

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- changes ------------------------------------------------------------------------------------------

    def enroll(self, name: str, embeddings: np.ndarray, model: str = "", new_only: bool = False) -> int:
        """Add templates for `name`, creating the person if new; how many were new (none twice). `new_only`:
        GalleryError if `name` is enrolled already, checked in the insert's own transaction (no race)."""
        name = validate_name(name)
        with self._tx() as db:
            if new_only and self._person_id(db, name) is not None:
                raise GalleryError(f"{name!r} is enrolled already in {self.path} (not added to)")
            embs = check_embeddings(embeddings, f"enrolment of {name!r}", self._dim(db, model))
            added = self._add(db, self._person_or_new(db, name), POSITIVE, embs, model)
            self._bump(db)
        return added

    def enroll_negative(self, name: str, embeddings: np.ndarray, model: str = "") -> int:
        """Add negative examples for `name` (someone else's embeddings that must not open as `name`).
        `name` must be enrolled already: a negative for a misspelt name would silently protect nobody."""
        name = validate_name(name)
        with self._tx() as db:
            pid = self._person_id(db, name)
            if pid is None:
                raise GalleryError(f"no person {name!r} in {self.path}: enrol {name!r} before adding "
                                   "negative examples for them")
            embs = check_embeddings(embeddings, f"negative examples for {name!r}", self._dim(db, model))
            added = self._add(db, pid, NEGATIVE, embs, model)
            self._bump(db)
        return added

    def remove(self, name: str, negatives_only: bool = False) -> int:
        """Remove a person with all their templates and negatives (or only their negatives). Returns the
        number of templates deleted; GalleryError if there is no such person."""
        with self._tx() as db:
            pid = self._existing(db, name)
            if negatives_only:
                n = db.execute("DELETE FROM templates WHERE person_id = ? AND kind = ?", (pid, NEGATIVE)).rowcount
            else:
                n = db.execute("SELECT COUNT(*) FROM templates WHERE person_id = ?", (pid,)).fetchone()[0]
                db.execute("DELETE FROM people WHERE id = ?", (pid,))
            self._bump(db)
        return int(n)

    def rename(self, old: str, new: str) -> None:
        """Rename a person, keeping every template and negative. Changing only the case is allowed."""
        new = validate_name(new)
        with self._tx() as db:
            pid = self._existing(db, old)
            other = self._person_id(db, new)
            if other is not None and other != pid:
                raise GalleryError(f"cannot rename {old!r} to {new!r}: {new!r} is already enrolled "
                                   "(remove one first)")
            db.execute("UPDATE people SET name = ?, key = ?, updated = ? WHERE id = ?",
                       (new, name_key(new), utc_now(), pid))
            self._bump(db)

    def add_people(self, people: Sequence[tuple[str, np.ndarray, np.ndarray | None]], replace: bool = False,
                   model: str = "", source: str = "") -> None:
        """Add many people's checked (name, templates, negatives or None) in one transaction, merged into
        people who exist already (identical embeddings are not stored twice); with `replace` the gallery is
        emptied first. All must have the gallery's embedding size; `source` names where they came from."""
        dim = people[-1][1].shape[1] if people else None
        with self._tx() as db:
            if replace:
                db.execute("DELETE FROM people")
            current = self._dim(db)
            if current is not None and dim is not None and current != dim:
                raise GalleryError(f"{source}: embeddings have {dim} dimensions, the gallery holds {current}-d "
                                   "ones (use --replace, or export from the same model)")
            for name, pos, neg in people:
                pid = self._person_or_new(db, name)
                self._add(db, pid, POSITIVE, pos, model)
                if neg is not None:
                    self._add(db, pid, NEGATIVE, neg, model)
            self._bump(db)

    # -- reading ------------------------------------------------------------------------------------------

    def revision(self) -> int:
        """A number that changes with every committed change (from any process)."""
        with self._sql() as db:
            return int(db.execute("SELECT value FROM meta WHERE key = 'revision'").fetchone()[0])

    def people(self) -> list[PersonInfo]:
        with self._sql() as db:
            rows = db.execute(
                "SELECT p.name, p.created, p.updated, "
                "  COALESCE(SUM(t.kind = 'positive'), 0), COALESCE(SUM(t.kind = 'negative'), 0) "
                "FROM people p LEFT JOIN templates t ON t.person_id = p.id GROUP BY p.id ORDER BY p.key"
            ).fetchall()
        return [PersonInfo(name=r[0], templates=int(r[3]), negatives=int(r[4]), created=r[1], updated=r[2])
                for r in rows]

    def embeddings(self, name: str, kind: str = POSITIVE) -> np.ndarray:
        """(N, D) float32 templates (or negatives) of one person; GalleryError if no such person."""
        with self._sql() as db:
            pid = self._person_id(db, name)
            if pid is None:
                raise GalleryError(f"no person {name!r} in {self.path}")
            rows = db.execute("SELECT dim, embedding FROM templates WHERE person_id = ? AND kind = ? "
                              "ORDER BY id", (pid, kind)).fetchall()
        if not rows:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([np.frombuffer(r[1], dtype="<f4", count=r[0]) for r in rows]).astype(np.float32)

    def snapshot(self, space: str = "") -> GallerySnapshot:
        """Every template as matrices (one consistent read), for edge.identity.match.Matcher. With `space` (the
        running embedder's, see `embedding_space`), templates recorded as made in another embedding space
        are left out and counted: their cosines with this model's embeddings mean nothing. Templates of an
        unknown space (older galleries, bare .tflite models) are kept."""
        with self._tx(write=False) as db:
            revision = int(db.execute("SELECT value FROM meta WHERE key = 'revision'").fetchone()[0])
            rows = db.execute(
                "SELECT p.id, p.name, t.kind, t.dim, t.embedding, t.model FROM templates t "
                "JOIN people p ON p.id = t.person_id ORDER BY p.key, t.id"
            ).fetchall()
        foreign = [r for r in rows if space and is_space_id(r[5]) and r[5] != space]
        if foreign:
            rows = [r for r in rows if not (is_space_id(r[5]) and r[5] != space)]
        rows = [r[:5] for r in rows]
        dims = {r[3] for r in rows}
        if len(dims) > 1:
            raise GalleryError(f"{self.path}: templates of different sizes {sorted(dims)}: re-enrol with one model")
        dim = dims.pop() if dims else 0
        names: list[str] = []
        index: dict[int, int] = {}
        pos: list[np.ndarray] = []
        offsets = [0]
        neg: list[np.ndarray] = []
        neg_owner: list[int] = []
        for pid, name, kind, d, blob in rows:
            if kind != POSITIVE:
                continue
            if pid not in index:
                if names:
                    offsets.append(len(pos))
                index[pid] = len(names)
                names.append(name)
            pos.append(np.frombuffer(blob, dtype="<f4", count=d))
        if names:
            offsets.append(len(pos))
        for pid, _name, kind, d, blob in rows:
            if kind == NEGATIVE and pid in index:  # negatives of a person with no templates guard nothing
                neg.append(np.frombuffer(blob, dtype="<f4", count=d))
                neg_owner.append(index[pid])
        empty = np.zeros((0, dim), dtype=np.float32)
        return GallerySnapshot(
            names=tuple(names),
            templates=np.ascontiguousarray(np.stack(pos), dtype=np.float32) if pos else empty,
            template_offsets=np.asarray(offsets, dtype=np.int64),
            negatives=np.ascontiguousarray(np.stack(neg), dtype=np.float32) if neg else empty,
            negative_owner=np.asarray(neg_owner, dtype=np.int64),
            revision=revision,
            dim=dim,
            ignored=tuple(sorted({r[1] for r in foreign})),
            ignored_templates=len(foreign),
        )

    # -- export / import (edge.identity.transfer) ----------------------------------------------------------

    def export(self, path: str | os.PathLike) -> int:
        """Write every person's embeddings (no photos) to a JSON file; returns the number of people."""
        from edge.identity.transfer import export_gallery

        return export_gallery(self, path)

    def import_(self, path: str | os.PathLike, replace: bool = False) -> int:
        """Read an export (validated completely first; a malformed file writes nothing); with `replace` the
        gallery is emptied first. Returns the number of people imported."""
        from edge.identity.transfer import import_gallery

        return import_gallery(self, path, replace=replace)
