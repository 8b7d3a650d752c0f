"""IR mode: the near-infrared view of each frame (edge.device.ir) and the check that the face is in it
(edge.vision.ir), with the real detector and landmark model; the camera sensor and the illuminator's light
are simulated (`DoorScene`: the hardware edge), the GPIO pin is gpiozero's mock, behind the real interfaces.

The physics simulated, stated once: skin and paper reflect the 850 nm illuminator, so the lit frame minus
the unlit one shows a real face (and a print); a phone or tablet screen emits its picture in both frames and
reflects little of the illuminator (a faint sheen and a glint off the glass), so the difference shows none.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge.device.ir import IrOptions, IrSource, grey
from edge.device.sources import Frame, FrameSource
from edge.errors import ConfigError
from edge.types import LivenessState
from edge.vision.ir import IrLayer, ir_view
from edge.vision.layered import LayeredLiveness

PIN = 23


def door_frame(portrait, at=(40, 120), face_scale=0.8, background=100):
    """The portrait at door distance in a 640x480 frame (`at`: its top-left row, column): (frame, the
    region it covers as slices)."""
    import cv2

    small = cv2.resize(portrait, None, fx=face_scale, fy=face_scale, interpolation=cv2.INTER_AREA)
    frame = np.full((480, 640, 3), background, np.uint8)
    y, x = at
    region = (slice(y, y + small.shape[0]), slice(x, x + small.shape[1]))
    frame[region] = small
    return frame, region


class DoorScene(FrameSource):
    """The camera sensor at the door, lit or not by the illuminator on the mock pin: `kind` "person" (the
    face reflects the illuminator) or "screen" (the face is a picture the screen emits)."""

    def __init__(self, portrait, kind, frames=24, factory=None, seed=0):
        self.base, self.region = door_frame(portrait)
        self.kind, self.n, self.factory = kind, frames, factory
        self.rng = np.random.default_rng(seed)
        self.label = f"door scene ({kind})"

    def lit(self) -> bool:
        from gpiozero import Device

        factory = self.factory or Device.pin_factory
        return bool(factory.pin(PIN).state)

    def render(self, lit: bool, i: int) -> np.ndarray:
        f = self.base.astype(np.float32)
        f += np.float32(2.0 * np.sin(i))  # the porch light flickers a little
        if lit:
            reflected = np.zeros(f.shape[:2], np.float32)
            if self.kind == "person":  # skin (and the person's clothes) reflect the illuminator; the wall far less
                reflected[self.region] = 0.35 * grey(self.base[self.region])
                reflected += 6.0
            else:  # the screen's glass: a faint sheen over it and the illuminator's glint
                reflected[self.region] = 5.0
                yy, xx = np.mgrid[0:480, 0:640]
                reflected += 120.0 * np.exp(-((yy - 150) ** 2 + (xx - 320) ** 2) / (2 * 6.0**2))
            f += reflected[..., None]  # a NoIR sensor sees 850 nm in all three channels
        f += self.rng.normal(0, 2.0, f.shape)
        return np.clip(f, 0, 255).astype(np.uint8)

    def frames(self):
        for i in range(self.n):
            yield Frame(self.render(self.lit(), i), 0.05 * i, i, f"{self.label} {i}")


class Stills(FrameSource):
    label = "stills"

    def __init__(self, images):
        self.images = images

    def frames(self):
        for i, image in enumerate(self.images):
            yield Frame(image, 0.1 * i, i, f"still {i}")


@pytest.fixture
def mock_pins():
    """gpiozero's default pin factory is a MockFactory for the test (what `[relay] pin_factory = ""` uses)."""
    from gpiozero import Device
    from gpiozero.pins.mock import MockFactory

    before = Device.pin_factory
    Device.pin_factory = MockFactory()
    yield Device.pin_factory
    Device.pin_factory.reset()
    Device.pin_factory = before


