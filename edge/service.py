"""The service on the lock: source -> pipeline -> match -> decide -> relay -> outbox -> MQTT.

`Service(config).run()` runs until the source ends (an image folder without `loop`), `max_frames` is
reached, or SIGTERM/SIGINT arrives. Then it finishes the frame, flushes the outbox (up to
`shutdown_flush_s`), publishes `offline`, releases the relay, and returns 0.

Robustness: a frame that makes any stage raise is logged (one line) and skipped; a source that fails is
reopened after `source_retry_s`; commands are executed in this loop's thread, between frames, and any error
becomes an error reply. systemd: READY=1 once running, WATCHDOG=1 every half of $WATCHDOG_USEC from the
loop (after each frame, and while waiting to reopen a failed source), so only a loop that is stuck gets
restarted; STOPPING=1 on shutdown; written to $NOTIFY_SOCKET directly, never blocking.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import ConfigError, FacelockError, GalleryError

log = logging.getLogger(__name__)


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
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError(f"service.log_level = {self.log_level!r}: expected DEBUG, INFO, WARNING or ERROR")
        for key in ("shutdown_flush_s", "source_retry_s", "enroll_interval_s"):
            if getattr(self, key) < 0:
                raise ConfigError(f"service.{key} = {getattr(self, key)!r}: expected >= 0")
        if self.max_frames < 0:
            raise ConfigError(f"service.max_frames = {self.max_frames!r}: expected >= 0")
        if not 1 <= self.enroll_frames <= 50:
            raise ConfigError(f"service.enroll_frames = {self.enroll_frames!r}: expected 1-50")
        return self


@dataclass(frozen=True)
class ModelOptions:
    """Which model runs."""

    path: str = ""
    """Model bundle folder (or .tflite embedder); empty: the default model from `facelock models fetch`."""
    num_threads: int = 2
    """Interpreter threads."""

    def validate(self) -> ModelOptions:
        if not 1 <= self.num_threads <= 64:
            raise ConfigError(f"model.num_threads = {self.num_threads!r}: expected 1-64")
        return self


@dataclass(frozen=True)
class GalleryOptions:
    """The enrolment database."""

    path: str = ""
    """SQLite file; empty: $FACELOCK_GALLERY or ~/.local/share/facelock/gallery.db."""


# -- systemd notify -------------------------------------------------------------------------------------------

def sd_notify(message: str) -> bool:
    """Send one sd_notify datagram to $NOTIFY_SOCKET; False when not under systemd or on failure."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        # Non-blocking: a notify socket nobody reads (a full queue) must never stall the frame loop.
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
        return True
    except OSError as exc:
        log.debug("sd_notify %s failed: %s", message, exc)
        return False


