"""Progress bars on a terminal only. The one place that makes a tqdm bar: when stderr (the bar's stream)
is not a TTY (a log file, the journal, CI) every bar is disabled, so logs get no bar lines; without tqdm
installed (a board has only the `edge` extra) the bar is a silent stand-in with the same methods."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any, Self, TextIO


def on_terminal(stream: TextIO | None = None) -> bool:
    """Whether `stream` (default stderr) is a terminal."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


def bar(iterable: Iterable | None = None, *, enabled: bool = True, **tqdm_kwargs: Any):
    """tqdm(iterable, file=sys.stderr, **tqdm_kwargs), disabled unless `enabled` and stderr is a terminal.
    Iterate it, or call update(n) / close() on it (also a context manager)."""
    show = enabled and on_terminal(sys.stderr)
    try:
        from tqdm import tqdm
    except ImportError:
        return _Silent(iterable)
    return tqdm(iterable, file=sys.stderr, disable=not show, **tqdm_kwargs)


class _Silent:
    """What `bar` returns without tqdm: iterates what it wraps, ignores the rest."""

    def __init__(self, iterable: Iterable | None):
        self._iterable = iterable if iterable is not None else ()

    def __iter__(self):
        return iter(self._iterable)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass
