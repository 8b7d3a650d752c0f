"""Executing the MQTT commands (`reload`, `enroll`, `remove`, `rename`, `unlock`, `lock`) on the service's
parts, after deciding whether they may act.

`edge.mqtt.link` parses and validates each command on the network thread and queues it; `Commands.poll()`
runs them in the frame loop's thread, between frames, so the gallery, the matcher and the relay are only
ever touched by one thread. Every command gets one reply: its result, or the error (a command never
stops the service). `enroll` is the one that spans frames: it starts an `Enrolment`, the loop hands it
each frame's analysis (`enrol_frame`) and the reply goes out when enough frames were taken or time ran out.

Who may do what (`authorize`, before anything acts):
- `unlock`, `enroll`, `remove`, `rename` must be signed with the lock's command key (edge.mqtt.signing):
  a broker account alone opens nothing and changes no one. A signed unlock works during a lockout too (the
  owner letting someone in); the lockout only stops faces and unsigned unlocks.
- `lock` LOCK is always allowed (locking is safe). UNLOCK / OPEN on `cmd/lock` (Home Assistant's lock
  entity, which cannot sign) only with `mqtt.unsigned_unlock`, and never during a lockout.
- `enroll` never adds to a person enrolled already unless the signed command says `"add": true` (else a
  stranger in front of the camera would be merged into them and then open the door as them).
- Every command, accepted or refused (a malformed one too), is an audit event on the event topic
  (`Events.command`); refusals beyond `AuditBudget` (a flood) are counted into the next one audited.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edge.errors import FacelockError, GalleryError
from edge.mqtt.commands import SIGNED_COMMANDS
from edge.mqtt.signing import CommandRefused, Verifier
from edge.service.enrolment import FrameCollector
from edge.service.options import ServiceOptions

log = logging.getLogger(__name__)


@dataclass
class Enrolment:
    """An `enroll` command in progress: whom, the request to answer, and the frames collected so far."""

    name: str
    request_id: str | None
    frames: FrameCollector
    add: bool = False  # the signed command allowed adding to a person enrolled already
    signed: bool = True


class AuditBudget:
    """How many refused commands get an audit event each: `burst` at once, then `per_minute` (a token
    bucket on the monotonic clock). Audit events are security events, which the outbox never drops, so a
    client flooding refused commands while the event topic is unreachable would otherwise grow it without
    bound. Every refusal is still answered and logged; the ones over budget are counted and the count goes
    into the next refusal that is audited."""

    def __init__(self, burst: int = 20, per_minute: float = 30.0, clock: Callable[[], float] = time.monotonic):
        self.burst, self.rate, self.clock = burst, per_minute / 60.0, clock
        self.tokens, self.last = float(burst), clock()
        self.unaudited = 0  # refusals over budget since the last audited one
        self.unaudited_total = 0

    def take(self) -> int | None:
        """None: over budget (counted). Else how many refusals before this one went unaudited."""
        now = self.clock()
        self.tokens = min(float(self.burst), self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens < 1.0:
            self.unaudited += 1
            self.unaudited_total += 1
            return None
        self.tokens -= 1.0
        skipped, self.unaudited = self.unaudited, 0
        return skipped


class Commands:
    """Runs commands against the gallery, matcher and relay; `publish_state` is called after each change
    so Home Assistant sees it at once. `min_face_px` is the quality gate's (what counts as a face in view).
    `events` records the audit events; `verifier` checks signatures; `locked_out()` says whether a lockout
    is under way; `unsigned_unlock` is `mqtt.unsigned_unlock`."""

    def __init__(self, options: ServiceOptions, link, gallery, matcher, relay, has_lock: bool,
                 min_face_px: float, publish_state: Callable[[], None], events, verifier: Verifier,
                 unsigned_unlock: bool = False, locked_out: Callable[[], bool] = lambda: False):
        self.options = options
        self.link = link
        self.gallery = gallery
        self.matcher = matcher
        self.relay = relay
        self.has_lock = has_lock
        self.min_face_px = min_face_px
        self.publish_state = publish_state
        self.events = events
        self.verifier = verifier
        self.unsigned_unlock = unsigned_unlock
        self.locked_out = locked_out
        self.enrolment: Enrolment | None = None
        self.refusals = AuditBudget()

    def poll(self) -> None:
        """Execute every command waiting on the link and reply to each."""
        while True:
            try:
                command = self.link.commands.get_nowait()
            except queue.Empty:
                return
            self.run(command)

    def run(self, command) -> None:
        """Authorise, execute, reply and audit one command; nothing it does can raise out of here."""
        try:
            if command.rejected is not None:  # malformed (edge.mqtt.commands): refused before it could act
                raise CommandRefused(command.rejected)
            self.authorize(command)
            result = self.execute(command)
        except CommandRefused as exc:
            log.warning("service: command %s refused: %s", command.name, exc)
            self._answer(command, "refused", str(exc))
        except FacelockError as exc:
            log.warning("service: command %s failed: %s", command.name, exc)
            self._answer(command, "failed", str(exc))
        except Exception as exc:  # a command never stops the service
            log.exception("service: command %s crashed", command.name)
            self._answer(command, "failed", f"{type(exc).__name__}: {exc}")
        else:
            if result is None:  # enroll: the reply comes when the frames are in
                self._audit(command, "accepted", "enrolment started")
            else:
                self._audit(command, "accepted", _summary(result))
                self.link.reply(command.name, command.request_id, ok=True, result=result)

    def _answer(self, command, decision: str, error: str) -> None:
        self._audit(command, decision, error)
        self.link.reply(command.name, command.request_id, ok=False, error=error)

    def _audit(self, command, decision: str, reason: str) -> None:
        if decision == "refused":
            unaudited = self.refusals.take()
            if unaudited is None:
                return  # a flood of refusals: counted, and said in the next refusal's audit event
            if unaudited:
                reason += f" (and {unaudited} more refused commands before this one, not audited one by one)"
        target = command.args.get("name")
        if "action" in command.args:  # cmd/lock (a malformed one has no action)
            reason = f"{command.args['action']}: {reason}"
        self.events.command(command.name, decision, reason, command.request_id, command.envelope is not None,
                            target)

    def authorize(self, command) -> None:
        """CommandRefused unless this command may act now (see the module docstring)."""
        name = command.name
        if command.envelope is not None:
            self.verifier.verify(self.link.topics.command(name), command.envelope)
            return
        if name in SIGNED_COMMANDS:
            raise CommandRefused(f"unsigned: {name} must be signed with this lock's command key "
                                 "(facelock admin send)")
        if name == "lock" and command.args["action"] != "LOCK":
            if not self.unsigned_unlock:
                raise CommandRefused("unlocking by cmd/lock is off (mqtt.unsigned_unlock = false); send a signed "
                                     "unlock (facelock admin send ... unlock)")
            if self.locked_out():
                raise CommandRefused("locked out: an unsigned unlock is refused until the lockout ends")

    def execute(self, command) -> dict[str, Any] | None:
        """Run one authorised command; the result for the reply (None: the reply comes later)."""
        if command.name == "reload":
            self.matcher.refresh(force=True)
            self.publish_state()
            return {"people": len(self.matcher.names), "revision": self.matcher.revision}
        if command.name == "remove":
            return self._remove(command.args["name"])
        if command.name == "rename":
            return self._rename(command.args["name"], command.args["to"])
        if command.name == "enroll":
            self._start_enrolment(command)
            return None
        if command.name == "unlock":
            return self._lock("UNLOCK")
        if command.name == "lock":
            return self._lock(command.args["action"])
        raise FacelockError(f"unknown command {command.name!r}")

    def _known(self, name: str) -> str | None:
        """The enrolled person called `name` in any case (people left out of matching count too), or None."""
        known = {n.casefold(): n for n in self.matcher.names} | {p.name.casefold(): p.name
                                                                  for p in self.gallery.people()}
        return known.get(name.casefold())

    def _remove(self, name: str) -> dict[str, Any]:
        known = self._known(name)
        if known is None:
            raise GalleryError(f"remove: unknown person {name!r}")
        removed = self.gallery.remove(known)
        self.matcher.refresh(force=True)
        self.publish_state()
        return {"removed": known, "templates": removed}

    def _rename(self, name: str, to: str) -> dict[str, Any]:
        known = self._known(name)
        if known is None:
            raise GalleryError(f"rename: unknown person {name!r}")
        self.gallery.rename(known, to)
        self.matcher.refresh(force=True)
        self.publish_state()
        return {"renamed": known, "to": to}

    def _refuse_merge(self, name: str) -> None:
        existing = self._known(name)
        if existing is not None:
            raise CommandRefused(f"enroll: {existing!r} is enrolled already; to add these frames to their "
                                 "templates, sign the command with \"add\": true (facelock admin send enroll --add)")

    def _start_enrolment(self, command) -> None:
        if self.enrolment is not None:
            raise FacelockError(f"enroll: already enrolling {self.enrolment.name!r}")
        add = bool(command.args.get("add", False))
        if not add:
            self._refuse_merge(command.args["name"])
        o = self.options
        frames = command.args.get("frames", o.enroll_frames)
        self.enrolment = Enrolment(command.args["name"], command.request_id,
                                   FrameCollector(frames, o.enroll_interval_s, o.enroll_timeout_s, self.min_face_px),
                                   add=add, signed=command.envelope is not None)
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
            self._finish(e)
            self.publish_state()
        elif e.frames.expired(now):
            self.enrolment = None
            taken, wanted = len(e.frames.taken), e.frames.wanted
            log.warning("service: enrolment of %s timed out with %d of %d frames", e.name, taken, wanted)
            self._enrolled(e, False, f"enroll {e.name!r}: only {taken} of {wanted} usable frames within "
                                     f"{self.options.enroll_timeout_s:g} s; nothing enrolled")
            self.publish_state()

    def _finish(self, e: Enrolment) -> None:
        try:
            if not e.add:  # enrolled meanwhile (by `facelock enroll` on the lock): still no merge
                self._refuse_merge(e.name)
            added = self.gallery.enroll(e.name, e.frames.embeddings(), model=self.matcher.space, new_only=not e.add)
            self.matcher.refresh(force=True)
            log.info("service: enrolled %s (%d templates)", e.name, added)
            self._enrolled(e, True, "", {"name": e.name, "templates": added})
        except FacelockError as exc:
            self._enrolled(e, False, str(exc))
        except Exception as exc:  # a gallery that fails (SQLite) must not stop the service
            log.exception("service: enrolment of %s crashed", e.name)
            self._enrolled(e, False, f"{type(exc).__name__}: {exc}")

    def _enrolled(self, e: Enrolment, ok: bool, error: str, result: dict[str, Any] | None = None) -> None:
        """The end of an enrolment: its audit event and the reply to its command."""
        self.events.command("enroll", "done" if ok else "failed", _summary(result) if ok else error,
                            e.request_id, e.signed, e.name)
        self.link.reply("enroll", e.request_id, ok=ok, error=error, result=result)


def _summary(result: dict[str, Any] | None) -> str:
    return ", ".join(f"{k} {v}" for k, v in (result or {}).items())
