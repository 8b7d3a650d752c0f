"""The near-infrared view: builds with a NoIR camera and an 850 nm illuminator give each frame an IR view of
the same scene (`Frame.ir`, (H, W) uint8), which edge.vision.ir checks for the face.

Two ways to get it (`[ir] mode`):

- **camera**: a second camera behind an IR-pass filter, mounted beside the colour one with the same field of
  view, the illuminator on. One IR frame is taken with each colour frame (`uri`, opened like `[source]`).
- **alternate**: one NoIR camera; the illuminator, on a GPIO output, is switched on for one frame and off for
  the next. The IR view is the lit frame minus the unlit one (grey): what the scene reflects of the
  illuminator alone. A screen's own light is in both frames and cancels; skin and paper reflect the
  illuminator and stay. Every lit frame is yielded (half the camera's rate), with that difference.
  `settle_frames` are dropped after each switch for cameras whose exposure runs a frame behind.

gpiozero drives the pin (imported only in alternate mode), with `[relay] pin_factory`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np

from edge.device.relay import ActuatorError, PinFactory
from edge.device.sources import KINDS, Frame, FrameSource, SourceOptions, open_source
from edge.options import MAX_COUNT, check

log = logging.getLogger(__name__)

MODES = ("camera", "alternate")
SYNC_PAIRS = 10  # alternate mode: lit/unlit pairs per check that the illuminator shows in the lit frames
MIN_SYNC_GAIN = 0.2  # grey levels by which a lit frame's mean must exceed the unlit one's
MIN_SYNC_SHARE = 0.8  # of the pairs in a check (a flickering lamp makes about half of them brighter by chance)


@dataclass(frozen=True)
class IrOptions:
    """The near-infrared view and its liveness check; the `[ir]` config section."""

    enabled: bool = False
    """A NoIR camera and an 850 nm illuminator are fitted: an accept then needs the face to be in the IR view
    too, which a phone or tablet screen (a photo or a replayed video on it) does not show. Prints do."""
    mode: str = "alternate"
    """"alternate": one NoIR camera, the illuminator switched every other frame on `illuminator_pin`;
    "camera": a second camera behind an IR-pass filter (`uri`), the illuminator always on."""
    kind: str = "auto"
    """camera mode: the IR camera's source kind, as `[source] kind`."""
    uri: str = "1"
    """camera mode: the IR camera, as `[source] uri` (e.g. "1" for picamera2 camera 1 or /dev/video1)."""
    illuminator_pin: int = -1
    """alternate mode: BCM number of the GPIO output that switches the illuminator (-1: none)."""
    illuminator_active_high: bool = True
    """alternate mode: True if driving the pin high turns the illuminator on."""
    settle_frames: int = 0
    """alternate mode: frames dropped after each switch (a camera whose exposure lags the switch)."""
    min_presence: float = 0.5
    """The face-landmark model's face-presence score the face needs in the IR view (its own threshold)."""
    min_frames: int = 3
    """Frames with an IR view of the person's face before any verdict from this check."""
    max_frames: int = 15
    """The median over at most this many of the person's latest frames decides."""

    def validate(self) -> IrOptions:
        alternate = self.mode == "alternate"
        return check("ir", self, [
            ("mode", self.mode in MODES, f"one of {', '.join(MODES)}"),
            ("kind", self.kind in KINDS, f"one of {', '.join(KINDS)}"),
            ("uri", bool(self.uri.strip()), "the IR camera: an index, device, URL or picamera2 number"),
            ("illuminator_pin", -1 <= self.illuminator_pin <= 53 and
             (self.illuminator_pin >= 0 or not (self.enabled and alternate)),
             "a BCM GPIO number 0-53 (alternate mode switches the illuminator on it), or -1 for none"),
            ("settle_frames", 0 <= self.settle_frames <= 10, "0-10"),
            ("min_presence", 0.0 < self.min_presence < 1.0, "in (0, 1)"),
            ("min_frames", 1 <= self.min_frames <= MAX_COUNT, f"1-{MAX_COUNT}"),
            ("max_frames", self.min_frames <= self.max_frames <= MAX_COUNT,
             f"min_frames ({self.min_frames}) to {MAX_COUNT}"),
        ])


def grey(image: np.ndarray) -> np.ndarray:
    """(H, W) float32 luminance of an RGB frame (an IR camera's frame is grey in all three channels)."""
    a = np.asarray(image, dtype=np.float32)
    return a if a.ndim == 2 else a @ np.array([0.299, 0.587, 0.114], np.float32)


