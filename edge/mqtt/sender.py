"""Sending the outbox, and telling an acknowledged publish from a delivered one.

An MQTT 3.1.1 PUBACK only says the broker received the message: Mosquitto acknowledges a publish that its
ACL denies, and then drops it. With MQTT 5 the PUBACK carries a reason code, and Mosquitto (2.0.11 tested)
sends 0x87 "Not authorized" for such a publish. So `OutboxSender` deletes a row only on a PUBACK whose
reason code is a success (< 0x80; 0x10 "No matching subscribers" is one); on a refusal (0x87 Not
authorized, 0x97 Quota exceeded, ...) the row stays in the outbox, the refusal is counted and logged once
per topic and reason (`Refusals`), and the sender holds back: nothing more is sent until a retry of the
oldest row (a probe) is accepted. The probe goes out `retry_s[0]` seconds after the refusal, then with
doubling delays up to `retry_s[1]`, and at once after every reconnect (a broker restarted with a fixed ACL
delivers the backlog within a second). Holding back keeps a lock whose ACL is wrong from re-sending its
whole backlog in a loop, and keeps the events in order.

The sender thread publishes what is waiting, oldest first, at most `max_inflight` at a time; on every
(re)connect the whole backlog is sent again from the oldest, so nothing waits on paho's in-memory queue
(duplicates are possible, losses are not). Other QoS 1 publishes (state, availability, replies) are
`track`ed by message id so that their refusals are logged and reported too; they are not retried (the next
state or reply is sent as usual).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any

from edge.mqtt.outbox import Outbox, OutboxEntry

log = logging.getLogger(__name__)

RETRY_S = (10.0, 300.0)  # first retry of a refused event, and the longest wait between retries
_TRACKED = 1024  # direct publishes remembered while their PUBACK is due
_LATE_S = 2.0  # how long a PUBACK waits for its publisher to record the message id (then it is a stale one)


def _failed(reason: Any) -> bool:
    return bool(getattr(reason, "is_failure", False))


class Refusals:
    """Publishes the broker acknowledged with a failure reason code, by topic: counted, logged once per
    topic and reason, and summarised for the state and stats messages. Thread-safe."""

    def __init__(self, where: str):
        self.where = where
        self._lock = threading.Lock()
        self._current: dict[str, dict[str, Any]] = {}  # topic -> {"reason", "code", "count"}
        self.total = 0  # refused publishes since the start
        self.version = 0  # changes when a topic starts or stops being refused (the state is published again)

    def refused(self, topic: str, reason: Any, note: str) -> None:
        code = int(getattr(reason, "value", 0))
        name = str(reason)
        with self._lock:
            self.total += 1
            current = self._current.get(topic)
            new = current is None or current["code"] != code
            if new:
                current = self._current[topic] = {"reason": name, "code": code, "count": 0}
                self.version += 1
            current["count"] += 1
        if new:
            log.warning("mqtt: broker %s refused a publish on %s: %s (0x%02X); %s", self.where, topic, name, code,
                        note)
        else:
            log.debug("mqtt: broker %s refused a publish on %s again: %s", self.where, topic, name)

    def accepted(self, topic: str) -> None:
        with self._lock:
            current = self._current.pop(topic, None)
            if current is not None:
                self.version += 1
        if current is not None:
            log.info("mqtt: broker %s accepts publishes on %s again (%d refused before: %s)", self.where, topic,
                     current["count"], current["reason"])

    def summary(self) -> dict[str, dict[str, Any]]:
        """{topic: {"reason": "Not authorized", "count": n}} for every topic refused now."""
        with self._lock:
            return {t: {"reason": c["reason"], "count": c["count"]} for t, c in self._current.items()}


class OutboxSender:
    """The thread that sends the outbox over `client` while `connected` is set. Network-thread entry points:
    `new_connection`, `on_publish`; any thread: `track`, `wake`."""

    def __init__(self, client, outbox: Outbox, connected: threading.Event, refusals: Refusals, max_inflight: int,
                 retry_s: tuple[float, float] = RETRY_S):
        self.client = client
        self.outbox = outbox
        self.refusals = refusals
        self.max_inflight = max_inflight
        self.retry_min_s, self.retry_max_s = retry_s
        self._connected = connected
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._acks: queue.SimpleQueue[tuple[int, Any]] = queue.SimpleQueue()
        self._generation = 0
        self._direct: dict[int, str] = {}  # mid -> topic of tracked direct publishes
        self._direct_lock = threading.Lock()
        # Touched by the sender thread only:
        self._inflight: dict[int, tuple[int, str]] = {}  # mid -> (seq, topic)
        self._late: list[tuple[int, Any, float]] = []  # PUBACKs whose mid is not known yet: (mid, reason, until)
        self._sent_upto = 0
        self._seen_generation = -1
        self._probe: int | None = None  # mid of the retry in flight while held
        self._delay = self.retry_min_s
        self.retry_at = 0.0  # monotonic time of the next retry while held
        self.held = False  # an event was refused: nothing new is sent until a retry is accepted
        self._error = ""  # the last error of a step, logged once until a step succeeds
        self._thread = threading.Thread(target=self._run, name="mqtt-outbox", daemon=True)

    # -- entry points ---------------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def wake(self) -> None:
        self._wake.set()

    def new_connection(self) -> None:
        """Connected (again): the whole backlog is sent again, a refused one retried at once."""
        self._generation += 1
        self._wake.set()

    def on_publish(self, mid: int, reason: Any) -> None:
        self._acks.put((mid, reason))
        self._wake.set()

    def track(self, mid: int, topic: str) -> None:
        """Remember a direct QoS 1 publish, so that a refusal of it is reported with its topic."""
        with self._direct_lock:
            self._direct[mid] = topic
            if len(self._direct) > _TRACKED:
                del self._direct[next(iter(self._direct))]

    @property
    def waiting_for_retry(self) -> bool:
        """Held by a refusal, with no retry in flight."""
        return self.held and self._probe is None

    # -- the thread ---------------------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(0.5)
            self._wake.clear()
            try:
                self._step(time.monotonic())
                self._error = ""
            except Exception as exc:  # keep the sender alive; the rows stay for the next try
                if f"{exc!r}" != self._error:
                    log.exception("mqtt: outbox sender (retrying every second; logged again only if it changes)")
                self._error = f"{exc!r}"
                time.sleep(1.0)

    def _step(self, now: float) -> None:
        self._take_acks(now)
        if not self._connected.is_set():
            return
        if self._seen_generation != self._generation:
            self._seen_generation = self._generation
            self._inflight.clear()
            self._sent_upto = 0
            self._probe = None
            if self.held:  # a reconnect is when a fixed ACL shows: try at once
                self.retry_at, self._delay = now, self.retry_min_s
        if self.held:
            if self._probe is None and now >= self.retry_at:
                self._send_probe()
            return
        self._send_more()

    def _take_acks(self, now: float) -> None:
        items, self._late = self._late, []
        while True:
            try:
                mid, reason = self._acks.get_nowait()
            except queue.Empty:
                break
            items.append((mid, reason, now + _LATE_S))
        for mid, reason, until in items:
            entry = self._inflight.pop(mid, None)
            if entry is not None:
                self._event_acked(mid, entry, reason, now)
                continue
            with self._direct_lock:
                topic = self._direct.pop(mid, None)
            if topic is not None:
                if _failed(reason):
                    self.refusals.refused(topic, reason, "not retried; later ones are sent as usual")
                else:
                    self.refusals.accepted(topic)
            elif now < until:  # its publisher has not recorded the mid yet (or it is a stale one)
                self._late.append((mid, reason, until))

    def _event_acked(self, mid: int, entry: tuple[int, str], reason: Any, now: float) -> None:
        seq, topic = entry
        probe = mid == self._probe
        if probe:
            self._probe = None
        if not _failed(reason):
            self.outbox.ack(seq)
            self.refusals.accepted(topic)
            if probe:  # accepted again: send the whole backlog, from the oldest
                self.held, self._delay, self._sent_upto = False, self.retry_min_s, 0
            return
        if probe:
            self._delay = min(self._delay * 2, self.retry_max_s)
        elif not self.held:
            self.held, self._delay = True, self.retry_min_s
        self.retry_at = now + self._delay
        self.refusals.refused(topic, reason, f"the event stays in the outbox, retried in {self._delay:.0f} s, then "
                              f"less often (at most every {self.retry_max_s:.0f} s) and at once after a reconnect")

    def _send_probe(self) -> None:
        entries = self.outbox.pending(limit=1)
        if not entries:  # nothing left to retry
            self.held, self._sent_upto = False, 0
            return
        self._probe = self._publish(entries[0])

    def _send_more(self) -> None:
        room = self.max_inflight - len(self._inflight)
        if room <= 0:
            return
        busy = {seq for seq, _ in self._inflight.values()}
        limit = room + len(busy)
        entries = self.outbox.pending(limit=limit, after_seq=self._sent_upto)
        sent = 0
        for entry in entries:
            if sent >= room or not self._connected.is_set():
                break
            if entry.seq not in busy:
                if self._publish(entry) is None:
                    break  # not connected after all: the next connection sends it
                sent += 1
            self._sent_upto = entry.seq
        if len(entries) == limit:
            self._wake.set()

    def _publish(self, entry: OutboxEntry) -> int | None:
        info = self.client.publish(entry.topic, entry.payload, qos=entry.qos, retain=False)
        if info.rc != 0:
            return None
        self._inflight[info.mid] = (entry.seq, entry.topic)
        return info.mid
