"""The lockout's memory across restarts: failed attempts, back-off level and `locked_until` in a JSON file.

Without it a restart (a crash, the watchdog, a power cut, or an attacker pulling the fuse) forgets a 600 s
lockout and hands out fresh attempts 30 s later. `Decider` takes a `LockoutStore` as an optional
collaborator (tests and benchmarks run without one) and saves on every change of that state: a counted
failure, a lockout starting or ending, the back-off level resetting, an accept that forgets failures. Those
are rare (one per failed attempt at most), so the SD card sees a handful of small writes an hour.

**Clocks.** The Decider works on the monotonic clock, which starts again at every boot. The file holds
wall-clock UTC (ISO 8601), converted with the offset between the two clocks taken at save and at load.
Loading computes what is left of the lockout as `locked_until - now`, capped at `lockout_max_s`. A board
without a real-time clock (a Raspberry Pi) boots at an old time until NTP answers: when the wall clock is
EARLIER than when the file was saved, the clock is not trusted and the lockout keeps all the time it had
left at the save (failures keep their age at the save, too). A restart within the same boot (a crash, the
watchdog, `systemctl restart`; Linux's boot id says so) needs no wall clock at all: the monotonic clock,
saved too, says how long ago the save was, whatever NTP did to the wall clock meanwhile.

**Failing closed.** A missing file is a lock that never failed. A file that cannot be read or makes no sense
(truncated, edited, not ours) is logged once, naming the file, and the lock starts locked out for
`lockout_s`: whoever can damage the file must not gain attempts by doing so. That state is written back
at once, so the damaged file is replaced (and the next start does not lock again from scratch).

**Writes are atomic:** a temporary file in the same folder (created 0600), fsync, rename over the old one,
fsync of the folder. A power cut leaves the old state or the new one, never half of either.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge.errors import FacelockError

log = logging.getLogger(__name__)

SCHEMA = "facelock.lockout/1"
MAX_BYTES = 64 * 1024  # a real state file is a few hundred bytes
MAX_FAILURES = 1000  # the Decider keeps at most `lockout_failures` failures; more is not our file


class LockoutFileError(FacelockError):
    """The lockout state file cannot be read or does not hold a lockout state."""


def linux_boot_id() -> str | None:
    """This boot's id (a new one at every boot), or None off Linux: the monotonic clock is comparable
    between two processes exactly when they ran in the same boot."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def default_lockout_path() -> Path:
    """$XDG_STATE_HOME/facelock/lockout.json (~/.local/state/facelock/lockout.json)."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "facelock" / "lockout.json"


LOCKOUT, UNLOCK_ALLOWED = "lockout", "unlock_allowed"  # the kinds of LockoutEvent


@dataclass(frozen=True)
class LockoutEvent:
    kind: str  # LOCKOUT or UNLOCK_ALLOWED
    time: float  # monotonic seconds
    until: float  # when the lockout ends (for UNLOCK_ALLOWED: when it ended)
    duration_s: float
    level: int  # 1 for the first lockout, 2 for the next (longer) one, ...
    failures: int  # failed attempts that led to it


@dataclass(frozen=True)
class LockoutState:
    """What of the Decider must outlive the process, in the Decider's own (monotonic) seconds."""

    failures: tuple[float, ...] = ()  # counted failed attempts since the last lockout or accept
    last_failure: float | None = None  # for `lockout_reset_s`
    level: int = 0  # lockouts so far in this back-off series
    locked_until: float | None = None  # None: not locked out
    lockout_duration_s: float = 0.0  # the length of the lockout in force (its `unlock_allowed` event says it)