def watchdog_interval() -> float | None:
    """Half of $WATCHDOG_USEC in seconds (when it is meant for this process), else None."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 2e6
    except ValueError:
        return None


# -- stats --------------------------------------------------------------------------------------------------

class StageStats:
    """Rolling per-stage latencies and frame rate over the last `size` frames."""

    def __init__(self, size: int = 300):
        self.times: deque[tuple[float, dict[str, float]]] = deque(maxlen=size)
        self.frames = 0
        self.bad_frames = 0
        self.events = 0

    def add(self, now: float, stages: dict[str, float]) -> None:
        self.frames += 1
        self.times.append((now, stages))

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"frames": self.frames, "bad_frames": self.bad_frames, "events": self.events}
        if len(self.times) >= 2:
            span = self.times[-1][0] - self.times[0][0]
            out["fps"] = round((len(self.times) - 1) / span, 2) if span > 0 else None
        latency: dict[str, dict[str, float]] = {}
        names = sorted({k for _, st in self.times for k in st})
        for name in names:
            values = np.array([st[name] for _, st in self.times if name in st])
            latency[name] = {"p50": round(float(np.percentile(values, 50)), 2),
                             "p95": round(float(np.percentile(values, 95)), 2)}
        out["latency_ms"] = latency
        return out


def _stage_dict(times) -> dict[str, float]:
    d = {"detect": times.detect, "align": times.align, "embed": times.embed, "match": times.match}
    d.update(times.extra)
    d["total"] = times.total
    return d


# -- the service --------------------------------------------------------------------------------------------

@dataclass
class _Enrolment:
    name: str
    frames: int
    request_id: str | None
    deadline: float
    taken: list
    last: float = float("-inf")


class Service:
    """Builds every stage from a `Config` and runs the loop. Seams for tests: `components` (detector,
    aligner, embedder) instead of loading the model; `source_factory`; `relay`."""

    def __init__(self, config, components: tuple | None = None,
                 source_factory: Callable[[Any], Any] | None = None, relay=None, install_signals: bool = True):
        self.config = config
        self.options: ServiceOptions = config.service
        self._components = components
        self._source_factory = source_factory
        self._relay = relay
        self._install_signals = install_signals
        self.stopping = False
        self.stats = StageStats()
        self.last_person = "nobody"
        self.last_decision = "none"
        self._enrolment: _Enrolment | None = None
        self.backend = "unknown"

    # -- construction ----------------------------------------------------------------------------------------

    def _build(self) -> None:
        from edge.actuator import NoRelay, open_relay
        from edge.decide import Decider
        from edge.discovery import Discovery
        from edge.gallery import Gallery
        from edge.match import Matcher
        from edge.mqtt import MqttLink
        from edge.outbox import Outbox
        from edge.pipeline import FacePipeline
        from edge.quality import QualityGate

        c = self.config
        if self._components is None:
            from edge.embed import load_pipeline_components

            self._components = load_pipeline_components(c.model.path or None, num_threads=c.model.num_threads)
        detector, aligner, embedder = self._components
        self.backend = _describe_backend(embedder)
        self.gallery = Gallery(c.gallery.path or None)
        self.matcher = Matcher(self.gallery, c.match, space=getattr(embedder, "space", ""))
        self.pipeline = FacePipeline(detector, aligner, embedder, QualityGate(c.quality), self.matcher)
        decide = c.decide
        if not c.is_set("decide", "threshold") and c.model.path and Path(c.model.path).is_dir():
            from dataclasses import replace

            from edge.bundle import load_bundle

            threshold = load_bundle(c.model.path, verify=False).threshold.cosine
            decide = replace(decide, threshold=threshold)
            log.info("decide: threshold %.4f from the bundle", threshold)
        self.decider = Decider(decide)
        self.relay = self._relay if self._relay is not None else open_relay(c.relay)
        self.has_lock = not isinstance(self.relay, NoRelay)
        self.outbox = Outbox(c.outbox)
        self.link = MqttLink(c.mqtt, self.outbox)
        self.discovery = Discovery(c.homeassistant, self.link, self.has_lock).attach()

    def _open_source(self):
        if self._source_factory is not None:
            return self._source_factory(self.config.source)
        from edge.sources import open_source

        return open_source(self.config.source)

    # -- state ------------------------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        locked_until = self.decider.locked_until
        return {"lock": "UNLOCKED" if self.relay.is_unlocked else "LOCKED", "last_person": self.last_person,
                "last_decision": self.last_decision,
                "locked_out": locked_until is not None and locked_until > time.monotonic(),
                "people": len(self.matcher.names), "enrolling": self._enrolment.name if self._enrolment else None,
                # people enrolled with another embedder: left out of matching until enrolled again
                "stale_people": list(self.matcher.snapshot.ignored),
                "backend": self.backend}

    def _publish_state(self) -> None:
        state = self.state()
        self.link.publish_state(state)
        self._state_at = time.monotonic()
        self._published_unlocked = state["lock"] == "UNLOCKED"

    # -- run ---------------------------------------------------------------------------------------------------

    def _on_signal(self, signum, frame) -> None:
        if not self.stopping:
            log.info("service: %s received; finishing the frame and stopping", signal.Signals(signum).name)
        self.stopping = True

    def run(self) -> int:
        logging.getLogger().setLevel(self.options.log_level.upper())
        if self._install_signals:
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
        self._build()
        self.link.start()
        self._publish_state()
        log.info("service: running (device %s, backend %s, %d people, relay %s)", self.config.mqtt.device_id,
                 self.backend, len(self.matcher.names), "on" if self.has_lock else "off")
        sd_notify("READY=1\nSTATUS=running")
        self._watchdog = watchdog_interval()
        self._last_watchdog = self._last_stats = time.monotonic()
        try:
            while not self.stopping:
                try:
                    source = self._open_source()
                except FacelockError as exc:
                    log.error("service: cannot open the source: %s; retrying in %.0f s", exc,
                              self.options.source_retry_s)
                    self._sleep(self.options.source_retry_s)
                    continue
                ended = False
                try:
                    frames = source.frames()
                    while not self.stopping:
                        try:
                            frame = next(frames)
                        except StopIteration:
                            ended = True
                            break
                        self._frame(frame)
                        self._heartbeat()
                        if self.options.max_frames and self.stats.frames + self.stats.bad_frames \
                                >= self.options.max_frames:
                            ended = True
                            break
                except FacelockError as exc:
                    log.error("service: source failed: %s; reopening in %.0f s", exc, self.options.source_retry_s)
                    self._sleep(self.options.source_retry_s)
                finally:
                    try:
                        source.close()
                    except Exception as exc:  # noqa: BLE001 -- a source that fails to close is already done with
                        log.debug("service: closing the source: %s", exc)
                if ended:
                    log.info("service: source ended")
                    break
        finally:
            self._shutdown()
        return 0

    def _heartbeat(self) -> None:
        """The periodic duties of a live loop: the systemd watchdog, stats and the retained state. Called
        after every frame and while waiting for a failed source, so a missing camera does not look like a
        hung process to systemd (restarting would not bring the camera back; MQTT keeps reporting)."""
        now = time.monotonic()
        if self._watchdog and now - self._last_watchdog >= self._watchdog:
            sd_notify("WATCHDOG=1")
            self._last_watchdog = now
        stats_every = self.config.mqtt.stats_interval_s
        if stats_every and now - self._last_stats >= stats_every:
            self._publish_stats()
            self._last_stats = now
        # The relay re-locks on its own timer: tell Home Assistant's lock entity without waiting for a frame
        # that changes something else.
        if now - self._state_at >= self.options.state_interval_s or \
                self.relay.is_unlocked != self._published_unlocked:
            self._publish_state()

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < deadline:
            self._commands()
            self._heartbeat()
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))

    def _shutdown(self) -> None:
        sd_notify("STOPPING=1")
        log.info("service: stopping after %d frames (%d bad), %d events", self.stats.frames,
                 self.stats.bad_frames, self.stats.events)
        relay = getattr(self, "relay", None)
        if relay is not None:
            relay.lock()
        link = getattr(self, "link", None)
        if link is not None:
            self._publish_state()
            link.close(flush_timeout=self.options.shutdown_flush_s)
            self.outbox.close()
        if relay is not None:
            relay.close()
        if getattr(self, "gallery", None) is not None:
            self.gallery.close()

    def _publish_stats(self) -> None:
        stats = self.stats.summary()
        stats.update(backend=self.backend, outbox_pending=len(self.outbox), outbox_dropped=self.outbox.dropped)
        self.link.publish_stats(stats)

    # -- one frame ------------------------------------------------------------------------------------------

    def _frame(self, frame) -> None:
        from edge.decide import Outcome

        self._commands()
        start = time.monotonic()
        try:
            image = frame.image
            if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 \
                    or image.shape[2] != 3 or min(image.shape[:2]) < 8:
                raise ValueError(f"expected an (H, W, 3) uint8 frame, got {getattr(image, 'shape', None)} "
                                 f"{getattr(image, 'dtype', type(image).__name__)}")
            analysis = self.pipeline.process(image)
        except Exception as exc:  # noqa: BLE001 -- a bad frame never stops the service
            self.stats.bad_frames += 1
            log.warning("service: frame %s skipped: %s: %s", getattr(frame, "label", "?"), type(exc).__name__, exc)
            return
        self.stats.add(start, _stage_dict(analysis.times))
        if self._enrolment is not None:
            self._enrol_frame(analysis, frame.timestamp)
            return
        decision = self.decider.update(analysis.match if analysis.usable else None, frame.timestamp)
        latency = (time.monotonic() - start) * 1e3
        changed = False
        if decision.outcome is Outcome.ACCEPT:
            self.relay.unlock()
            self.last_person = decision.person or "unknown"
            changed = True
        if decision.outcome in (Outcome.ACCEPT, Outcome.REJECT):
            self.last_decision = decision.outcome.value
            self._event(decision, latency)
            changed = True
        for ev in decision.events:
            self._lockout_event(ev)
            changed = True
        if changed:
            self._publish_state()

    def _event(self, decision, latency_ms: float) -> None:
        from edge.decide import Outcome
        from edge.mqtt import RecognitionEvent

        accept = decision.outcome is Outcome.ACCEPT
        event = RecognitionEvent(
            event_type="recognized" if accept else ("rejected" if decision.person else "unknown"),
            person=decision.person if accept and decision.person else "unknown",
            decision=decision.outcome.value, score=decision.score, latency_ms=latency_ms,
            reason=decision.reason, candidate=None if accept else decision.person,
            retry_after_s=decision.retry_after_s or None, device=self.config.mqtt.device_id)
        self._send(event)

    def _lockout_event(self, ev) -> None:
        from edge.mqtt import RecognitionEvent

        self._send(RecognitionEvent(event_type=ev.kind, person="unknown", decision=ev.kind,
                                    reason=f"level {ev.level}, {ev.duration_s:.0f} s",
                                    retry_after_s=round(max(0.0, ev.until - ev.time), 1) if ev.kind == "lockout"
                                    else None, device=self.config.mqtt.device_id))

    def _send(self, event) -> None:
        try:
            self.link.publish_event(event)
            self.stats.events += 1
            log.info("event %s: %s %s (%s)", event.id, event.event_type, event.person, event.reason)
        except FacelockError as exc:
            log.error("event %s not stored: %s", event.id, exc)

    # -- commands -------------------------------------------------------------------------------------------

    def _commands(self) -> None:
        import queue

        link = getattr(self, "link", None)
        if link is None:
            return
        while True:
            try:
                command = link.commands.get_nowait()
            except queue.Empty:
                return
            try:
                result = self.execute(command)
                if result is not None:
                    link.reply(command.name, command.request_id, ok=True, result=result)
            except FacelockError as exc:
                log.warning("service: command %s failed: %s", command.name, exc)
                link.reply(command.name, command.request_id, ok=False, error=str(exc))
            except Exception as exc:  # a command never stops the service
                log.exception("service: command %s crashed", command.name)
                link.reply(command.name, command.request_id, ok=False, error=f"{type(exc).__name__}: {exc}")

    def execute(self, command) -> dict[str, Any] | None:
        """Run one validated command; the result for the reply (None: the reply comes later)."""
        if command.name == "reload":
            self.matcher.refresh(force=True)
            self._publish_state()
            return {"people": len(self.matcher.names), "revision": self.matcher.revision}
        if command.name == "remove":
            name = command.args["name"]
            known = {n.casefold(): n for n in self.matcher.names} | {p.name.casefold(): p.name
                                                                      for p in self.gallery.people()}
            if name.casefold() not in known:
                raise GalleryError(f"remove: unknown person {name!r}")
            removed = self.gallery.remove(known[name.casefold()])
            self.matcher.refresh(force=True)
            self._publish_state()
            return {"removed": known[name.casefold()], "templates": removed}
        if command.name == "enroll":
            if self._enrolment is not None:
                raise FacelockError(f"enroll: already enrolling {self._enrolment.name!r}")
            frames = command.args.get("frames", self.options.enroll_frames)
            self._enrolment = _Enrolment(command.args["name"], frames, command.request_id,
                                         time.monotonic() + self.options.enroll_timeout_s, [])
            log.info("service: enrolling %s from the next %d usable frames", command.args["name"], frames)
            self._publish_state()
            return None
        if command.name == "lock":
            action = command.args["action"]
            if not self.has_lock:
                raise FacelockError("lock: no relay configured (relay.enabled = false)")
            if action == "LOCK":
                self.relay.lock()
            else:
                self.relay.unlock()
            log.info("service: remote %s", action)
            self._publish_state()
            return {"lock": "UNLOCKED" if self.relay.is_unlocked else "LOCKED"}
        raise FacelockError(f"unknown command {command.name!r}")

    def _enrol_frame(self, analysis, timestamp: float) -> None:
        e = self._enrolment
        now = time.monotonic()
        min_px = self.pipeline.quality.options.min_face_px
        big = [f for f in analysis.faces if min(f.width, f.height) >= min_px]
        if analysis.usable and len(big) <= 1 and timestamp - e.last >= self.options.enroll_interval_s:
            e.taken.append(analysis.embedding)
            e.last = timestamp
        if len(e.taken) >= e.frames:
            self._enrolment = None
            try:
                added = self.gallery.enroll(e.name, np.stack(e.taken), model=self.matcher.space)
                self.matcher.refresh(force=True)
                log.info("service: enrolled %s (%d templates)", e.name, added)
                self.link.reply("enroll", e.request_id, ok=True, result={"name": e.name, "templates": added})
            except FacelockError as exc:
                self.link.reply("enroll", e.request_id, ok=False, error=str(exc))
            self._publish_state()
        elif now > e.deadline:
            self._enrolment = None
            log.warning("service: enrolment of %s timed out with %d of %d frames", e.name, len(e.taken), e.frames)
            self.link.reply("enroll", e.request_id, ok=False,
                            error=f"enroll {e.name!r}: only {len(e.taken)} of {e.frames} usable frames within "
                                  f"{self.options.enroll_timeout_s:g} s; nothing enrolled")
            self._publish_state()


def _describe_backend(embedder) -> str:
    interp = getattr(embedder, "interpreter", None)
    description = getattr(interp, "description", None)
    if isinstance(description, str):
        return description
    return getattr(embedder, "name", type(embedder).__name__)

