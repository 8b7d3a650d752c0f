"""One gpiozero pin factory for all of the lock's outputs: the relay, the challenge indicator and the IR
illuminator share what `[relay] pin_factory` names, opened once, even when the camera is reopened (each of
lgpio's factories holds a gpiochip file descriptor)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("gpiozero")

from edge.device.indicator import open_indicator
from edge.device.ir import IrOptions, IrSource
from edge.device.relay import ActuatorError, PinFactory, RelayOptions, open_relay
from edge.device.sources import Frame, FrameSource


class Grey(FrameSource):
    label = "grey"

    def frames(self):
        for i in range(4):
            yield Frame(np.full((48, 64, 3), 90, np.uint8), 0.1 * i, i, f"grey {i}")


def test_the_factory_is_opened_once_and_only_when_an_output_needs_it():
    default = PinFactory("")
    assert default.get() is None and default.opened == 0  # gpiozero's own default: one per process already
    pins = PinFactory("mock")
    assert pins.opened == 0  # nothing is opened before a device asks
    first = pins.get()
    assert pins.get() is first and pins.opened == 1
    pins.close()
    assert pins.get() is not first and pins.opened == 2  # closed, then opened afresh


def test_relay_indicator_and_illuminator_share_one_factory_across_camera_reopens():
    pins = PinFactory("mock")
    relay = open_relay(RelayOptions(enabled=True, pin=17), pins)
    indicator = open_indicator(27, True, pins)
    options = IrOptions(enabled=True, mode="alternate", illuminator_pin=22)
    for _ in range(3):  # the service reopens a failed camera: the illuminator's pin goes back to the factory
        source = IrSource(Grey(), options, pins=pins)
        assert source._light.pin_factory is pins.get()
        next(iter(source.frames()))
        source.close()
    assert relay._device.pin_factory is pins.get() and indicator._device.pin_factory is pins.get()
    assert pins.opened == 1
    # One factory also refuses a second device on a pin in use (separate ones each had their own pins).
    with pytest.raises(ActuatorError, match="GPIO17"):
        open_indicator(17, True, pins)
    relay.close()
    indicator.close()
    pins.close()


def test_the_service_hands_its_one_factory_to_the_ir_source(tmp_path):
    from edge.service.config import default_config
    from edge.service.loop import Service

    c = default_config().replace("relay", pin_factory="mock")
    c = c.replace("ir", enabled=True, mode="alternate", illuminator_pin=22)
    service = Service(c, source_factory=lambda _o: Grey(), install_signals=False)
    for _ in range(3):
        source = service._open_source()
        assert source._light.pin_factory is service.pins.get()
        source.close()
    assert service.pins.opened == 1
    service.pins.close()
