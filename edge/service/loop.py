"""The service on the lock: source -> pipeline -> match -> decide -> relay -> outbox -> MQTT.

`Service(config).run()` runs until the source ends (an image folder without `loop`), `max_frames` is
reached, or SIGTERM/SIGINT arrives. Then it finishes the frame, flushes the outbox (up to
`shutdown_flush_s`), publishes `offline`, releases the relay, and returns 0.

Robustness: a frame that makes any stage raise is logged (one line) and skipped; a source that fails is
reopened after `source_retry_s`; commands are executed in this loop's thread, between frames, and any error
becomes an error reply. systemd: READY=1 once running, WATCHDOG=1 every half of $WATCHDOG_USEC from the
loop (after each frame, and while waiting to reopen a failed source), so only a loop that is stuck gets
restarted; STOPPING=1 on shutdown (`edge.device.systemd`).

This module composes the stages and runs the loop; the jobs it hands out live next to it: the config
sections of its own in `edge.service.options`, executing commands (and the `enroll` that spans frames) in
`edge.service.commands`, the events it reports in `edge.service.events`, the stats in `edge.service.stats`.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edge.device.indicator import NoIndicator, open_indicator
from edge.device.ir import IrSource
from edge.device.relay import NoRelay, PinFactory, open_relay
from edge.device.sources import open_source
from edge.device.systemd import sd_notify, watchdog_interval
from edge.errors import FacelockError
from edge.identity.decide import Decider, Outcome
from edge.identity.gallery import Gallery
from edge.identity.lockout_store import LockoutStore
from edge.identity.match import Matcher
from edge.models.bundle import Bundle, load_bundle
from edge.mqtt.discovery import Discovery, offers_lock_entity
from edge.mqtt.link import MqttLink
from edge.mqtt.outbox import Outbox
from edge.mqtt.signing import open_verifier
from edge.service.commands import Commands
from edge.service.events import Events
from edge.service.operating_point import operating_point
from edge.service.options import ServiceOptions
from edge.service.stats import StageStats, delivery_state, delivery_stats, delivery_version, stage_dict
from edge.vision.build import Stages, bundle_stages, liveness_judge, load_pipeline_components
from edge.vision.pipeline import FacePipeline
from edge.vision.quality import QualityGate

log = logging.getLogger(__name__)


def is_bundle(path: Path) -> bool:
    """A model bundle (folder or archive) rather than a bare embedder file, judged the way
    `edge.vision.build.load_pipeline_components` judges it."""
    return path.is_dir() or path.name.endswith((".tar.gz", ".tgz"))


class Service:
    """Builds every stage from a `Config` and runs the loop. Seams for tests: `components` (detector,
    aligner, embedder) instead of loading the model; `source_factory`; `relay`.

    The stages are built when `run()` starts, not here, so a `Service` can be made (and its config checked)
    without loading a model or opening the gallery; until then they are None."""

    def __init__(self, config, components: Stages | tuple | None = None,
                 source_factory: Callable[[Any], Any] | None = None, relay=None, install_signals: bool = True,
                 indicator=None):
        self.config = config
        self.options: ServiceOptions = config.service
        self._components = components
        self._source_factory = source_factory
        self._relay = relay
        self._indicator = indicator
        self._install_signals = install_signals
        self.stopping = False
        self.stats = StageStats()
        self.last_person = "nobody"
        self.last_decision = "none"
        self.backend = "unknown"
        # Built by `_build` when run() starts:
        self.gallery: Gallery | None = None
        self.matcher: Matcher | None = None
        self.pipeline: FacePipeline | None = None
        self.decider: Decider | None = None
        self.relay = None
        self.indicator = None
        self.pins = PinFactory(config.relay.pin_factory)  # the GPIO outputs' one factory, opened when needed
        self.has_lock = False
        self.outbox: Outbox | None = None
        self.link: MqttLink | None = None
        self.events: Events | None = None
        self.commands: Commands | None = None
        self.discovery: Discovery | None = None
        # The loop's clocks (monotonic seconds): the watchdog period (None: no watchdog), when the watchdog,
        # the stats and the state were last sent, and the lock state last published.
        self._watchdog: float | None = None
        self._last_watchdog = self._last_stats = self._state_at = 0.0
        self._published_unlocked = False
        self._published_delivery = (0, 0, 0)  # delivery_version of the last state published

    # -- construction ----------------------------------------------------------------------------------------

    def _build(self) -> None:
        c = self.config
        stages, bundle = self._load_model()
        detector, aligner, embedder = stages
        self.backend = _describe_backend(embedder)
        self.gallery = Gallery(c.gallery.path or None)
        self.matcher = Matcher(self.gallery, c.match, space=getattr(embedder, "space", ""))
        landmarker = getattr(stages, "landmarker", None)
        # samples per frame, judged by the decider: the passive checks, the challenge, or both
        antispoof = getattr(stages, "antispoof", None)
        if c.antispoof.enabled and c.is_set("antispoof", "enabled") and antispoof is None:
            log.warning("service: [antispoof] enabled, but the model %s carries no anti-spoofing CNN "
                        "(facelock convert --antispoof): that layer is absent", c.model.path or "(default)")
        liveness = liveness_judge(c.liveness, c.challenge, landmarker, antispoof, c.antispoof, c.ir)
        decide, quality = operating_point(c, bundle)  # thresholds and the contrast gate: config or bundle
        self.pipeline = FacePipeline(detector, aligner, embedder, QualityGate(quality), self.matcher,
                                     landmarker=landmarker, near_detector=getattr(stages, "near_detector", None),
                                     liveness=liveness)
        # failed attempts and the lockout survive restarts and power cuts (edge.identity.lockout_store)
        self.decider = Decider(decide, LockoutStore(c.decide.state_path or None), liveness)
        self.relay = self._relay if self._relay is not None else open_relay(c.relay, self.pins)
        self.indicator = self._indicator if self._indicator is not None else \
            open_indicator(c.challenge.indicator_pin if c.challenge.enabled else -1,
                           c.challenge.indicator_active_high, self.pins)
        self.has_lock = not isinstance(self.relay, NoRelay)
        self.outbox = Outbox(c.outbox)
        self.link = MqttLink(c.mqtt, self.outbox)
        self.events = Events(self.link, self.stats, c.mqtt.device_id, c.mqtt.reveal_candidates)
        # signed commands: the key, and the used nonces in the state directory (next to the outbox)
        verifier = open_verifier(c.mqtt.command_key_file, self.outbox.path.with_name("command-nonces.json"))
        self.commands = Commands(self.options, self.link, self.gallery, self.matcher, self.relay, self.has_lock,
                                 self.pipeline.quality.options.min_face_px, self._publish_state, self.events,
                                 verifier, c.mqtt.unsigned_unlock, lambda: bool(self.state()["locked_out"]))
        self.discovery = Discovery(c.homeassistant, self.link, offers_lock_entity(c.mqtt, self.has_lock),
                                   challenge_actions=c.challenge.actions if c.challenge.enabled else ()).attach()

    def _load_model(self) -> tuple[Stages | tuple, Bundle | None]:
        """The detector, aligner and embedder, and the bundle they came from (None for a bare model). The
        bundle is opened, and its checksums verified, once: the stages and the threshold come from the same
        copy. `[detector]` goes to the detector; `[model] num_threads` to every interpreter."""
        model = self.config.model
        bundle = None
        if model.path and is_bundle(Path(model.path)):
            # With stages handed in (tests) the bundle is read for its threshold only: no need to verify.
            bundle = load_bundle(model.path, verify=self._components is None)
        if self._components is not None:
            return self._components, bundle
        if bundle is not None:
            return bundle_stages(bundle, model.num_threads, self.config.detector,
                                 landmark_options=self.config.landmarks), bundle
        stages = load_pipeline_components(model.path or None, num_threads=model.num_threads,
                                          detector_options=self.config.detector,
                                          landmark_options=self.config.landmarks)
        return stages, None

    def _open_source(self):
        c = self.config
        source = self._source_factory(c.source) if self._source_factory is not None else open_source(c.source)
        if not c.ir.enabled:
            return source
        try:  # each frame gets its near-infrared view (edge.device.ir)
            return IrSource(source, c.ir, pins=self.pins, colour=c.source)
        except BaseException:
            source.close()
            raise

    # -- state ------------------------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """The retained state message (Home Assistant's lock and sensors read it)."""
        locked_until = self.decider.locked_until
        enrolment = self.commands.enrolment
        return {"lock": "UNLOCKED" if self.relay.is_unlocked else "LOCKED", "last_person": self.last_person,
                "last_decision": self.last_decision,
                "locked_out": locked_until is not None and locked_until > time.monotonic(),
                "people": len(self.matcher.names), "enrolling": enrolment.name if enrolment else None,
                # people enrolled with another embedder: left out of matching until enrolled again
                "stale_people": list(self.matcher.snapshot.ignored),
                "backend": self.backend, **delivery_state(self.outbox, self.link)}

    def _publish_state(self) -> None:
        delivery = delivery_version(self.outbox, self.link)  # before the state: a change after it shows next time
        state = self.state()
        self.link.publish_state(state)
        self._state_at = time.monotonic()
        self._published_unlocked = state["lock"] == "UNLOCKED"
        self._published_delivery = delivery

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
                except Exception as exc:  # noqa: BLE001 -- SourceError, or a camera driver's own error
                    log.error("service: cannot open the source: %s; retrying in %.0f s", _why(exc),
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
                        try:
                            self._frame(frame)
                        except Exception:  # nothing one frame does (decide, relay, events) stops the lock
                            self.stats.bad_frames += 1
                            log.exception("service: frame %s failed", getattr(frame, "label", "?"))
                        self._heartbeat()
                        if self.options.max_frames and self.stats.frames + self.stats.bad_frames \
                                >= self.options.max_frames:
                            ended = True
                            break
                except Exception as exc:  # noqa: BLE001 -- SourceError, or a decoder's own (cv2.error, ...)
                    log.error("service: source failed: %s; reopening in %.0f s", _why(exc),
                              self.options.source_retry_s)
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
        # that changes something else. Likewise a topic the broker starts or stops refusing, a drop at the cap.
        if now - self._state_at >= self.options.state_interval_s or \
                self.relay.is_unlocked != self._published_unlocked or \
                delivery_version(self.outbox, self.link) != self._published_delivery:
            self._publish_state()

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < deadline:
            self._commands()
            self._heartbeat()
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))

    def _shutdown(self) -> None:
        sd_notify("STOPPING=1")
        log.info("service: stopping after %d frames (%d bad, %d faces decided without the mirror run), %d events",
                 self.stats.frames, self.stats.bad_frames, self.stats.embedded_once, self.stats.events)
        if self.relay is not None:
            self.relay.lock()
        if self.link is not None:
            self._publish_state()
            self.link.close(flush_timeout=self.options.shutdown_flush_s)
        if self.outbox is not None:
            self.outbox.close()
        for output in (self.relay, self.indicator, self.pins):  # the factory last: its devices are closed
            if output is not None:
                output.close()
        if self.gallery is not None:
            self.gallery.close()

    def _publish_stats(self) -> None:
        stats = self.stats.summary()
        stats.update(backend=self.backend, **delivery_stats(self.outbox, self.link))
        if self.commands is not None:  # refused commands a flood left without an audit event of their own
            stats["commands_unaudited"] = self.commands.refusals.unaudited_total
        self.link.publish_stats(stats)

    def _commands(self) -> None:
        if self.commands is not None:
            try:
                self.commands.poll()
            except Exception:  # a failed reply or audit (broker, outbox) never stops the lock
                log.exception("service: handling a command failed")

    # -- one frame ------------------------------------------------------------------------------------------

    def _frame(self, frame) -> None:
        self._commands()
        start = time.monotonic()
        settled = self.decider.settled if self.commands.enrolment is None else None  # enrolling: whole embeddings
        try:
            image = frame.image
            if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 \
                    or image.shape[2] != 3 or min(image.shape[:2]) < 8:
                raise ValueError(f"expected an (H, W, 3) uint8 frame, got {getattr(image, 'shape', None)} "
                                 f"{getattr(image, 'dtype', type(image).__name__)}")
            analysis = self.pipeline.process(image, ir=frame.ir, settled=settled)
        except Exception as exc:  # noqa: BLE001 -- a bad frame never stops the service
            self.stats.bad_frames += 1
            log.warning("service: frame %s skipped: %s: %s", getattr(frame, "label", "?"), type(exc).__name__, exc)
            return
        self.stats.add(start, stage_dict(analysis.times), analysis.once)
        if self.commands.enrolment is not None:  # while enrolling, faces are collected, not decided on
            self.commands.enrol_frame(analysis, frame.timestamp, time.monotonic())
            return
        decision = self.decider.update(analysis.match if analysis.usable else None, frame.timestamp,
                                       analysis.liveness, analysis.quality.conditions if analysis.usable else ())
        latency = (time.monotonic() - start) * 1e3
        if decision.liveness is not None and decision.liveness.asked is not None:
            self._announce(decision.liveness.asked)
        changed = False
        if decision.outcome is Outcome.ACCEPT:
            self.relay.unlock()
            self.last_person = decision.person or "unknown"
            changed = True
        if decision.outcome in (Outcome.ACCEPT, Outcome.REJECT, Outcome.ATTACK):
            self.last_decision = decision.outcome.value
            self.events.decision(decision, latency)
            changed = True
        for ev in decision.events:
            self.events.lockout(ev)
            changed = True
        if changed:
            self._publish_state()

    def _announce(self, challenge) -> None:
        """Tell the person at the door what the challenge asks: MQTT (Home Assistant's event entity, which
        an automation can speak) and the GPIO indicator. A failure of either is logged; the attempt goes on
        (it fails at the deadline if nobody could hear it)."""
        log.info("challenge: %s (%d pulses, %g s)", challenge.prompt, challenge.pulses, challenge.deadline_s)
        self.stats.challenges += 1
        if not self.link.connected and isinstance(self.indicator, NoIndicator):
            # Failing closed is right (skipping the challenge while the broker is away would let a replay
            # in by cutting the Wi-Fi), but it must not look like an owner who did not answer.
            log.warning("challenge: nobody can hear it: the broker is not connected and [challenge] "
                        "indicator_pin is not set; the attempt fails at its %g s deadline", challenge.deadline_s)
        try:
            self.link.publish_challenge(challenge.action, challenge.prompt, challenge.deadline_s, challenge.pulses)
        except Exception as exc:  # noqa: BLE001 -- the broker's problem must not cost the frame
            log.warning("challenge: not published: %s", _why(exc))
        try:
            self.indicator.signal(challenge.pulses)
        except Exception as exc:  # noqa: BLE001 -- a GPIO fault must not cost the frame
            log.warning("challenge: indicator failed: %s", _why(exc))


def _why(exc: Exception) -> str:
    """An error for a log line: our own say what is wrong; anyone else's also need their type."""
    return str(exc) if isinstance(exc, FacelockError) else f"{type(exc).__name__}: {exc}"


def _describe_backend(embedder) -> str:
    """What runs the embedder, for the state and stats: the interpreter's description (runtime, delegate,
    threads), else the embedder's name (a Keras model on a workstation, a stand-in in tests)."""
    interp = getattr(embedder, "interpreter", None)
    description = getattr(interp, "description", None)
    if isinstance(description, str):
        return description
    return getattr(embedder, "name", type(embedder).__name__)
