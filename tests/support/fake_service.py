"""A `Service` built from a config with stand-in model stages (no model file), a real gallery, outbox and
lockout file in a temporary folder, and gpiozero's mock pins: for the fuzz harness and the robustness tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.service.config import default_config
from edge.types import CHIP_SIZE, AlignedFace, Face

DIM = 8


class FakeDetector:
    """One face when the frame's first pixel is not 0 (its value says who it is)."""

    def detect(self, frame):
        if frame[0, 0, 0] == 0:
            return []
        kp = np.array([[70, 80], [130, 80], [100, 110], [100, 140], [45, 95], [155, 95]], np.float32)
        return [Face((40.0, 40.0, 160.0, 170.0), kp, 0.99)]


class FakeAligner:
    def align(self, frame, face):
        return AlignedFace(frame[:CHIP_SIZE, :CHIP_SIZE].copy(), np.eye(2, 3), face)


class FakeEmbedder:
    """Pixel value 1 embeds as alice's template, anything else as a stranger."""

    name = "fake"

    def embed(self, chips):
        who = int(chips[0, 0, 0, 0])
        return np.eye(DIM, dtype=np.float32)[0 if who == 1 else 2][None]


def service_config(tmp_path: Path, port: int = 1883):
    """The default config with every file in `tmp_path`, alice enrolled, lenient quality gates (the fake
    stages' faces are flat), quick decisions, a mock relay pin and the broker at `port`."""
    from edge.identity.gallery import Gallery

    gallery = tmp_path / "gallery.db"
    with Gallery(gallery) as g:
        g.enroll("alice", np.eye(DIM, dtype=np.float32)[0][None])
    c = default_config()
    c = c.replace("gallery", path=str(gallery)).replace("outbox", path=str(tmp_path / "outbox.db"), fsync=False)
    c = c.replace("mqtt", host="127.0.0.1", port=port, device_id="fuzz", reconnect_max_s=1.0)
    c = c.replace("quality", min_sharpness=0.0, min_contrast=0.0, min_face_px=10.0, min_eye_distance_px=1.0,
                  max_yaw_deg=90.0, max_roll_deg=180.0, dim_contrast=0.0)
    c = c.replace("decide", threshold=0.5, k=2, n=3, min_attempt_frames=1, attempt_gap_s=0.05,
                  state_path=str(tmp_path / "lockout.json"))
    c = c.replace("relay", enabled=True, pin_factory="mock", unlock_s=0.5)
    # the fake stages have no landmark model, so no mesh to judge: liveness has its own tests
    c = c.replace("liveness", enabled=False)
    return c.replace("service", shutdown_flush_s=2.0)


def built_service(config):
    """A Service with its stages built (fake model stages, mock relay pin), its link not connected; the
    replies it would publish are recorded in `service.replies`."""
    from gpiozero.pins.mock import MockFactory

    from edge.device.relay import Relay
    from edge.service.loop import Service

    relay = Relay(config.relay, pin_factory=MockFactory())
    service = Service(config, components=(FakeDetector(), FakeAligner(), FakeEmbedder()), relay=relay,
                      install_signals=False)
    service._build()
    replies: list[dict] = []
    service.link.reply = lambda command, request_id, ok, error="", result=None: replies.append(
        {"command": command, "id": request_id, "ok": ok, "error": error, "result": result})
    service.replies = replies
    return service
