"""A private Mosquitto broker for `make demo` (facelock/demo.py) and the RSS benchmark
(benchmarks/edge_targets.py): the lock service talks MQTT to a real broker, not a mock."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path


def start_broker(folder: str | Path) -> tuple[subprocess.Popen, int] | None:
    """A private Mosquitto on a free port of 127.0.0.1 (demo and benchmarks): (process, port), or None
    when mosquitto is not installed (apt install mosquitto). Its config file goes in `folder`; stop it
    with `process.terminate()`."""
    mosquitto = shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.path.exists(p)), None)
    if mosquitto is None:
        return None
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (folder / "mosquitto.conf").write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
    proc = subprocess.Popen([mosquitto, "-c", str(folder / "mosquitto.conf")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    for _ in range(250):  # listening within a few seconds
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            time.sleep(0.02)
    return proc, port
