"""Gallery export and import: JSON with names and embeddings only, never photos (schema "facelock.gallery/1").
The functions take an edge.identity.gallery.Gallery, typed loosely so that this module does not import the
module that calls it (no cycle).

    {"schema": "facelock.gallery/1", "exported": "<UTC ISO-8601>",
     "people": [{"name": str, "templates": [[float, ...], ...], "negatives": [[float, ...], ...]}, ...]}

An export is written to a temporary file and renamed (a crash never leaves half a file). An import is
validated completely (names, duplicates, embedding shapes and values) before anything is written, then
written in one transaction (`Gallery.add_people`): a malformed file changes nothing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import GalleryError
from edge.files import PRIVATE
from edge.identity.templates import NEGATIVE, POSITIVE, check_embeddings
from edge.names import name_key, validate_name
from edge.types import utc_now

EXPORT_SCHEMA = "facelock.gallery/1"
ENTRY_KEYS = frozenset({"name", "templates", "negatives"})


def export_gallery(gallery: Any, path: str | os.PathLike) -> int:
    """Write every person's embeddings (no photos) to a JSON file; returns the number of people."""
    people = []
    for info in gallery.people():
        pos = gallery.embeddings(info.name, POSITIVE)
        neg = gallery.embeddings(info.name, NEGATIVE)
        people.append({"name": info.name,
                       "templates": [[float(v) for v in row] for row in pos],
                       "negatives": [[float(v) for v in row] for row in neg]})
    doc = {"schema": EXPORT_SCHEMA, "exported": utc_now(), "people": people}
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:  # embeddings are biometric data: the export is 0600 like the gallery
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            os.fchmod(fh.fileno(), PRIVATE)  # a leftover .tmp from a crash keeps its old mode otherwise
            fh.write(json.dumps(doc))
        os.replace(tmp, path)
    except OSError as exc:
        raise GalleryError(f"{path}: cannot write export ({exc.strerror})") from exc
    return len(people)


def read_export(path: str | os.PathLike) -> list[tuple[str, np.ndarray, np.ndarray | None]]:
    """Every person in an export file as (name, templates, negatives or None), all checked; GalleryError
    naming the file and the entry at the first problem."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise GalleryError(f"{path}: cannot read ({exc.strerror})") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise GalleryError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("schema") != EXPORT_SCHEMA:
        got = doc.get("schema") if isinstance(doc, dict) else type(doc).__name__
        raise GalleryError(f"{path}: schema {got!r}, expected {EXPORT_SCHEMA!r}")
    people = doc.get("people")
    if not isinstance(people, list):
        raise GalleryError(f"{path}: 'people' must be a list")
    parsed: list[tuple[str, np.ndarray, np.ndarray | None]] = []
    seen: set[str] = set()
    dim: int | None = None
    for i, entry in enumerate(people):
        where = f"{path}: people[{i}]"
        if not isinstance(entry, dict):
            raise GalleryError(f"{where}: expected an object with name, templates, negatives")
        unknown = set(entry) - ENTRY_KEYS
        if unknown:
            raise GalleryError(f"{where}: unknown keys {sorted(unknown)}")
        try:
            name = validate_name(entry.get("name"))
        except GalleryError as exc:
            raise GalleryError(f"{where}: {exc}") from None
        if name_key(name) in seen:
            raise GalleryError(f"{where}: {name!r} appears twice")
        seen.add(name_key(name))
        pos = check_embeddings(entry.get("templates"), f"{where} ({name}) templates", dim)
        dim = pos.shape[1]
        negs = entry.get("negatives", [])
        neg = check_embeddings(negs, f"{where} ({name}) negatives", dim) if negs else None
        parsed.append((name, pos, neg))
    return parsed


def import_gallery(gallery: Any, path: str | os.PathLike, replace: bool = False) -> int:
    """Read an export into `gallery`. Everything is validated first; then, in one transaction, people are
    added (templates merged into people who exist already; identical embeddings are not duplicated) or, with
    `replace`, the gallery is emptied first. A malformed file writes nothing. Returns people imported."""
    people = read_export(path)
    gallery.add_people(people, replace=replace, model="import", source=str(Path(path)))
    return len(people)
