"""Nothing is lost: the real lock service (`facelock run`, int8 bundle, replayed frames of a real face)
makes 500 recognitions while the real broker is stopped and restarted 5 times and the service itself is
SIGKILLed once and started again on the same outbox. Every event id the service logged as stored must
reach a subscriber at least once."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from mqtt_broker import Subscriber

from convert.demo_faces import FIXTURES, PEOPLE, load_portraits, write_door_frames

REPO = Path(__file__).resolve().parents[1]
TOTAL = 500
STORED = re.compile(r" event ([0-9a-f]{32}): ")  # logged by the service once the event is in the outbox


class LockProcess:
    """`facelock run` in a child process; collects the ids of the events it stored."""

    def __init__(self, config: Path):
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
        self.proc = subprocess.Popen([sys.executable, "-m", "facelock", "run", "--config", str(config)], cwd=REPO,
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.ids: list[str] = []
        self.tail: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.tail = (self.tail + [line])[-40:]
            m = STORED.search(line)
            if m:
                self.ids.append(m.group(1))

    def finish(self, sig: int, timeout: float = 60) -> int:
        self.proc.send_signal(sig)
        rc = self.proc.wait(timeout)
        self.reader.join(10)
        return rc


def _config(path: Path, frames: Path, gallery: Path, outbox: Path, port: int, bundle: Path) -> Path:
    path.write_text(textwrap.dedent(f"""
        [model]
        path = "{bundle}"
        [source]
        kind = "folder"
        uri = "{frames}"
        fps = 0.0
        loop = true
        [gallery]
        path = "{gallery}"
        [outbox]
        path = "{outbox}"
        [mqtt]
        host = "127.0.0.1"
        port = {port}
        device_id = "dur"
        reconnect_min_s = 0.5
        reconnect_max_s = 1.0
        keepalive_s = 5
        [homeassistant]
        enabled = false
        # the replayed stills are a held-up photo to the liveness checks; this test is about delivery
        [liveness]
        enabled = false
        # every frame of the enrolled face is a recognition: 500 of them in well under a minute
        [decide]
        threshold = 0.6
        k = 1
        n = 1
        cooldown_s = 0.0
        min_attempt_frames = 1
    """))
    return path


@pytest.mark.slow
def test_500_recognitions_survive_broker_restarts_and_a_sigkill(quick_bundle, broker, tmp_path):
    opts, _ = quick_bundle
    gallery = tmp_path / "gallery.db"
    enrolled = subprocess.run([sys.executable, "-m", "facelock", "enroll", "eileen_collins",
                               str(FIXTURES / PEOPLE["eileen_collins"]), "--gallery", str(gallery),
                               "--model", str(opts.out)], cwd=REPO, capture_output=True, text=True, check=False)
    assert enrolled.returncode == 0, enrolled.stderr[-2000:]
    frames = tmp_path / "frames"
    write_door_frames(frames, load_portraits(), [("eileen_collins", 8)])
    config = _config(tmp_path / "config.toml", frames, gallery, tmp_path / "outbox.db", broker.port, opts.out)

    topic = "facelock/dur/event"
    # A persistent session: what is published while this subscriber is away is queued for it by the broker.
    sub = Subscriber(broker.port, [topic], client_id="durability-sub", persistent=True)
    runs = [LockProcess(config)]
    try:
        def stored() -> int:
            return sum(len(r.ids) for r in runs)

        def wait_stored(n: int, timeout: float = 120) -> None:
            deadline = time.monotonic() + timeout
            while stored() < n:
                assert runs[-1].proc.poll() is None, "the service exited:\n" + "".join(runs[-1].tail)
                assert time.monotonic() < deadline, f"only {stored()} of {n} events stored:\n" + "".join(runs[-1].tail)
                time.sleep(0.05)

        for restart in range(5):
            wait_stored((restart + 1) * TOTAL // 6)
            broker.stop()
            time.sleep(0.8)  # recognitions go on while the broker is away: they wait in the outbox
            if restart == 2:  # SIGKILL with events unsent in the outbox, then start again on the same files
                assert runs[-1].finish(signal.SIGKILL) == -signal.SIGKILL
                runs.append(LockProcess(config))
            broker.start()
        wait_stored(TOTAL)
        assert runs[-1].finish(signal.SIGTERM) == 0, "".join(runs[-1].tail)  # flushes the outbox, then exits

        ids = {i for r in runs for i in r.ids}
        assert len(ids) == stored() >= TOTAL  # ids are unique

        def all_there(messages) -> bool:
            return ids <= {json.loads(p)["id"] for t, p, _ in messages if t == topic}

        ok = sub.wait_for(all_there, timeout=60)
        seen = {json.loads(p)["id"] for p, _ in sub.on(topic)}
        assert ok, f"missing {len(ids - seen)} of {len(ids)} events, e.g. {sorted(ids - seen)[:3]}"
        events = [json.loads(p) for p, retained in sub.on(topic) if not retained]
        assert len(events) == len(sub.on(topic))  # events are never retained
        assert {e["person"] for e in events if e["id"] in ids} == {"eileen_collins"}
    finally:
        for r in runs:
            if r.proc.poll() is None:
                r.proc.kill()
                r.proc.wait()
        sub.close()
