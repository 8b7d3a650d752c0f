"""Files: the one sha256 helper (model store, bundles, artifacts all check with it), and the one way to
create a file that holds templates or events (private to its owner, whatever the umask)."""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)

PRIVATE = 0o600
# SQLite's companions of a database file; SQLite gives new ones the database file's mode.
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def private_file(path: str | os.PathLike, mode: int = PRIVATE, companions: tuple[str, ...] = ()) -> Path:
    """Make sure `path` exists with no more access than `mode` (0600: the owner only; 0640 where a group
    must read), before anything (SQLite, a JSON writer) opens it: a new file is created with `mode`, an
    existing one that allows more is tightened. Its folder is created 0700 when missing. `companions`:
    suffixes of sibling files to tighten as well when they exist (SQLITE_COMPANIONS for a database).

    Biometric templates and door events must not be readable by every user of the board, and a umask of
    022 (a login shell's) would otherwise give 0644. OSError when the file cannot be created."""
    path = Path(path)
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDONLY | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), mode)
    try:
        _tighten(path, fd, mode)
    finally:
        os.close(fd)
    for suffix in companions:
        other = path.with_name(path.name + suffix)
        try:
            fd = os.open(other, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            continue
        try:
            _tighten(other, fd, mode)
        finally:
            os.close(fd)
    return path


def _tighten(path: Path, fd: int, mode: int) -> None:
    current = stat.S_IMODE(os.fstat(fd).st_mode)
    if current & ~mode:
        try:
            os.fchmod(fd, current & mode)
        except PermissionError:  # not ours: say so, the owner can fix it
            log.warning("%s: mode %04o allows more than %04o and is not ours to change", path, current, mode)
