"""Questions the board test asks the running board (over SSH, as a sudo user), and the transcript it keeps.

The transcript holds what happened and counts, never how long emulated steps took (an emulated CPU's
timings say nothing about a Pi's); wall times go to timings.json beside it, for CI budgeting only.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

EVENT_LOG_RE = re.compile(r"\bevent ([0-9a-f]{32}): ")
EXPOSURE_RE = re.compile(r"Overall exposure level for (\S+): ([0-9.]+) (\w+)")


@dataclass
class Transcript:
    path: Path
    lines: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    counts: dict[str, object] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    _t0: float = field(default_factory=time.monotonic)

    def note(self, text: str) -> None:
        self.lines.append(f"       {text}")
        self._flush()

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        self.lines.append(f"[{'PASS' if ok else 'FAIL'}] {name}{': ' + detail if detail else ''}")
        if not ok:
            self.failures.append(name)
        self._flush()
        return ok

    def time(self, name: str) -> None:
        self.timings[name] = round(time.monotonic() - self._t0, 1)

    @property
    def ok(self) -> bool:
        return not self.failures

    def text(self) -> str:
        counts = [f"  {k}: {v}" for k, v in self.counts.items()]
        verdict = "PASS" if self.ok else f"FAIL ({', '.join(self.failures)})"
        return "\n".join([*self.lines, "", "counts:", *counts, f"result: {verdict}"]) + "\n"

    def _flush(self) -> None:
        self.path.write_text(self.text())
        self.path.with_name("timings.json").write_text(json.dumps(self.timings, indent=2) + "\n")


class Guest:
    """The facelock unit and files on one board, seen through `vm.ssh`."""

    def __init__(self, vm, unit: str = "facelock"):
        self.vm = vm
        self.unit = unit

    def sh(self, cmd: str, check: bool = False, timeout: float = 900, tries: int = 5) -> str:
        """stdout of `cmd`; a failed connection (ssh's 255: sshd restarting, cloud-init replacing the host
        keys) is tried again, a failed command is not."""
        for attempt in range(tries):
            proc = self.vm.ssh(cmd, check=False, timeout=timeout)
            if proc.returncode != 255:
                break
            time.sleep(5 * (attempt + 1))
        if check and proc.returncode != 0:
            raise RuntimeError(f"board: `{cmd}` failed ({proc.returncode}): {(proc.stdout + proc.stderr)[-2000:]}")
        return proc.stdout.strip()

    def show(self) -> dict[str, str]:
        out = self.sh(f"systemctl show {self.unit} -p ActiveState -p SubState -p NRestarts -p MainPID "
                      f"-p StatusText -p Result -p ExecMainStatus")
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def active(self) -> bool:
        return self.show().get("ActiveState") == "active"

    def wait(self, predicate, timeout: float, poll: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if predicate():
                    return True
            except (RuntimeError, ValueError, KeyError):
                pass
            time.sleep(poll)
        return False

    def event_ids(self) -> list[str]:
        """Every event id the service logged on this board (all boots, all releases), in order."""
        text = self.sh(f"sudo journalctl -u {self.unit} -o cat --no-pager", timeout=300)
        seen: dict[str, None] = {}
        for m in EVENT_LOG_RE.finditer(text):
            seen.setdefault(m[1])
        return list(seen)

    def journal_tail(self, lines: int = 25, unit: str | None = None) -> str:
        return self.sh(f"sudo journalctl -u {unit or self.unit} -n {lines} -o cat --no-pager", timeout=300)

    def current_release(self) -> str:
        return Path(self.sh("readlink /opt/facelock/current")).name

    def outbox_pending(self) -> int:
        out = self.sh("sudo python3 -c \"import sqlite3; print(sqlite3.connect('file:/var/lib/facelock/outbox.db"
                      "?mode=ro', uri=True).execute('select count(*) from events').fetchone()[0])\"")
        return int(out.splitlines()[-1]) if out else -1

    def exposure(self) -> tuple[str, str, str]:
        out = self.sh(f"sudo systemd-analyze security {self.unit} --no-pager 2>&1", timeout=600)
        m = EXPOSURE_RE.search(out)
        return (m[2], m[3], out) if m else ("?", "?", out)

    def modes(self, *paths: str) -> str:
        """`stat` of the paths (globs expanded as root: the state folder is not readable by the SSH user)."""
        return self.sh("sudo sh -c \"stat -c '%a %U:%G %n' " + " ".join(paths) + " 2>&1\"")

    def put_frames(self, tar: Path, remote_dir: str) -> None:
        """Unpack the frames tar into remote_dir's parent (readable by the service, owned by root)."""
        parent = str(Path(remote_dir).parent)
        with open(tar, "rb") as fh:
            self.vm.ssh(f"sudo mkdir -p {parent} && sudo tar -xf - -C {parent} --no-same-owner && "
                        f"sudo chmod -R a+rX {parent}", stdin=fh, timeout=900)
