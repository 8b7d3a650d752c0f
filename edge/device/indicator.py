"""A beeper or LED that tells the person at the door what the lock asks (the active challenge): `pulses`
short flashes, on a GPIO output, in the background (the frame loop does not wait for it).

gpiozero drives the pin (imported lazily, only with a pin configured), with `[relay] pin_factory`.
"""

from __future__ import annotations

import logging

from edge.device.relay import ActuatorError, PinFactory

log = logging.getLogger(__name__)

ON_S, OFF_S = 0.15, 0.25  # one pulse: long enough to hear or see, short enough that five take 2 s


class Indicator:
    """`signal(pulses)`: that many flashes, in the background; `close()`. The pin is on `factory` if given,
    else on `pins` (the service's one `PinFactory`), else on gpiozero's default factory."""

    def __init__(self, pin: int, active_high: bool = True, pins: PinFactory | None = None, factory=None):
        try:
            from gpiozero import DigitalOutputDevice
        except ImportError as exc:
            raise ActuatorError("challenge.indicator_pin is set but gpiozero is not installed "
                                "(apt install python3-gpiozero, or pip install gpiozero)") from exc
        factory = factory if factory is not None else (pins or PinFactory()).get()
        try:
            self._device = DigitalOutputDevice(pin, active_high=active_high, initial_value=False, pin_factory=factory)
        except Exception as exc:  # gpiozero raises many kinds (no pins, pin in use, not a Pi)
            raise ActuatorError(f"challenge indicator on GPIO{pin}: cannot open ({type(exc).__name__}: {exc})") \
                from exc
        self.pin = pin
        self.signals = 0

    def signal(self, pulses: int) -> None:
        self._device.blink(on_time=ON_S, off_time=OFF_S, n=pulses, background=True)
        self.signals += 1
        log.info("indicator: GPIO%d, %d pulses", self.pin, pulses)

    def close(self) -> None:
        self._device.close()


class NoIndicator:
    """No indicator configured: the challenge goes out over MQTT (and Home Assistant) only."""

    signals = 0

    def signal(self, pulses: int) -> None:
        self.signals += 1

    def close(self) -> None:
        pass


def open_indicator(pin: int, active_high: bool = True, pins: PinFactory | None = None):
    return Indicator(pin, active_high, pins) if pin >= 0 else NoIndicator()
