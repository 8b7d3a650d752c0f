"""The lockout survives restarts, reboots and power cuts: edge.identity.lockout_store with the real Decider,
the service's state, and a real `facelock run` process killed with SIGKILL and started again."""

from __future__ import annotations

import json
import logging
import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
from test_decide import OPTS, STRANGER, feed, m

from edge.identity.decide import LOCKOUT, UNLOCK_ALLOWED, Decider, Outcome
from edge.identity.lockout_store import SCHEMA, LockoutStore, default_lockout_path

REPO = Path(__file__).resolve().parents[1]
T0 = 1_700_000_000.0  # the wall clock at the first boot (UTC seconds)


class Clocks:
    """A board's two clocks and its boot id, moved by the test: `mono` restarts at each simulated boot."""

    def __init__(self, mono: float = 100.0, wall: float = T0, boot: str = "boot-1"):
        self.mono, self.wall, self.boot = mono, wall, boot

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds

    def at(self, mono: float) -> float:
        """Move both clocks to monotonic `mono` (the Decider's `now`); returns it."""
        self.advance(mono - self.mono)
        return mono

    def store(self, path: Path) -> LockoutStore:
        return LockoutStore(path, wall=lambda: self.wall, monotonic=lambda: self.mono, boot_id=lambda: self.boot)


def fail(d: Decider, clocks: Clocks, t: float | None = None):
    """A stranger's failed attempt from `t` (default: now), the clocks following the Decider's `now`, so
    each save sees the time of the frame that caused it. Returns the REJECT."""
    t = clocks.mono if t is None else t
    for i in range(3):
        d.update(STRANGER, clocks.at(t + 0.2 * i))
    r = d.update(None, clocks.at(t + 0.4 + OPTS.attempt_gap_s + 0.1))
    assert r.outcome is Outcome.REJECT
    return r


def lock_out(d: Decider, clocks: Clocks) -> float:
    """Three failed attempts: a 30 s lockout, saved at its start (the clocks stay there). Returns the start."""
    for i in range(3):
        r = fail(d, clocks, clocks.mono + (1.0 if i else 0.0))
    assert [e.kind for e in r.events] == [LOCKOUT] and d.locked_until == clocks.mono + 30.0
    return r.time


def test_lockout_holds_across_a_restart_and_ends_on_time(tmp_path):
    clocks = Clocks()
    path = tmp_path / "state" / "lockout.json"
    d = Decider(OPTS, clocks.store(path))
    start = lock_out(d, clocks)
    saved = json.loads(path.read_text())
    assert saved["schema"] == SCHEMA and saved["level"] == 1 and saved["locked_until"].endswith("Z")

    clocks.advance(10.0)  # the process is killed and started again 10 s later, same boot
    again = Decider(OPTS, clocks.store(path))
    assert again.locked_until == pytest.approx(start + 30.0) and again.lockout_level == 1
    assert again.update(m(), clocks.mono).outcome is Outcome.LOCKED_OUT  # alice too: she uses her key
    assert again.update(m(), start + 29.9).outcome is Outcome.LOCKED_OUT
    first = again.update(m(), start + 30.0)
    assert first.outcome is Outcome.PENDING and [e.kind for e in first.events] == [UNLOCK_ALLOWED]
    assert first.events[0].duration_s == pytest.approx(30.0)
    # The back-off goes on after the restart: the next failure locks for 60 s, not a fresh 3 tries.
    r = fail(again, clocks, start + 40.0)
    assert r.events[0].duration_s == 60.0 and r.events[0].level == 2