class LockoutStore:
    """`load(lockout_s, lockout_max_s)` once at start, `save(state)` on each change. `wall` and `monotonic`
    are the clocks (seams for tests that simulate a reboot); `monotonic` must be the clock of the
    timestamps given to the Decider (frame timestamps are `time.monotonic()`)."""

    def __init__(self, path: str | os.PathLike | None = None, wall: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic, boot_id: Callable[[], str | None] | None = None):
        self.path = Path(path) if path else default_lockout_path()
        self._wall = wall
        self._monotonic = monotonic
        self._boot_id = boot_id or linux_boot_id
        self._save_failed = False  # log a failing disk once, not on every failed attempt

    # -- load --------------------------------------------------------------------------------------------

    def load(self, lockout_s: float, lockout_max_s: float) -> LockoutState:
        """The saved state on the monotonic clock; an empty state without a file; locked for `lockout_s`
        (and saved so) when the file is damaged. Never raises."""
        self._remove_stale_temporaries()
        try:
            state = self._to_monotonic(self._read(), lockout_max_s)
        except FileNotFoundError:
            return LockoutState()
        except (OSError, LockoutFileError, ValueError, OverflowError) as exc:  # times out of any clock's range
            now = self._monotonic()
            log.error("lockout: %s: %s; starting locked out for %.0f s", self.path, exc, lockout_s)
            state = LockoutState(level=1, locked_until=now + lockout_s, lockout_duration_s=lockout_s)
            self.save(state)
            return state
        if state.locked_until is not None:
            log.warning("lockout: restored from %s: level %d, locked out for %.0f s more", self.path,
                        state.level, state.locked_until - self._monotonic())
        elif state.failures or state.level:
            log.info("lockout: restored from %s: level %d, %d recent failed attempts", self.path, state.level,
                     len(state.failures))
        return state

    def _remove_stale_temporaries(self) -> None:
        """Temporary files of a save that a kill or a power cut interrupted (the state file is whole)."""
        try:
            for stale in self.path.parent.glob(f".{self.path.name}.*.tmp"):
                stale.unlink(missing_ok=True)
        except OSError as exc:
            log.debug("lockout: cannot tidy %s: %s", self.path.parent, exc)

    def _read(self) -> dict[str, Any]:
        with open(self.path, "rb") as fh:
            raw = fh.read(MAX_BYTES + 1)
        if len(raw) > MAX_BYTES:
            raise LockoutFileError(f"over {MAX_BYTES} bytes, expected a small JSON lockout state")
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise LockoutFileError(f"not valid JSON ({type(exc).__name__}: {exc})") from None
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise LockoutFileError(f"expected a JSON object with \"schema\": \"{SCHEMA}\"")
        level = data.get("level")
        if not isinstance(level, int) or isinstance(level, bool) or level < 0:
            raise LockoutFileError(f"level = {level!r}: expected an integer >= 0")
        failures = data.get("failures")
        if not isinstance(failures, list) or len(failures) > MAX_FAILURES:
            raise LockoutFileError(f"failures: expected a list of at most {MAX_FAILURES} times")
        duration = _seconds(data, "lockout_duration_s", 0.0)
        monotonic = _seconds(data, "monotonic", None)
        boot = data.get("boot_id")
        if boot is not None and not isinstance(boot, str):
            raise LockoutFileError(f"boot_id = {boot!r}: expected a string or null")
        return {"saved_at": _parse_time(data, "saved_at"), "level": level, "lockout_duration_s": duration,
                "boot_id": boot, "monotonic": monotonic,
                "failures": [_parse_time({"failures": f}, "failures") for f in failures],
                "last_failure": _parse_time(data, "last_failure", optional=True),
                "locked_until": _parse_time(data, "locked_until", optional=True)}

    def _to_monotonic(self, data: dict[str, Any], lockout_max_s: float) -> LockoutState:
        wall, mono = self._wall(), self._monotonic()
        saved_at = data["saved_at"]
        boot = self._boot_id()
        if boot is not None and data["boot_id"] == boot and data["monotonic"] is not None \
                and mono >= data["monotonic"]:
            wall = saved_at + (mono - data["monotonic"])  # the same boot: the monotonic clock says how long ago
        elif wall < saved_at:
            log.warning("lockout: the clock (%s) is earlier than when %s was saved (%s); keeping the time "
                        "that was left then", _format_time(wall), self.path, _format_time(saved_at))
            wall = saved_at  # ages and what is left, as of the save

        def since(t: float) -> float:  # a time in the past, as monotonic seconds (none after `wall`)
            return mono - max(0.0, wall - t)

        locked_until = None
        if data["locked_until"] is not None:
            left = min(data["locked_until"] - wall, lockout_max_s)
            if left > 0:
                locked_until = mono + left
        last = data["last_failure"]
        return LockoutState(failures=tuple(sorted(since(t) for t in data["failures"])),
                            last_failure=since(last) if last is not None else None, level=data["level"],
                            locked_until=locked_until, lockout_duration_s=data["lockout_duration_s"])

    # -- save --------------------------------------------------------------------------------------------

    def save(self, state: LockoutState) -> bool:
        """Write `state` atomically; False (logged once until a save works again) when the disk refuses.
        The lock goes on with its lockout in memory: a full SD card must not stop the door deciding."""
        now, mono = self._wall(), self._monotonic()
        offset = now - mono  # monotonic -> wall clock, now

        def wall(t: float | None) -> str | None:
            return None if t is None else _format_time(t + offset)

        try:
            text = json.dumps({
                "schema": SCHEMA, "saved_at": _format_time(now), "level": state.level,
                "failures": [wall(t) for t in state.failures], "last_failure": wall(state.last_failure),
                "locked_until": wall(state.locked_until), "lockout_duration_s": state.lockout_duration_s,
                "boot_id": self._boot_id(), "monotonic": mono,
            }, indent=1, allow_nan=False) + "\n"
            self._write(text)
        except (OSError, ValueError, OverflowError) as exc:
            if not self._save_failed:
                log.error("lockout: cannot write %s: %s; the lockout state lives in memory only until a "
                          "write works", self.path, exc)
            self._save_failed = True
            return False
        if self._save_failed:
            log.info("lockout: %s written again", self.path)
        self._save_failed = False
        return True

    def _write(self, text: str) -> None:
        folder = self.path.parent
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=folder)  # mode 0600
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself, through a power cut
        finally:
            os.close(dir_fd)


