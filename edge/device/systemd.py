"""systemd's notify protocol, spoken directly: one datagram per message to $NOTIFY_SOCKET.

A unit with `Type=notify` and `WatchdogSec=` waits for READY=1 and restarts the process when WATCHDOG=1
stops arriving; STOPPING=1 says a shutdown is under way. No libsystemd: the protocol is one sendto() on a
UNIX datagram socket, and this way a board without python-systemd runs the same code. Outside systemd
(no $NOTIFY_SOCKET) every call is a no-op that returns False.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


def sd_notify(message: str) -> bool:
    """Send one sd_notify datagram to $NOTIFY_SOCKET; False when not under systemd or on failure."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket: the name starts with a NUL byte
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
    """Half of $WATCHDOG_USEC in seconds (when it is meant for this process), else None. Half, as
    sd_watchdog_enabled(3) advises, so one late ping does not get the process killed."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 2e6
    except ValueError:
        return None
