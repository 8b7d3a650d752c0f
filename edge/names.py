"""People's names: the one rule for what a name may be, used by the gallery, the CLI and MQTT commands."""

from __future__ import annotations

import unicodedata

from edge.errors import GalleryError

MAX_NAME_LEN = 64
RESERVED_NAMES = frozenset({"unknown", "none", "nobody"})  # "unknown" is what events say for strangers

def validate_name(name: object) -> str:
    """A person's name as stored: NFC-normalised; 1-64 characters of letters, digits, spaces and . _ - ';
    no leading/trailing space; not a reserved word. Raises GalleryError saying what is wrong."""
    if not isinstance(name, str):
        raise GalleryError(f"person name {name!r}: expected a string")
    norm = unicodedata.normalize("NFC", name)
    if not norm or norm != norm.strip():
        raise GalleryError(f"person name {name!r}: must be non-empty with no leading or trailing spaces")
    if len(norm) > MAX_NAME_LEN:
        raise GalleryError(f"person name {name!r}: {len(norm)} characters, at most {MAX_NAME_LEN} allowed")
    bad = sorted({c for c in norm if not (c.isalnum() or c in " ._-'")})
    if bad:
        raise GalleryError(
            f"person name {name!r}: characters {''.join(bad)!r} not allowed "
            "(letters, digits, space, '.', '_', '-', \"'\")"
        )
    if "  " in norm:
        raise GalleryError(f"person name {name!r}: double spaces not allowed")
    if norm.casefold() in RESERVED_NAMES:
        raise GalleryError(f"person name {name!r}: reserved (events use it for strangers); pick another")
    return norm


def name_key(name: str) -> str:
    """The key a person is stored under: "Alice" and "alice" are one person."""
    return name.casefold()
