"""The door relay: energised for `unlock_s` seconds on an accept, then released (locked) again.

gpiozero drives the pin (imported lazily, only when a relay is enabled). A timer thread releases the relay
at the deadline even if the frame loop stalls; another unlock before then extends the deadline. `lock()`
releases at once, `close()` releases and frees the pin. `pin_factory = "mock"` uses gpiozero's
MockFactory (tests, demos on a PC).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from edge.errors import FacelockError
from edge.options import check

log = logging.getLogger(__name__)

PIN_FACTORIES = ("", "mock", "lgpio", "rpigpio", "pigpio", "native")


class ActuatorError(FacelockError):
    """The relay's GPIO cannot be opened or driven."""


@dataclass(frozen=True)
class RelayOptions:
    """The relay that opens the door."""

    enabled: bool = False
    """Drive a relay (and offer a lock entity in Home Assistant)."""
    pin: int = 17
    """BCM GPIO number of the relay input (0-27: the 40-pin header of every Pi since the B+)."""
    active_high: bool = True
    """True: the relay is energised (door open) with the pin high; false for active-low relay boards."""
    unlock_s: float = 5.0
    """Seconds the door stays unlocked after an accept."""
    pin_factory: str = ""
    """gpiozero pin factory: empty for gpiozero's default (lgpio on a Pi), "mock" for a simulated pin."""

    def validate(self) -> RelayOptions:
        return check("relay", self, [
            ("pin", 0 <= self.pin <= 27, "a BCM GPIO number 0-27 (the 40-pin header)"),
            ("unlock_s", 0 < self.unlock_s <= 600, "0 < seconds <= 600"),
            ("pin_factory", self.pin_factory in PIN_FACTORIES,
             "'', 'mock', 'lgpio', 'rpigpio', 'pigpio' or 'native'"),
        ])


class Relay:
    """`unlock(seconds)` energises the relay until the deadline; `is_unlocked`; `lock()`; `close()`."""

    def __init__(self, options: RelayOptions, pin_factory=None):
        self.options = options.validate()
        try:
            from gpiozero import OutputDevice
        except ImportError as exc:
            raise ActuatorError("relay.enabled is true but gpiozero is not installed "
                                "(apt install python3-gpiozero, or pip install gpiozero)") from exc
        factory = pin_factory if pin_factory is not None else open_pin_factory(options.pin_factory)
        try:
            self._device = OutputDevice(options.pin, active_high=options.active_high, initial_value=False,
                                        pin_factory=factory)
        except Exception as exc:  # gpiozero raises many kinds (no pins, pin in use, not a Pi)
            raise ActuatorError(f"relay on GPIO{options.pin}: cannot open ({type(exc).__name__}: {exc})") from exc
        self._lock = threading.Lock()
        self._deadline: float | None = None
        self._wake = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._timer, name="relay", daemon=True)
        self._thread.start()
        self.unlocks = 0

    @property
    def is_unlocked(self) -> bool:
        return not self._closed and bool(self._device.value)

    def unlock(self, seconds: float | None = None) -> None:
        seconds = self.options.unlock_s if seconds is None else seconds
        with self._lock:
            self._deadline = max(self._deadline or 0.0, time.monotonic() + seconds)
            if not self._device.value:
                self._device.on()
                log.info("relay: GPIO%d energised, door unlocked for %.1f s", self.options.pin, seconds)
            self.unlocks += 1
        self._wake.set()

    def lock(self) -> None:
        with self._lock:
            self._deadline = None
            if self._device.value:
                self._device.off()
                log.info("relay: GPIO%d released, door locked", self.options.pin)

    def _timer(self) -> None:
        while not self._closed:
            with self._lock:
                deadline = self._deadline
            if deadline is None:
                self._wake.wait()
            else:
                left = deadline - time.monotonic()
                if left > 0:
                    self._wake.wait(left)
                else:
                    with self._lock:
                        if self._deadline is not None and self._deadline <= time.monotonic():
                            self._deadline = None
                            self._device.off()
                            log.info("relay: GPIO%d released, door locked", self.options.pin)
            self._wake.clear()

    def close(self) -> None:
        self.lock()
        self._closed = True
        self._wake.set()
        self._thread.join(timeout=1.0)
        self._device.close()


class NoRelay:
    """Stands in when no relay is configured: decisions are published, nothing is switched."""

    is_unlocked = False
    unlocks = 0

    def unlock(self, seconds: float | None = None) -> None:
        self.unlocks += 1

    def lock(self) -> None:
        pass

    def close(self) -> None:
        pass


def open_pin_factory(name: str):
    """gpiozero's pin factory named by `[relay] pin_factory` (None: gpiozero's default)."""
    if not name:
        return None
    if name == "mock":
        from gpiozero.pins.mock import MockFactory

        return MockFactory()
    module, cls = {"lgpio": ("gpiozero.pins.lgpio", "LGPIOFactory"),
                   "rpigpio": ("gpiozero.pins.rpigpio", "RPiGPIOFactory"),
                   "pigpio": ("gpiozero.pins.pigpio", "PiGPIOFactory"),
                   "native": ("gpiozero.pins.native", "NativeFactory")}[name]
    import importlib

    try:
        return getattr(importlib.import_module(module), cls)()
    except Exception as exc:
        raise ActuatorError(f"relay.pin_factory = {name!r}: cannot load ({type(exc).__name__}: {exc})") from exc


class PinFactory:
    """The pin factory `[relay] pin_factory` names, one for all of a service's outputs (relay, challenge
    indicator, IR illuminator), opened when the first of them is built (`get()`: the gpiozero factory, None
    for gpiozero's default, itself one per process) and closed by `close()`. One, because each factory of
    lgpio's holds a gpiochip file descriptor: one per reopened camera would run out of them, and pins in
    use are only refused within one factory."""

    def __init__(self, name: str = ""):
        self.name = name
        self._factory = None
        self.opened = 0  # how many times a factory was opened (1 at most until closed)

    def get(self):
        if self.name and self._factory is None:
            self._factory = open_pin_factory(self.name)
            self.opened += 1
        return self._factory

    def close(self) -> None:
        """Release its pins and handle (after the devices on it are closed)."""
        if self._factory is not None:
            self._factory.close()
            self._factory = None


def open_relay(options: RelayOptions, pins: PinFactory | None = None):
    return Relay(options, pins.get() if pins else None) if options.enabled else NoRelay()
