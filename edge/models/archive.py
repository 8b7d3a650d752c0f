"""A bundle archive (.tar.gz): extracted into a temporary folder the opened Bundle owns (edge.models.bundle),
refusing any member that could write outside it or make something other than files and folders.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

from edge.errors import BundleError

MANIFEST = "manifest.json"  # the one file every bundle holds (edge.models.bundle)
# Folders that archives were extracted into and that a Bundle still owns; removed on close() or at exit.
_OWNED: set[Path] = set()


def remove_owned(folder: Path) -> None:
    _OWNED.discard(folder)
    shutil.rmtree(folder, ignore_errors=True)


@atexit.register
def _remove_all_owned() -> None:
    for folder in list(_OWNED):
        remove_owned(folder)


def extract(archive: Path) -> tuple[Path, Path]:
    """Extract a bundle archive into a new temporary folder: (that folder, the bundle folder inside)."""
    target = Path(tempfile.mkdtemp(prefix="facelock-bundle-"))
    _OWNED.add(target)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = safe_members(tar, archive)
            if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4; Bookworm's 3.11.2 has no filters
                tar.extractall(target, members=members, filter="data")
            else:
                tar.extractall(target, members=members)  # members checked by safe_members
        found = [p.parent for p in target.rglob(MANIFEST)]
        if len(found) != 1:
            raise BundleError(f"{archive}: expected one {MANIFEST} inside, found {len(found)}")
    except (tarfile.TarError, OSError, EOFError) as exc:
        remove_owned(target)
        raise BundleError(f"{archive}: not a readable bundle archive ({exc})") from exc
    except BaseException:
        remove_owned(target)
        raise
    return target, found[0]


def safe_members(tar: tarfile.TarFile, archive: Path) -> list[tarfile.TarInfo]:
    """The archive's members, refusing what could write outside the extraction folder or make something
    other than files and folders: absolute names, '..', links that may leave it, devices, FIFOs.
    Owners and set-id bits are dropped (the extracting user owns everything)."""
    members = []
    for m in tar.getmembers():
        where = f"{archive}: member {m.name!r}"
        parts = PurePosixPath(m.name).parts
        if PurePosixPath(m.name).is_absolute() or ".." in parts or "\\" in m.name:
            raise BundleError(f"{where}: absolute or '..' path (refused: it would write outside the bundle)")
        if m.issym() or m.islnk():
            # A link whose target has no '..' and is not absolute resolves downward from its own folder,
            # however links chain, so nothing can be written or read through it outside the folder.
            link = PurePosixPath(m.linkname)
            if link.is_absolute() or ".." in link.parts or "\\" in m.linkname:
                raise BundleError(f"{where}: link to {m.linkname!r} may leave the archive (refused)")
        elif not (m.isfile() or m.isdir()):
            raise BundleError(f"{where}: not a file or folder (devices and FIFOs are refused)")
        m.mode &= 0o755
        m.uid, m.gid, m.uname, m.gname = os.getuid(), os.getgid(), "", ""
        members.append(m)
    return members
