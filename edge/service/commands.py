"""Executing the MQTT commands (`reload`, `remove`, `enroll`, `lock`) on the service's parts.

`edge.mqtt.link` parses and validates each command on the network thread and queues it; `Commands.poll()`
runs them in the frame loop's thread, between frames, so the gallery, the matcher and the relay are only
ever touched by one thread. Every command gets one reply: its result, or the error (a command never
stops the service). `enroll` is the one that spans frames: it starts an `Enrolment`, the loop hands it
each frame's analysis (`enrol_frame`) and the reply goes out when enough frames were taken or time ran out.
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edge.errors import FacelockError, GalleryError
from edge.service.enrolment import FrameCollector
from edge.service.options import ServiceOptions

log = logging.getLogger(__name__)


@dataclass
class Enrolment:
    """An `enroll` command in progress: whom, the request to answer, and the frames collected so far."""

    name: str
    request_id: str | None
    frames: FrameCollector


class Commands:
    """Runs commands against the gallery, matcher and relay; `publish_state` is called after each change
    so Home Assistant sees it at once. `min_face_px` is the quality gate's (what counts as a face in view)."""

    def __init__(self, options: ServiceOptions, link, gallery, matcher, relay, has_lock: bool,
                 min_face_px: float, publish_state: Callable[[], None]):
        self.options = options
        self.link = link
        self.gallery = gallery
        self.matcher = matcher
        self.relay = relay
        self.has_lock = has_lock
        self.min_face_px = min_face_px
        self.publish_state = publish_state
        self.enrolment: Enrolment | None = None

    def poll(self) -> None:
        """Execute every command waiting on the link and reply to each."""
        link = self.link
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
            self.publish_state()
            return {"people": len(self.matcher.names), "revision": self.matcher.revision}
        if command.name == "remove":
            return self._remove(command.args["name"])
        if command.name == "enroll":
            self._start_enrolment(command)
            return None
        if command.name == "lock":
            return self._lock(command.args["action"])
        raise FacelockError(f"unknown command {command.name!r}")

    def _remove(self, name: str) -> dict[str, Any]:
        # Case-insensitive, like the gallery; people left out of matching (another embedder) count too.
        known = {n.casefold(): n for n in self.matcher.names} | {p.name.casefold(): p.name
                                                                  for p in self.gallery.people()}
        if name.casefold() not in known:
            raise GalleryError(f"remove: unknown person {name!r}")
        removed = self.gallery.remove(known[name.casefold()])
        self.matcher.refresh(force=True)
        self.publish_state()
        return {"removed": known[name.casefold()], "templates": removed}

    def _start_enrolment(self, command) -> None:
        if self.enrolment is not None:
            raise FacelockError(f"enroll: already enrolling {self.enrolment.name!r}")
        o = self.options
        frames = command.args.get("frames", o.enroll_frames)
        self.enrolment = Enrolment(command.args["name"], command.request_id,
                                   FrameCollector(frames, o.enroll_interval_s, o.enroll_timeout_s, self.min_face_px))
        log.info("service: enrolling %s from the next %d usable frames", command.args["name"], frames)
        self.publish_state()

    def _lock(self, action: str) -> dict[str, Any]:
        if not self.has_lock:
            raise FacelockError("lock: no relay configured (relay.enabled = false)")
        if action == "LOCK":
            self.relay.lock()
        else:
            self.relay.unlock()
        log.info("service: remote %s", action)
        self.publish_state()
        return {"lock": "UNLOCKED" if self.relay.is_unlocked else "LOCKED"}

    def enrol_frame(self, analysis, timestamp: float, now: float) -> None:
        """Offer one frame's analysis to the enrolment under way; enrol and reply once it is done, or
        reply with the error once it has expired (nothing is enrolled from too few frames)."""
        e = self.enrolment
        if e is None:
            return
        e.frames.offer(analysis, timestamp)
        if e.frames.done:
            self.enrolment = None
            try:
                added = self.gallery.enroll(e.name, e.frames.embeddings(), model=self.matcher.space)
                self.matcher.refresh(force=True)
                log.info("service: enrolled %s (%d templates)", e.name, added)
                self.link.reply("enroll", e.request_id, ok=True, result={"name": e.name, "templates": added})
            except FacelockError as exc:
                self.link.reply("enroll", e.request_id, ok=False, error=str(exc))
            self.publish_state()
        elif e.frames.expired(now):
            self.enrolment = None
            taken, wanted = len(e.frames.taken), e.frames.wanted
            log.warning("service: enrolment of %s timed out with %d of %d frames", e.name, taken, wanted)
            self.link.reply("enroll", e.request_id, ok=False,
                            error=f"enroll {e.name!r}: only {taken} of {wanted} usable frames within "
                                  f"{self.options.enroll_timeout_s:g} s; nothing enrolled")
            self.publish_state()
