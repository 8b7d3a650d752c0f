"""Files holding templates or events are the owner's only (0600), whatever the umask; the board's state paths
are the ones the docs give; the documented gallery backup and restore work while the gallery is in use."""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge.files import SQLITE_COMPANIONS, private_file
from edge.identity.gallery import Gallery
from edge.mqtt.outbox import Outbox, OutboxOptions

REPO = Path(__file__).resolve().parents[1]
OPERATIONS = REPO / "docs" / "operations.md"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask():
    """A login shell's umask (022): what made the CLI's files 0644 before."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def _people(n: int = 3, dim: int = 8, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for i in range(n):
        v = rng.normal(size=(2, dim)).astype(np.float32)
        out[f"person{i}"] = v / np.linalg.norm(v, axis=1, keepdims=True)
    return out


def test_private_file_creates_0600_and_tightens(tmp_path, open_umask):
    new = private_file(tmp_path / "deep" / "new.db")
    assert mode(new) == 0o600 and mode(new.parent) == 0o700
    old = tmp_path / "old.db"
    old.write_bytes(b"x")
    os.chmod(old, 0o666)
    (tmp_path / "old.db-wal").write_bytes(b"w")
    os.chmod(tmp_path / "old.db-wal", 0o644)
    private_file(old, companions=SQLITE_COMPANIONS)
    assert mode(old) == 0o600 and mode(tmp_path / "old.db-wal") == 0o600 and old.read_bytes() == b"x"
    group = private_file(tmp_path / "group.db", mode=0o640)
    assert mode(group) == 0o640
    os.chmod(old, 0o400)  # tighter than asked: left as it is
    private_file(old)
    assert mode(old) == 0o400


def test_gallery_outbox_and_export_are_0600(tmp_path, open_umask):
    gallery_path = tmp_path / "state" / "gallery.db"
    with Gallery(gallery_path) as g:
        g.enroll("alice", _people()["person0"])
        assert mode(gallery_path) == 0o600
        for suffix in ("-wal", "-shm"):  # SQLite gives its companions the database's mode
            companion = gallery_path.with_name(gallery_path.name + suffix)
            if companion.exists():
                assert mode(companion) == 0o600, companion
        export = tmp_path / "export.json"
        export.write_text("{}")
        os.chmod(export, 0o644)  # an older export, readable by all: replaced by a private one
        assert g.export(export) == 1
        assert mode(export) == 0o600
    outbox = Outbox(OutboxOptions(path=str(tmp_path / "state" / "outbox.db"), fsync=False))
    try:
        assert mode(tmp_path / "state" / "outbox.db") == 0o600
    finally:
        outbox.close()


def test_an_existing_open_gallery_is_tightened(tmp_path, open_umask):
    path = tmp_path / "gallery.db"
    with Gallery(path) as g:
        g.enroll("alice", _people()["person0"])
    os.chmod(path, 0o644)
    with Gallery(path) as g:
        assert [p.name for p in g.people()] == ["alice"]
    assert mode(path) == 0o600


def test_cli_export_is_0600(tmp_path):
    path = tmp_path / "gallery.db"
    with Gallery(path) as g:
        g.enroll("alice", _people()["person0"])
    out = tmp_path / "backup.json"
    proc = subprocess.run(
        ["sh", "-c", 'umask 022; exec "$0" -m facelock people --gallery "$1" export "$2"', sys.executable,
         str(path), str(out)], capture_output=True, text=True, cwd=REPO, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert mode(out) == 0o600


# -- the board's paths and the documented backup ------------------------------------------------------------

def test_board_state_paths_are_the_documented_ones():
    from deploy.board_config import BOARD_VALUES

    unit = (REPO / "systemd" / "facelock.service").read_text()
    assert "StateDirectory=facelock" in unit and "UMask=0077" in unit
    docs = OPERATIONS.read_text()
    for section, key in (("gallery", "path"), ("outbox", "path"), ("decide", "state_path")):
        path = BOARD_VALUES[section][key]
        assert path.startswith("/var/lib/facelock/"), (section, path)  # the StateDirectory
        assert path in docs, f"docs/operations.md does not give the board's {section}.{key} {path}"
    assert ".local/share/facelock/gallery.db" not in docs.split("## Backups")[-1]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "-c", 'umask 022; exec "$@"', "sh", sys.executable, "-m", "facelock", *args],
                          capture_output=True, text=True, cwd=REPO, timeout=120, check=False)


def _contents(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    with Gallery(path, create=False) as g:
        return {p.name: (g.embeddings(p.name), g.embeddings(p.name, "negative")) for p in g.people()}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        np.allclose(a[k][0], b[k][0]) and a[k][1].shape == b[k][1].shape for k in a)


def test_documented_backup_and_restore(tmp_path):
    """docs/operations.md "Backups": export (or SQLite's backup) while the service holds the gallery open
    with writes still in its WAL, then restore into an emptied state folder."""
    docs = OPERATIONS.read_text()
    for command in ("people --gallery /var/lib/facelock/gallery.db export",
                    "people --gallery /var/lib/facelock/gallery.db import",
                    ".backup", "umask 077"):
        assert command in docs, f"docs/operations.md no longer documents {command!r}"

    state = tmp_path / "var-lib-facelock"
    gallery = state / "gallery.db"
    service = Gallery(gallery)  # the running service's connection: WAL, not checkpointed
    people = _people()
    for name, emb in people.items():
        service.enroll(name, emb)
    service.enroll_negative("person0", people["person1"][:1])
    before = _contents(gallery)
    assert gallery.with_name("gallery.db-wal").stat().st_size > 0  # what a plain `cp gallery.db` would miss

    # 1. JSON export while it runs, restore with import --replace
    backup_json = tmp_path / "backup" / "gallery-backup.json"
    backup_json.parent.mkdir()
    proc = _cli("people", "--gallery", str(gallery), "export", str(backup_json))
    assert proc.returncode == 0, proc.stderr
    assert mode(backup_json) == 0o600
    # 2. SQLite's online backup (the sqlite3 shell's .backup, or the same API from Python)
    backup_db = tmp_path / "backup" / "gallery-backup.db"
    if shutil.which("sqlite3"):
        subprocess.run(["sh", "-c", f'umask 077; sqlite3 "{gallery}" ".backup {backup_db}"'], check=True)
    else:
        old = os.umask(0o077)
        try:
            with sqlite3.connect(gallery) as src, sqlite3.connect(backup_db) as dst:
                src.backup(dst)
        finally:
            os.umask(old)
    assert mode(backup_db) == 0o600
    service.close()

    # the SD card dies: a fresh state folder
    shutil.rmtree(state)
    proc = _cli("people", "--gallery", str(gallery), "import", str(backup_json), "--replace")
    assert proc.returncode == 0, proc.stderr
    assert _same(_contents(gallery), before) and mode(gallery) == 0o600

    # restore from the SQLite backup instead: service stopped, file put back, WAL/SHM removed
    shutil.rmtree(state)
    state.mkdir()
    shutil.copy2(backup_db, gallery)
    for suffix in ("-wal", "-shm"):
        gallery.with_name(gallery.name + suffix).unlink(missing_ok=True)
    assert _same(_contents(gallery), before) and mode(gallery) == 0o600
    with Gallery(gallery) as g:  # and the restored gallery takes writes
        g.enroll("person9", _people(1, seed=9)["person0"])
    assert "person9" in _contents(gallery)


def test_docs_restore_commands_name_the_real_files():
    block = OPERATIONS.read_text().split("## Backups", 1)[-1]
    paths = set(re.findall(r"/var/lib/facelock/[\w.-]+", block))
    assert "/var/lib/facelock/gallery.db" in paths
    assert all(not p.endswith(".sqlite") for p in paths)