def test_options_are_checked_and_in_the_example_config():
    from edge.service.config import EXAMPLE_PATH, parse_config

    assert "[ir]" in EXAMPLE_PATH.read_text()
    assert parse_config({}).ir.enabled is False
    with pytest.raises(ConfigError, match="ir.illuminator_pin"):
        parse_config({"ir": {"enabled": True}})  # alternate mode without the illuminator's pin
    assert parse_config({"ir": {"enabled": True, "mode": "camera", "uri": "/dev/video2"}}).ir.mode == "camera"
    with pytest.raises(ConfigError, match="ir.mode"):
        parse_config({"ir": {"mode": "thermal"}})


def test_alternate_mode_switches_the_illuminator_and_gives_the_difference(portraits, mock_pins):
    options = IrOptions(enabled=True, illuminator_pin=PIN)
    with IrSource(DoorScene(portraits[0], "person", frames=8), options) as source:
        frames = list(source.frames())
    assert [f.index for f in frames] == [0, 1, 2, 3]  # every lit frame, half the camera's rate
    pin = mock_pins.pin(PIN)
    switched = [s.state for s in pin.states[1:]]
    assert switched[:8] == [True, False] * 4 and pin.state is False  # and off when closed
    scene = DoorScene(portraits[0], "person")
    ir = frames[0].ir
    assert ir.shape == (480, 640) and ir.dtype == np.uint8
    face, wall = ir[scene.region].astype(float), ir[:, :100].astype(float)
    assert face.mean() > 4 * wall.mean(), "the face reflects the illuminator, the wall far less"
    screen = IrSource(DoorScene(portraits[0], "screen", frames=2), options)
    (shown,) = list(screen.frames())
    screen.close()
    assert shown.ir[scene.region].mean() < 12, "a screen's own picture cancels out"


class LaggingScene(DoorScene):
    """A camera whose frame is exposed before the switch it follows (`lag` frames behind the pin), or whose
    illuminator never comes on (`dead`)."""

    def __init__(self, *args, lag=0, dead=False, **kw):
        super().__init__(*args, **kw)
        self.lag, self.dead, self.history = lag, dead, []

    def frames(self):
        for i in range(self.n):
            self.history.append(self.lit() and not self.dead)
            lit = self.history[-1 - self.lag] if len(self.history) > self.lag else False
            yield Frame(self.render(lit, i), 0.05 * i, i, f"{self.label} {i}")


@pytest.mark.parametrize(("scene", "settle", "warned"), [
    ({}, 0, False),
    ({"lag": 1}, 0, True),
    ({"lag": 1}, 1, False),  # the fix the warning suggests
    ({"dead": True}, 0, True),
])
def test_alternate_mode_says_when_the_lit_frames_do_not_show_the_illuminator(portraits, mock_pins, caplog, scene,
                                                                             settle, warned):
    """No camera says whether a frame was exposed with the light on: a lagging camera or an illuminator
    that never switches gave an empty IR view, and every owner failed the IR check without a word why."""
    import logging

    from edge.device.ir import SYNC_PAIRS

    caplog.set_level(logging.INFO, logger="edge.device.ir")
    options = IrOptions(enabled=True, illuminator_pin=PIN, settle_frames=settle)
    frames = 2 * (1 + settle) * SYNC_PAIRS
    with IrSource(LaggingScene(portraits[0], "person", frames=frames, **scene), options) as source:
        assert len(list(source.frames())) == SYNC_PAIRS
    lines = [r.getMessage() for r in caplog.records if "no brighter than the unlit" in r.getMessage()]
    assert len(lines) == warned, lines
    if warned:
        assert f"GPIO{PIN}" in lines[0] and f"settle_frames = {settle}" in lines[0]


def test_camera_mode_pairs_each_frame_with_the_ir_camera(portraits):
    colour, _ = door_frame(portraits[0])
    ir_frames = [np.repeat(grey(colour)[::2, ::2, None], 3, axis=2).astype(np.uint8)] * 3
    with IrSource(Stills([colour] * 3), IrOptions(enabled=True, mode="camera"), ir_camera=Stills(ir_frames)) as s:
        frames = list(s.frames())
    assert len(frames) == 3 and all(f.ir.shape == (240, 320) and f.ir.dtype == np.uint8 for f in frames)
    assert ir_view(frames[0].ir, colour.shape).shape == (480, 640, 3)  # onto the colour frame's grid