def _seconds(data: dict[str, Any], key: str, default: float | None) -> float | None:
    """A finite number of seconds (>= 0 unless it may be absent: a monotonic reading may be negative)."""
    value = data.get(key, default)
    if value is None and default is None:
        return None
    low = 0.0 if default is not None else -math.inf
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value < math.inf:
        raise LockoutFileError(f"{key} = {value!r}: expected " + ("seconds >= 0" if low == 0 else "seconds"))
    return float(value)


def _format_time(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(data: dict[str, Any], key: str, optional: bool = False) -> float | None:
    value = data.get(key)
    if value is None and optional:
        return None
    try:
        if not isinstance(value, str) or not value.endswith("Z"):
            raise ValueError
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()
    except (ValueError, OverflowError):
        raise LockoutFileError(f"{key} = {value!r}: expected a UTC time like 2024-05-01T12:00:00.000000Z"
                               + (" or null" if optional else "")) from None


def backoff_s(lockout_s: float, growth: float, level: int, lockout_max_s: float) -> float:
    """min(lockout_max_s, lockout_s * growth ** level) for any level, without OverflowError: past the level
    at which the product reaches the cap (log(max / lockout_s) / log(growth)) the answer is the cap."""
    if lockout_s <= 0 or level <= 0 or growth <= 1.0:
        return min(lockout_s, lockout_max_s)
    # A level over 10**300 reaches any cap (log(growth) > 1e-16): int -> float never overflows here.
    if float(min(level, 10**300)) * math.log(growth) >= math.log(lockout_max_s) - math.log(lockout_s):
        return lockout_max_s
    try:
        return min(lockout_max_s, lockout_s * growth ** level)
    except OverflowError:  # only on the edge of the comparison above, where rounding differs
        return lockout_max_s
