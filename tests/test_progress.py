"""Progress bars only on a terminal: logs and CI get no bar lines, a person at a terminal gets the bar."""

from __future__ import annotations

import fcntl
import io
import os
import re
import struct
import sys
import termios
from pathlib import Path

import numpy as np
import pytest

from convert import progress

REPO = Path(__file__).resolve().parents[1]


class _Tty(io.TextIOWrapper):
    """A real pseudo-terminal as stderr (isatty() is the kernel's answer, not a mock's)."""

    def __init__(self):
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a new pty is 0 wide
        super().__init__(os.fdopen(slave, "wb", buffering=0), encoding="utf-8", write_through=True)

    def read_all(self) -> str:
        os.set_blocking(self.master, False)
        chunks = []
        try:
            while chunk := os.read(self.master, 65536):
                chunks.append(chunk)
        except BlockingIOError:
            pass
        return b"".join(chunks).decode("utf-8", "replace")


def test_no_bar_when_stderr_is_not_a_terminal(monkeypatch):
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    assert list(progress.bar(range(50), desc="aligning faces")) == list(range(50))
    with progress.bar(total=10, desc="steps") as bar:
        for _ in range(10):
            bar.update(1)
    assert log.getvalue() == ""


def test_a_bar_on_a_terminal(monkeypatch):
    pytest.importorskip("tqdm")
    tty = _Tty()
    try:
        monkeypatch.setattr(sys, "stderr", tty)
        assert progress.on_terminal()
        assert sum(progress.bar(range(20), desc="aligning faces", mininterval=0)) == 190
        assert "aligning faces" in tty.read_all()
        # `enabled=False` (--no-progress) silences it even there
        list(progress.bar(range(5), desc="quiet", enabled=False))
        assert "quiet" not in tty.read_all()
    finally:
        tty.close()
        os.close(tty.master)


def test_the_callers_go_through_the_helper(monkeypatch):
    """bench's bar, convert's batch embedding: silent into a log."""
    from convert.bench.util import bar
    from convert.compress.run import _embed

    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    assert list(bar(range(3), "bench", True)) == [0, 1, 2]

    class Embedder:
        def embed(self, chips):
            return np.ones((len(chips), 4), np.float32)

    assert _embed(Embedder(), np.zeros((130, 2, 2, 3), np.uint8), "embedding").shape == (130, 4)
    assert log.getvalue() == ""


def test_tqdm_is_made_in_one_place():
    makers = []
    for pkg in ("edge", "convert", "deploy", "facelock", "benchmarks"):
        for f in (REPO / pkg).rglob("*.py"):
            if f.name == "progress.py" and f.parent.name == "convert":
                continue
            if re.search(r"\bfrom tqdm\b|\bimport tqdm\b|\btqdm\(", f.read_text(encoding="utf-8")):
                makers.append(str(f.relative_to(REPO)))
    assert not makers, f"use convert.progress.bar (bars on a terminal only) instead of tqdm in {makers}"