def test_failures_short_of_a_lockout_are_kept_and_an_accept_forgets_them(tmp_path):
    clocks = Clocks()
    path = tmp_path / "lockout.json"
    d = Decider(OPTS, clocks.store(path))
    fail(d, clocks)
    fail(d, clocks, clocks.mono + 10.0)
    clocks.advance(20.0)
    d = Decider(OPTS, clocks.store(path))  # restarted after 2 of 3 failures
    assert d.recent_failures == 2
    assert fail(d, clocks).events[0].kind == LOCKOUT  # the third, after the restart, locks

    clocks.advance(60.0)
    d = Decider(OPTS, clocks.store(path))
    assert d.locked_until is None and d.lockout_level == 1  # the lockout ended while the service was down
    assert feed(d, [m()] * 3, clocks.mono)[-1].outcome is Outcome.ACCEPT
    assert json.loads(path.read_text())["failures"] == [] and json.loads(path.read_text())["level"] == 0
    assert Decider(OPTS, clocks.store(path)).lockout_level == 0


def test_a_reboot_with_the_clock_set_back_keeps_the_whole_lockout(tmp_path):
    """A Pi without an RTC: the power is cut 5 s into a 30 s lockout, the board boots (monotonic clock from
    0 again, a new boot id) at a wall-clock time an hour BEFORE the save. The clock is not trusted: the
    lockout keeps the 30 s it had left when it was saved."""
    clocks = Clocks(mono=5000.0)
    path = tmp_path / "lockout.json"
    lock_out(Decider(OPTS, clocks.store(path)), clocks)
    saved_wall, saved = clocks.wall, path.read_bytes()
    reboot = Clocks(mono=3.0, wall=saved_wall + 5.0 - 3600.0, boot="boot-2")
    d = Decider(OPTS, reboot.store(path))
    assert d.locked_until == pytest.approx(3.0 + 30.0)
    assert d.update(m(), 3.0).outcome is Outcome.LOCKED_OUT
    assert d.update(m(), 32.9).outcome is Outcome.LOCKED_OUT
    assert d.update(m(), 33.1).outcome is Outcome.PENDING

    # The same reboot with a correct clock, 20 s after the save: 10 s left. Much later: none, level kept.
    path.write_bytes(saved)  # (the end of the lockout above was saved)
    d = Decider(OPTS, Clocks(mono=3.0, wall=saved_wall + 20.0, boot="boot-3").store(path))
    assert d.locked_until == pytest.approx(3.0 + 10.0)
    d = Decider(OPTS, Clocks(mono=3.0, wall=saved_wall + 100.0, boot="boot-4").store(path))
    assert d.locked_until is None and d.lockout_level == 1


def test_same_boot_trusts_the_monotonic_clock_not_a_wall_clock_jump(tmp_path):
    """NTP moves the wall clock an hour forward between a crash and the restart: within one boot the
    monotonic clock decides, and the lockout still has its time."""
    clocks = Clocks()
    path = tmp_path / "lockout.json"
    start = lock_out(Decider(OPTS, clocks.store(path)), clocks)
    clocks.mono += 5.0
    clocks.wall += 3600.0
    d = Decider(OPTS, clocks.store(path))
    assert d.locked_until == pytest.approx(start + 30.0)


def test_lockout_left_is_capped_at_lockout_max_s(tmp_path):
    clocks = Clocks()
    path = tmp_path / "lockout.json"
    lock_out(Decider(OPTS, clocks.store(path)), clocks)
    data = json.loads(path.read_text())
    data["locked_until"] = "2099-01-01T00:00:00.000000Z"  # edited, or saved under a clock far ahead
    path.write_text(json.dumps(data))
    d = Decider(OPTS, Clocks(mono=7.0, boot="other").store(path))
    assert d.locked_until == pytest.approx(7.0 + OPTS.lockout_max_s)


def test_a_restored_level_of_a_million_does_not_overflow(tmp_path):
    clocks = Clocks()
    path = tmp_path / "lockout.json"
    lock_out(Decider(OPTS, clocks.store(path)), clocks)
    data = json.loads(path.read_text())
    data.update(level=10**6, locked_until=None)
    path.write_text(json.dumps(data))
    d = Decider(OPTS, clocks.store(path))
    assert d.lockout_level == 10**6
    r = fail(d, clocks, clocks.mono + 1.0)
    assert r.events[0].duration_s == OPTS.lockout_max_s and json.loads(path.read_text())["level"] == 10**6 + 1


