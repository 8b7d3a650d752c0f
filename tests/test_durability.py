"""At-least-once across broker restarts and a SIGKILL: 500 events, every id reaches the subscriber."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mqtt_broker import Subscriber

HERE = Path(__file__).resolve().parent
TOTAL = 500


def _start(port: int, outbox: Path, start: int) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(HERE.parent))
    return subprocess.Popen([sys.executable, str(HERE / "durability_publisher.py"), str(port), str(outbox),
                             str(TOTAL), str(start), "0.02"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            env=env, text=True)


@pytest.mark.slow
def test_every_event_arrives_through_restarts_and_sigkill(broker, tmp_path):
    topic = "facelock/dur/event"
    sub = Subscriber(broker.port, [topic], client_id="durability-sub", persistent=True)
    outbox = tmp_path / "outbox.db"
    proc = _start(broker.port, outbox, 0)
    killed = False
    try:
        for restart in range(5):
            time.sleep(1.0)
            broker.stop()
            time.sleep(0.6)  # events keep coming while the broker is away
            if restart == 2:  # SIGKILL the publisher mid-stream, with events unsent in its outbox
                proc.send_signal(signal.SIGKILL)
                out, _ = proc.communicate(timeout=10)
                done = [int(line) for line in out.split() if line.isdigit()]
                killed = True
                proc = _start(broker.port, outbox, (max(done) + 1) if done else 0)
            broker.start()
        assert killed
        ids = {f"ev{i:04d}" for i in range(TOTAL)}

        def all_there(messages):
            seen = {json.loads(p)["id"] for t, p, _ in messages if t == topic}
            return ids <= seen

        ok = sub.wait_for(all_there, timeout=45)
        seen = {json.loads(p)["id"] for p, _ in sub.on(topic)}
        assert ok, f"missing {len(ids - seen)} of {TOTAL} events, e.g. {sorted(ids - seen)[:5]}"
        assert proc.wait(timeout=30) == 0
        for p, retained in sub.on(topic):
            assert not retained
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sub.close()
