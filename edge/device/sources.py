"""Frame sources: the Raspberry Pi camera (picamera2), anything OpenCV opens (USB camera index, video file,
RTSP/HTTP URL), and a folder of images replayed at a given rate. Every source yields `Frame`s holding
uint8 RGB arrays (H, W, 3) and a monotonic timestamp; colour order is fixed here, once, so nothing
downstream ever sees BGR.

    with open_source(SourceOptions(kind="folder", uri="demo/", fps=5)) as source:
        for frame in source.frames():
            ...

Failures raise SourceError naming the device, file or URL. In a folder, an image that cannot be decoded
is logged and skipped, never fatal. A live camera or stream that stops delivering is reopened up to
`reconnect_attempts` times before SourceError.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import numpy as np

from edge.errors import ImageError, SourceError
from edge.images import read_image_rgb
from edge.options import HOUR_S, MAX_PX, check

log = logging.getLogger(__name__)

KINDS = ("auto", "picamera2", "opencv", "folder")
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm"})
PICAMERA_FORMATS = ("RGB888", "BGR888", "XBGR8888", "XRGB8888")


@dataclass(frozen=True)
class SourceOptions:
    """Where frames come from."""

    kind: str = "auto"
    """"picamera2", "opencv", "folder", or "auto" (a folder path -> folder; "picamera2" -> picamera2;
    anything else -> opencv)."""
    uri: str = "picamera2"
    """What to open: a camera index ("0"), a video file, an rtsp:// or http:// URL, an image folder, or
    for picamera2 the camera number (the word "picamera2" means camera 0)."""
    width: int = 640
    """Requested frame width in pixels (cameras; files and folders keep their own size)."""
    height: int = 480
    """Requested frame height in pixels (cameras; files and folders keep their own size)."""
    fps: float = 10.0
    """Cameras: requested frame rate. Folders and video files: replay rate (0 = as fast as possible)."""
    loop: bool = False
    """Folders and video files: start again from the beginning at the end."""
    picamera_format: str = "RGB888"
    """picamera2 pixel format: RGB888 (BGR in memory), BGR888 (RGB in memory), XBGR8888, XRGB8888."""
    reconnect_attempts: int = 3
    """Live cameras and streams: how many times to reopen after reads fail, before giving up."""
    reconnect_delay_s: float = 2.0
    """Seconds to wait before each reopen."""

    def validate(self) -> SourceOptions:
        """Raise ConfigError naming the first field out of range."""
        return check("source", self, [
            ("kind", self.kind in KINDS, f"one of {', '.join(KINDS)}"),
            ("uri", bool(self.uri.strip()), "a camera index, file, URL, folder or 'picamera2'"),
            ("width", 0 < self.width <= MAX_PX, f"1-{MAX_PX} pixels"),
            ("height", 0 < self.height <= MAX_PX, f"1-{MAX_PX} pixels"),
            ("fps", self.fps == 0 or 0.001 <= self.fps <= 1000, "0 (as fast as possible) or 0.001-1000"),
            ("picamera_format", self.picamera_format in PICAMERA_FORMATS, f"one of {', '.join(PICAMERA_FORMATS)}"),
            ("reconnect_attempts", 0 <= self.reconnect_attempts <= 10**6, "0-1000000"),
            ("reconnect_delay_s", 0 <= self.reconnect_delay_s <= HOUR_S, "0-3600 seconds"),
        ])


@dataclass(frozen=True, eq=False)
class Frame:
    image: np.ndarray  # (H, W, 3) uint8 RGB
    timestamp: float  # time.monotonic() when the frame was obtained
    index: int  # 0, 1, 2 ... in the order yielded
    label: str  # where it came from: file name, device, URL
    ir: np.ndarray | None = None  # (H, W) uint8: the near-infrared view of the same scene (edge.device.ir)


def picamera_to_rgb(array: np.ndarray, fmt: str) -> np.ndarray:
    """A picamera2 `capture_array` result -> (H, W, 3) RGB. libcamera names formats after a 32-bit word,
    so memory order is reversed: "RGB888" is B, G, R in memory, "BGR888" is R, G, B; "XBGR8888" is
    R, G, B, X and "XRGB8888" is B, G, R, X."""
    a = np.asarray(array)
    channels = {"RGB888": 3, "BGR888": 3, "XBGR8888": 4, "XRGB8888": 4}.get(fmt)
    if channels is None:
        raise SourceError(f"picamera2 format {fmt!r}: expected one of {', '.join(PICAMERA_FORMATS)}")
    if a.ndim != 3 or a.shape[2] != channels or a.dtype != np.uint8:
        raise SourceError(f"picamera2 {fmt} frame: expected (H, W, {channels}) uint8, got {a.shape} {a.dtype}")
    if fmt == "BGR888":
        return np.ascontiguousarray(a)
    if fmt == "XBGR8888":
        return np.ascontiguousarray(a[:, :, :3])
    return np.ascontiguousarray(a[:, :, 2::-1])  # RGB888 and XRGB8888: B, G, R first in memory


class _Pacer:
    """Sleeps so that successive frames are at least 1/fps apart (monotonic clock). `wait` returns the time
    it ended, which is the frame's timestamp: the next frame is due a period after it, not after the time it
    was due, so a late wake-up (a loaded board oversleeps by milliseconds) delays the replay and never
    squeezes two frames closer than the rate says."""

    def __init__(self, fps: float):
        self.period = 1.0 / fps if fps > 0 else 0.0
        self.next = time.monotonic()

    def wait(self) -> float:
        now = time.monotonic()
        if not self.period:
            return now
        if self.next > now:
            time.sleep(self.next - now)
            now = time.monotonic()
        self.next = now + self.period
        return now


class FrameSource:
    """Base: `frames()` yields Frames; `close()` frees the device. A context manager."""

    label = "source"

    def frames(self) -> Iterator[Frame]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class FolderSource(FrameSource):
    """Images of a folder in name order, replayed at `fps`; undecodable files are logged and skipped."""

    def __init__(self, options: SourceOptions):
        self.options = options
        self.path = Path(options.uri)
        if not self.path.is_dir():
            raise SourceError(f"image folder {self.path}: not a folder")
        try:
            self.files = sorted(p for p in self.path.iterdir()
                                if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        except OSError as exc:
            raise SourceError(f"image folder {self.path}: cannot list it ({exc.strerror})") from exc
        if not self.files:
            raise SourceError(f"image folder {self.path}: no images (expected {', '.join(sorted(IMAGE_SUFFIXES))})")
        self.label = str(self.path)
        self.skipped: list[Path] = []

    def _read(self, path: Path) -> np.ndarray | None:
        """The image, or None after a log line saying why it was skipped (one warning per file; on later
        passes of `loop` a debug line). edge.images reads the header before decoding: a file claiming
        40000 x 40000 pixels is refused, never decoded."""
        try:
            return read_image_rgb(path)
        except ImageError as exc:
            reason = str(exc).removeprefix(f"{path}: ")
            log.log(logging.DEBUG if path in self.skipped else logging.WARNING, "%s: skipped, %s", path, reason)
            if path not in self.skipped:
                self.skipped.append(path)
            return None

    def frames(self) -> Iterator[Frame]:
        pacer = _Pacer(self.options.fps)
        index = 0
        while True:
            good = 0
            for path in self.files:
                image = self._read(path)
                if image is None:
                    continue
                good += 1
                yield Frame(image, pacer.wait(), index, path.name)
                index += 1
            if not good:
                raise SourceError(f"image folder {self.path}: none of its {len(self.files)} images could be decoded")
            if not self.options.loop:
                return


class OpenCVSource(FrameSource):
    """cv2.VideoCapture on a camera index, a video file or a stream URL; BGR is converted to RGB."""

    def __init__(self, options: SourceOptions):
        import cv2

        self.options = options
        self.uri = options.uri
        self.is_index = options.uri.strip().isdigit()
        self.is_file = not self.is_index and "://" not in options.uri
        if self.is_file and not Path(options.uri).is_file():
            raise SourceError(f"video file {options.uri}: no such file")
        self.label = f"camera {options.uri}" if self.is_index else options.uri
        self._cv2 = cv2
        self.cap = self._open()

    def _open(self):
        cv2 = self._cv2
        target = int(self.uri) if self.is_index else self.uri
        cap = cv2.VideoCapture(target)
        if not cap.isOpened():
            cap.release()
            what = "camera index" if self.is_index else "video file" if self.is_file else "stream"
            raise SourceError(f"{what} {self.uri}: OpenCV cannot open it"
                              + (" (is the camera connected, and is the user in group 'video'?)"
                                 if self.is_index else ""))
        if not self.is_file:
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # live: the newest frame, not a backlog
            if self.is_index:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.options.width)
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.options.height)
                if self.options.fps > 0:
                    cap.set(cv2.CAP_PROP_FPS, self.options.fps)
        return cap

    def frames(self) -> Iterator[Frame]:
        cv2 = self._cv2
        pacer = _Pacer(self.options.fps if self.is_file else 0.0)
        index = 0
        failures = 0
        while True:
            try:
                ok, bgr = self.cap.read()
            except Exception as exc:  # noqa: BLE001 -- a decoder error in one read is a failed read
                log.warning("%s: read failed (%s: %s)", self.label, type(exc).__name__, exc)
                ok, bgr = False, None
            if not ok or bgr is None:
                if self.is_file:
                    if self.options.loop and index > 0:
                        self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                        continue
                    if index == 0:
                        raise SourceError(f"video file {self.uri}: no frame could be decoded")
                    return
                failures += 1
                if failures > self.options.reconnect_attempts:
                    raise SourceError(f"{self.label}: no frames after {self.options.reconnect_attempts} reconnects")
                log.warning("%s: read failed, reopening in %.0f s (%d/%d)", self.label,
                            self.options.reconnect_delay_s, failures, self.options.reconnect_attempts)
                self.cap.release()
                time.sleep(self.options.reconnect_delay_s)
                try:
                    self.cap = self._open()
                except SourceError as exc:
                    log.warning("%s", exc)
                continue
            failures = 0
            rgb = _bgr_to_rgb(cv2, bgr)
            if rgb is None:
                log.warning("%s: frame %d skipped: %s %s is not a BGR, BGRA or grey image", self.label, index,
                            getattr(bgr, "shape", None), getattr(bgr, "dtype", type(bgr).__name__))
                continue
            yield Frame(rgb, pacer.wait(), index, self.label)
            index += 1

    def close(self) -> None:
        self.cap.release()


def _bgr_to_rgb(cv2, bgr) -> np.ndarray | None:
    """An OpenCV frame (BGR, BGRA or grey, uint8) as RGB; None for anything else."""
    if not isinstance(bgr, np.ndarray) or bgr.dtype != np.uint8 or bgr.size == 0:
        return None
    channels = 1 if bgr.ndim == 2 else bgr.shape[2] if bgr.ndim == 3 else 0
    code = {1: cv2.COLOR_GRAY2RGB, 3: cv2.COLOR_BGR2RGB, 4: cv2.COLOR_BGRA2RGB}.get(channels)
    if code is None:
        return None
    try:
        return cv2.cvtColor(bgr, code)
    except cv2.error:
        return None


class PiCameraSource(FrameSource):
    """The Raspberry Pi camera through picamera2 (from apt: python3-picamera2; a venv needs
    --system-site-packages). Imported only when this source is opened."""

    def __init__(self, options: SourceOptions):
        if options.picamera_format not in PICAMERA_FORMATS:
            raise SourceError(f"picamera_format {options.picamera_format!r}: expected one of "
                              f"{', '.join(PICAMERA_FORMATS)}")
        uri = options.uri.strip().lower()
        try:
            self.camera_num = 0 if uri in ("", "picamera2", "picamera") else int(uri)
        except ValueError:
            raise SourceError(f"picamera2 camera {options.uri!r}: expected a camera number") from None
        self.options = options
        self.label = f"picamera2 camera {self.camera_num}"
        try:
            from picamera2 import Picamera2
        except ImportError as exc:
            raise SourceError(
                f"{self.label}: picamera2 is not importable ({exc}); install python3-picamera2 with apt and "
                "create the virtualenv with --system-site-packages"
            ) from exc
        try:
            self.camera = Picamera2(self.camera_num)
            controls = {"FrameRate": float(options.fps)} if options.fps > 0 else {}
            config = self.camera.create_preview_configuration(
                main={"format": options.picamera_format, "size": (options.width, options.height)},
                controls=controls,
            )
            self.camera.configure(config)
            self.camera.start()
        except Exception as exc:  # libcamera raises RuntimeError, IndexError, ... for a missing camera
            raise SourceError(f"{self.label}: cannot start ({type(exc).__name__}: {exc})") from exc

    def frames(self) -> Iterator[Frame]:
        index = 0
        while True:
            try:
                array = self.camera.capture_array("main")
            except Exception as exc:
                raise SourceError(f"{self.label}: capture failed ({type(exc).__name__}: {exc})") from exc
            yield Frame(picamera_to_rgb(array, self.options.picamera_format), time.monotonic(), index, self.label)
            index += 1

    def close(self) -> None:
        try:
            self.camera.stop()
            self.camera.close()
        except Exception as exc:  # noqa: BLE001 -- closing a half-started camera must not hide the first error
            log.debug("%s: close failed: %s", self.label, exc)


def open_source(options: SourceOptions) -> FrameSource:
    """The source `options` describe; SourceError naming the device/path if it cannot be opened."""
    kind = options.kind
    if kind not in KINDS:
        raise SourceError(f"source kind {kind!r}: expected one of {', '.join(KINDS)}")
    options.validate()
    if kind == "auto":
        uri = options.uri.strip()
        if uri.lower() in ("picamera2", "picamera"):
            kind = "picamera2"
        elif os.path.isdir(uri):
            kind = "folder"
        else:
            kind = "opencv"
    if kind == "folder":
        return FolderSource(options)
    if kind == "picamera2":
        return PiCameraSource(options)
    return OpenCVSource(options)