def test_the_file_is_private_and_written_whole(tmp_path):
    clocks = Clocks()
    path = tmp_path / "new" / "folder" / "lockout.json"
    d = Decider(OPTS, clocks.store(path))
    assert not path.exists()  # nothing happened yet: nothing written
    fail(d, clocks)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) & 0o077 == 0
    assert sorted(p.name for p in path.parent.iterdir()) == ["lockout.json"]  # no temporary left behind
    stale = path.parent / ".lockout.json.abc123.tmp"  # a save cut short by a power cut
    stale.write_text("{")
    Decider(OPTS, clocks.store(path))
    assert not stale.exists()


@pytest.mark.parametrize("content", [
    b"", b"{", b"\x00\xff garbage", b"[]", b'{"schema": "something else"}',
    b'{"schema": "facelock.lockout/1", "level": -1, "failures": [], "saved_at": "2024-01-01T00:00:00.000000Z"}',
    (b'{"schema": "facelock.lockout/1", "level": 1, "failures": [], "saved_at": "2024-01-01T00:00:00.000000Z",'
     b' "locked_until": "tomorrow"}'),
    (b'{"schema": "facelock.lockout/1", "level": 1, "failures": [], "saved_at": "2024-01-01T00:00:00.000000Z",'
     b' "lockout_duration_s": NaN}'),
    b"[" * 100_000, b" " * 70_000 + b"{}",
])
def test_a_damaged_file_starts_locked_for_lockout_s_and_says_so(tmp_path, caplog, content):
    clocks = Clocks()
    path = tmp_path / "lockout.json"
    path.write_bytes(content)
    with caplog.at_level(logging.ERROR, logger="edge.identity.lockout_store"):
        d = Decider(OPTS, clocks.store(path))
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and str(path) in errors[0] and "starting locked out for 30 s" in errors[0]
    assert d.locked_until == pytest.approx(clocks.mono + OPTS.lockout_s)
    assert d.update(m(), clocks.mono + 29.0).outcome is Outcome.LOCKED_OUT
    assert d.update(m(), clocks.mono + 30.0).outcome is Outcome.PENDING
    # The damaged file was replaced by that fail-closed state: the next start does not lock from scratch.
    caplog.clear()
    assert json.loads(path.read_text())["schema"] == SCHEMA
    Decider(OPTS, clocks.store(path))
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_file_that_cannot_be_read_fails_closed(tmp_path, caplog):
    path = tmp_path / "lockout.json"
    path.mkdir()  # a folder where the file should be: unreadable as a file, and not writable either
    with caplog.at_level(logging.ERROR, logger="edge.identity.lockout_store"):
        d = Decider(OPTS, Clocks().store(path))
    assert d.locked_until is not None
    assert any(str(path) in r.getMessage() and "locked out" in r.getMessage() for r in caplog.records)


def test_a_disk_that_refuses_writes_is_logged_once_and_decisions_go_on(tmp_path, caplog):
    folder = tmp_path / "state"
    folder.mkdir()
    clocks = Clocks()
    d = Decider(OPTS, clocks.store(folder / "lockout.json"))
    folder.rmdir()
    folder.write_text("a file where the state folder was: no save can succeed, not even as root")
    with caplog.at_level(logging.ERROR, logger="edge.identity.lockout_store"):
        for _ in range(3):
            fail(d, clocks, clocks.mono + 10.0)
    assert d.locked_until is not None  # the lockout holds in memory
    assert len([r for r in caplog.records if "cannot write" in r.getMessage()]) == 1


