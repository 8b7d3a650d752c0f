"""The service's own config sections: `[service]` (the loop), `[model]` (which model runs) and `[gallery]`.

The stages' sections (`[detector]`, `[match]`, `[relay]`, `[mqtt]`, ...) live with their stages; these three
belong to no stage, only to the service that composes them, so they live here. Kept apart from
`edge.service.loop` so that reading or checking a config (`facelock run --check`, the example config) does
not import the stages.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge.options import DAY_S, HOUR_S, MINUTE_S, check

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


@dataclass(frozen=True)
class ServiceOptions:
    """The service loop."""

    log_level: str = "INFO"
    """DEBUG, INFO, WARNING or ERROR."""
    max_frames: int = 0
    """Stop after this many frames (0: run until stopped; for tests and demos)."""
    shutdown_flush_s: float = 5.0
    """On shutdown, wait at most this long for waiting events to be acknowledged by the broker."""
    source_retry_s: float = 5.0
    """After the frame source fails, wait this long before opening it again."""
    state_interval_s: float = 300.0
    """Publish the retained state at least this often (it is also published on every change)."""
    enroll_timeout_s: float = 60.0
    """An enrolment started by command gives up after this many seconds without enough usable frames."""
    enroll_frames: int = 5
    """Frames an enrolment command collects when it does not say."""
    enroll_interval_s: float = 0.3
    """Enrolment frames are at least this far apart."""

    def validate(self) -> ServiceOptions:
        """Raise ConfigError naming the first field out of range."""
        return check("service", self, [
            ("log_level", self.log_level.upper() in LOG_LEVELS, "DEBUG, INFO, WARNING or ERROR"),
            ("shutdown_flush_s", 0 <= self.shutdown_flush_s <= HOUR_S, "0-3600 seconds"),
            ("source_retry_s", 0 <= self.source_retry_s <= HOUR_S, "0-3600 seconds"),
            ("state_interval_s", 0 < self.state_interval_s <= DAY_S, "0 < seconds <= 86400"),
            ("enroll_timeout_s", 0 < self.enroll_timeout_s <= HOUR_S, "0 < seconds <= 3600"),
            ("enroll_interval_s", 0 <= self.enroll_interval_s <= MINUTE_S, "0-60 seconds"),
            ("max_frames", 0 <= self.max_frames <= 10**12, "0-10**12"),
            ("enroll_frames", 1 <= self.enroll_frames <= 50, "1-50"),
        ])


@dataclass(frozen=True)
class ModelOptions:
    """Which model runs."""

    path: str = ""
    """Model bundle folder (or .tflite embedder); empty: the default model from `facelock models fetch`."""
    num_threads: int = 2
    """Interpreter threads."""

    def validate(self) -> ModelOptions:
        """Raise ConfigError when num_threads is out of range."""
        return check("model", self, [("num_threads", 1 <= self.num_threads <= 64, "1-64")])


@dataclass(frozen=True)
class GalleryOptions:
    """The enrolment database."""

    path: str = ""
    """SQLite file; empty: $FACELOCK_GALLERY or ~/.local/share/facelock/gallery.db."""