def test_the_face_must_be_in_the_ir_view(stages, portraits, mock_pins):
    """Through the real detector and landmark model: the person's face is in the IR view (presence near 1,
    the IR camera at half the resolution too); the screen's is not; the layered judge says which."""
    detector, landmarker = stages
    layer = IrLayer(landmarker)
    options = IrOptions(enabled=True, illuminator_pin=PIN)
    scores = {}
    for kind in ("person", "screen"):
        with IrSource(DoorScene(portraits[0], kind, frames=10), options) as source:
            judge = LayeredLiveness(None, [layer])
            evidence = []
            for frame in source.frames():
                (face,) = landmarker.confirm(frame.image, detector.detect(frame.image))
                evidence.append(judge.sample(face, frame.image, frame.ir))
            scores[kind] = [e.scores["ir"] for e in evidence]
            verdict = judge.judge(evidence)
        if kind == "person":
            assert verdict.state is LivenessState.LIVE and verdict.check == "ir"
            half = frame.ir[::2, ::2]
            assert layer.score(frame.image, face, half) > 0.9
        else:
            assert verdict.state is LivenessState.ATTACK and verdict.check == "ir"
            assert "no face there, as on a phone or tablet screen" in verdict.reason
    assert min(scores["person"]) > 0.9 and max(scores["screen"]) < 0.2, scores
    assert layer.score(frame.image, face, None) is None  # a frame without its IR view is not scored


def test_the_service_opens_for_a_person_and_calls_a_screen_an_attack(broker, stages, portraits, tmp_path,
                                                                     mock_pins):
    """`[ir] enabled`: the service wraps its source (the door scene) in the IR source, switches the mock
    illuminator and needs the face in the IR view: the owner is let in, the owner's photo on a screen is
    reported as an attack naming the IR check."""
    from mqtt_broker import Subscriber
    from test_landmarks import Embedder

    from edge.identity.gallery import Gallery
    from edge.service.config import default_config
    from edge.service.loop import Service
    from edge.vision.align import FaceAligner
    from edge.vision.build import Stages

    detector, landmarker = stages
    components = Stages(detector, FaceAligner(landmarker=landmarker), Embedder(), landmarker)
    with Gallery(tmp_path / "gallery.db") as g:
        g.enroll("owner", components.pipeline().embed_image(door_frame(portraits[0])[0])[None])
    events = {}
    for kind in ("person", "screen"):
        sub = Subscriber(broker.port, [f"facelock/{kind}/event"])
        c = default_config().replace("gallery", path=str(tmp_path / "gallery.db"))
        c = c.replace("outbox", path=str(tmp_path / f"outbox-{kind}.db"), fsync=False)
        c = c.replace("mqtt", host="127.0.0.1", port=broker.port, device_id=kind, reconnect_max_s=1.0)
        c = c.replace("decide", threshold=0.8, state_path=str(tmp_path / f"lockout-{kind}.json"))
        c = c.replace("ir", enabled=True, illuminator_pin=PIN)
        # the IR layer alone: the scene's face is a still portrait, which the passive checks (their own
        # tests) would refuse in both cases
        c = c.replace("liveness", enabled=False)
        c = c.replace("service", shutdown_flush_s=5.0)
        scene = DoorScene(portraits[0], kind, frames=20)
        service = Service(c, components=components, source_factory=lambda _o, s=scene: s, install_signals=False)
        assert service.run() == 0
        assert sub.wait_for(lambda m: bool(m), timeout=10)
        events[kind] = [json.loads(p) for p, _ in sub.on(f"facelock/{kind}/event")]
        sub.close()
    assert [e["event_type"] for e in events["person"]] == ["recognized"] and events["person"][0]["person"] == "owner"
    assert events["person"][0]["reason"].endswith("live (ir)")
    attack = events["screen"][0]
    assert attack["event_type"] == "attack_suspected" and attack["reason"].startswith("attack suspected: ir ("), attack