def test_default_path_is_in_xdg_state_home_and_a_decider_without_a_store_writes_nothing(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert LockoutStore().path == default_lockout_path() == tmp_path / "facelock" / "lockout.json"
    d, clocks = Decider(OPTS), Clocks()  # tests and benchmarks: the lockout in memory only
    for _ in range(3):
        fail(d, clocks, clocks.mono + 10.0)
    assert d.locked_until is not None and list(tmp_path.iterdir()) == []


def test_board_config_keeps_the_lockout_in_the_state_directory(tmp_path):
    """/var/lib/facelock is the unit's StateDirectory: the one place a board writes, and kept on upgrades."""
    from deploy.board_config import board_config
    from edge.service.config import load_config

    path = tmp_path / "config.toml"
    path.write_text(board_config())
    assert load_config(path).decide.state_path == "/var/lib/facelock/lockout.json"


# -- the service ---------------------------------------------------------------------------------------------

def test_service_reports_a_restored_lockout_and_refuses_alice(broker, tmp_path):
    """The service (stand-in stages, real broker) started on the file of a lockout in force: its retained
    state says locked_out, and alice's frames open nothing; without the file, the same frames open."""
    from mqtt_broker import Subscriber
    from test_service import FakeAligner, FakeDetector, FakeEmbedder, ListSource, _config, _relay

    from edge.service.loop import Service

    path = tmp_path / "lockout.json"
    decider = Decider(replace(OPTS, lockout_s=600.0, lockout_max_s=900.0), LockoutStore(path))  # real clocks
    t = time.monotonic()
    for i in range(3):
        feed(decider, [STRANGER] * 3, t + 10.0 * i)
        decider.update(None, t + 10.0 * i + 3.0)
    assert decider.locked_until is not None
    config = _config(tmp_path, broker.port).replace("decide", state_path=str(path))

    def run() -> tuple[list[dict], list[dict]]:
        sub = Subscriber(broker.port, ["facelock/svc/#"])
        service = Service(config, components=(FakeDetector(), FakeAligner(), FakeEmbedder()),
                          source_factory=lambda _o: ListSource([1] * 10, 0.01), relay=_relay(config)[0],
                          install_signals=False)
        assert service.run() == 0
        assert sub.wait_for(lambda msgs: any(p == b"offline" for t, p, _ in msgs if t.endswith("availability")))
        sub.close()
        return [json.loads(p) for p, _ in sub.on("facelock/svc/state")], \
            [json.loads(p) for p, _ in sub.on("facelock/svc/event")]

    states, events = run()
    assert states and all(s["locked_out"] is True for s in states) and states[-1]["lock"] == "LOCKED"
    assert not [e for e in events if e["decision"] == "accept"]
    path.unlink()  # the control
    assert [e["person"] for e in run()[1] if e["decision"] == "accept"] == ["alice"]


# -- a real `facelock run`, SIGKILLed --------------------------------------------------------------------------

class LockProcess:
    """`facelock run --config` in a child process; keeps its output."""

    def __init__(self, config: Path):
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
        self.proc = subprocess.Popen([sys.executable, "-m", "facelock", "run", "--config", str(config)], cwd=REPO,
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stdout), daemon=True)
        self.reader.start()

    def output(self) -> str:
        return "".join(self.lines[-60:])


def _run_config(path: Path, model: Path, frames: Path, tmp: Path, port: int, max_frames: int = 0) -> Path:
    path.write_text(textwrap.dedent(f"""
        [service]
        max_frames = {max_frames}
        [model]
        path = "{model}"
        [source]
        kind = "folder"
        uri = "{frames}"
        fps = 0.0
        loop = {"true" if not max_frames else "false"}
        [gallery]
        path = "{tmp / 'gallery.db'}"
        [outbox]
        path = "{tmp / 'outbox.db'}"
        fsync = false
        [mqtt]
        host = "127.0.0.1"
        port = {port}
        device_id = "kill9"
        [homeassistant]
        enabled = false
        # the replayed stills are a held-up photo to the liveness checks; this test is about the lockout
        [liveness]
        enabled = false
        # one failed attempt (a stranger for 1 s) locks out for 10 minutes
        [decide]
        k = 2
        n = 3
        cooldown_s = 600.0
        attempt_max_s = 1.0
        attempt_gap_s = 1.0
        min_attempt_frames = 1
        lockout_failures = 1
        lockout_s = 600.0
        lockout_max_s = 900.0
        state_path = "{tmp / 'state' / 'lockout.json'}"
    """))
    return path