class IrSource(FrameSource):
    """`source`'s frames, each with its IR view (`Frame.ir`). `ir_camera` (camera mode) is opened from
    `options` when not given; the illuminator's pin (alternate mode) is on `factory` if given, else on
    `pins` (the service's one `PinFactory`), else on gpiozero's default factory."""

    def __init__(self, source: FrameSource, options: IrOptions, ir_camera: FrameSource | None = None,
                 factory=None, pins: PinFactory | None = None, colour: SourceOptions | None = None):
        self.options = options.validate()
        self.source, self.ir_camera, self._light = source, None, None
        self.out_of_sync = False  # alternate mode: the last check found the lit frames no brighter
        self.label = f"{source.label} + IR ({options.mode})"
        if options.mode == "camera":
            size = colour or SourceOptions()
            self.ir_camera = ir_camera or open_source(replace(size, kind=options.kind, uri=options.uri))
            return
        try:
            from gpiozero import DigitalOutputDevice
        except ImportError as exc:
            raise ActuatorError("[ir] mode alternate needs gpiozero for the illuminator (apt install "
                                "python3-gpiozero, or pip install gpiozero)") from exc
        factory = factory if factory is not None else (pins or PinFactory()).get()
        pin = options.illuminator_pin
        try:
            self._light = DigitalOutputDevice(pin, active_high=options.illuminator_active_high,
                                              initial_value=False, pin_factory=factory)
        except Exception as exc:  # gpiozero raises many kinds (no pins, pin in use, not a Pi)
            raise ActuatorError(f"[ir] illuminator on GPIO{pin}: cannot open ({type(exc).__name__}: {exc})") \
                from exc

    def frames(self) -> Iterator[Frame]:
        return self._paired() if self.ir_camera is not None else self._alternating()

    def _paired(self) -> Iterator[Frame]:
        ir_frames = self.ir_camera.frames()
        for frame in self.source.frames():
            ir = next(ir_frames, None)
            yield replace(frame, ir=None if ir is None else np.clip(grey(ir.image), 0, 255).astype(np.uint8))

    def _alternating(self) -> Iterator[Frame]:
        frames = self.source.frames()
        light = self._light

        def take(lit: bool) -> Frame | None:
            light.value = lit
            for _ in range(self.options.settle_frames):
                next(frames, None)
            return next(frames, None)

        index = 0
        gains: list[float] = []
        while True:
            lit = take(True)
            unlit = take(False)
            if lit is None or unlit is None:
                return
            difference = grey(lit.image) - grey(unlit.image)
            gains.append(float(difference.mean()))
            if len(gains) == SYNC_PAIRS:
                self._check_sync(gains)
                gains = []
            yield replace(lit, ir=np.clip(difference, 0, 255).astype(np.uint8), index=index)
            index += 1

    def _check_sync(self, gains: list[float]) -> None:
        """The camera gives no metadata saying whether a frame was exposed with the illuminator on, so the
        frames themselves are the check: lit frames no brighter than unlit ones mean an illuminator that
        does not switch, or a camera that runs a frame behind. The IR view is then empty and every face
        fails the IR check (it fails closed); said once when it starts and once when it ends."""
        gain = float(np.median(gains))
        brighter = sum(g > MIN_SYNC_GAIN for g in gains)
        out_of_sync = brighter < MIN_SYNC_SHARE * len(gains)
        if out_of_sync and not self.out_of_sync:
            o = self.options
            log.warning("ir: the lit frames are no brighter than the unlit ones (%d of %d pairs brighter, median "
                        "%+.2f grey levels): the IR view is empty and faces fail the IR check. Does the "
                        "illuminator on GPIO%d switch ([ir] illuminator_pin, illuminator_active_high = %s)? Does "
                        "the camera lag the switch ([ir] settle_frames = %d: try one more)?", brighter, len(gains),
                        gain, o.illuminator_pin, str(o.illuminator_active_high).lower(), o.settle_frames)
        elif self.out_of_sync and not out_of_sync:
            log.info("ir: the lit frames show the illuminator again (median %+.2f grey levels)", gain)
        self.out_of_sync = out_of_sync

    def close(self) -> None:
        for part in (self.source, self.ir_camera):
            if part is not None:
                part.close()
        if self._light is not None:
            self._light.off()
            self._light.close()
