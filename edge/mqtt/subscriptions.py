"""Which of the lock's subscriptions the broker granted, from the SUBACKs of each connection.

A broker that refuses a subscription (MQTT 5 SUBACK reason code >= 0x80, e.g. 0x87 Not authorized from an
ACL) leaves the lock deaf on that topic: its commands, or Home Assistant's restarts, never arrive. Nothing
else would say so, so `Subscriptions` logs it once per topic and reason, keeps it for the state
(`refused`, `version`), and says when a later connection's SUBACK grants it. `ready` is set once every
SUBACK of the connection is in: a message published after that reaches the lock (unless refused).

The network thread calls `connecting` (before subscribing), `sent` for each topic, `all_sent`, and
`acknowledged` for each SUBACK; any thread reads.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

log = logging.getLogger(__name__)


class Subscriptions:
    def __init__(self, where: str, commands_topic: str):
        self.where = where  # host:port, for the log lines
        self.commands_topic = commands_topic
        self.ready = threading.Event()  # every SUBACK of this connection is in (granted or refused)
        self._pending: dict[int, str] = {}  # SUBSCRIBE mid -> topic; network thread only
        self.refused: dict[str, str] = {}  # topic -> the SUBACK's reason, while refused
        self.version = 0  # changes when a topic starts or stops being refused (the state is published again)

    def connecting(self) -> None:
        self.ready.clear()
        self._pending.clear()

    def sent(self, topic: str, result: int, mid: int | None) -> None:
        """After `client.subscribe(topic)`; its SUBACK comes later, in the same network thread."""
        if result == 0 and mid is not None:
            self._pending[mid] = topic

    def all_sent(self) -> None:
        if not self._pending:
            self.ready.set()

    def acknowledged(self, mid: int, reason_codes: Sequence[Any]) -> None:
        topic = self._pending.pop(mid, None)
        if topic is not None:
            code = reason_codes[0] if reason_codes else None
            if code is not None and code.is_failure:
                self._refused(topic, f"{code} (0x{int(code.value):02X})")
            elif self.refused.pop(topic, None) is not None:
                self.version += 1
                log.info("mqtt: broker %s accepts the subscription to %s again", self.where, topic)
        if not self._pending:
            self.ready.set()

    def _refused(self, topic: str, reason: str) -> None:
        if self.refused.get(topic) == reason:
            return
        self.refused[topic] = reason
        self.version += 1
        what = "commands sent to this lock will not arrive" if topic == self.commands_topic \
            else "its messages will not arrive"
        log.error("mqtt: broker %s refused the subscription to %s: %s; %s (the broker must let this account "
                  "subscribe to it; Mosquitto's acl_file: `topic read %s`, see docs/operations.md)", self.where,
                  topic, reason, what, topic)