@pytest.mark.slow
def test_lockout_holds_across_kill_9_of_the_real_service(quick_bundle, broker, tmp_path):
    """`facelock run` (the real process, an int8 bundle and its threshold, replayed frames, real
    Mosquitto): eileen opens, then a stranger's attempt locks the door out for 600 s; SIGKILL; started
    again on the same state file, the same program refuses eileen's frames (no accept) and reports
    locked_out."""
    from mqtt_broker import Subscriber

    from convert.demo_faces import FIXTURES, PEOPLE, load_portraits, write_door_frames

    bundle = quick_bundle[0].out
    enrolled = subprocess.run([sys.executable, "-m", "facelock", "enroll", "eileen_collins",
                               str(FIXTURES / PEOPLE["eileen_collins"]), "--gallery", str(tmp_path / "gallery.db"),
                               "--model", str(bundle)], cwd=REPO, capture_output=True, text=True,
                              timeout=300, check=False)
    assert enrolled.returncode == 0, enrolled.stderr[-2000:]
    portraits = load_portraits()
    door = tmp_path / "door"  # eileen, then a stranger who stays
    write_door_frames(door, portraits, [("eileen_collins", 4), ("grace_hopper", 12)])
    eileen = tmp_path / "eileen"
    write_door_frames(eileen, portraits, [("eileen_collins", 8)])
    state_file = tmp_path / "state" / "lockout.json"

    sub = Subscriber(broker.port, ["facelock/kill9/#"])
    first = LockProcess(_run_config(tmp_path / "first.toml", bundle, door, tmp_path, broker.port))
    try:
        def events(msgs):
            return [json.loads(p) for t, p, _ in msgs if t.endswith("/event")]

        locked = sub.wait_for(lambda msgs: any(e["decision"] == "lockout" for e in events(msgs)), timeout=240)
        assert locked, "no lockout event:\n" + first.output()
        first.proc.send_signal(signal.SIGKILL)
        assert first.proc.wait(30) == -signal.SIGKILL
    finally:
        if first.proc.poll() is None:
            first.proc.kill()
            first.proc.wait()
    with sub.lock:
        before = events(sub.messages)
    assert [e["person"] for e in before if e["decision"] == "accept"] == ["eileen_collins"]  # her frames open
    saved = json.loads(state_file.read_text())
    assert saved["level"] == 1 and stat.S_IMODE(state_file.stat().st_mode) == 0o600
    sub.close()

    sub = Subscriber(broker.port, ["facelock/kill9/#"])
    second = LockProcess(_run_config(tmp_path / "second.toml", bundle, eileen, tmp_path, broker.port,
                                     max_frames=8))
    assert second.proc.wait(240) == 0, second.output()
    second.reader.join(10)
    assert sub.wait_for(lambda msgs: any(p == b"offline" for t, p, _ in msgs if t.endswith("availability")))
    with sub.lock:
        after = [json.loads(p) for t, p, _ in sub.messages if t.endswith("/event")]
        states = [json.loads(p) for t, p, _ in sub.messages if t.endswith("/state")]
    sub.close()
    # Eileen refused: still locked out (without the state file this run opens for her: checked by hand).
    assert not [e for e in after if e["decision"] == "accept"], after
    assert states and states[-1]["locked_out"] is True
    assert "lockout: restored from" in second.output() and "locked out for" in second.output()
