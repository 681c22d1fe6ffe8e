"""systemd's sd_notify protocol: one datagram per state, to the socket in $NOTIFY_SOCKET.

With Type=notify systemd waits for READY=1 before it counts the service as started, restarts it
when WATCHDOG=1 stops arriving for WatchdogSec, shows STATUS= in `systemctl status`, and reads
STOPPING=1 as "the stop has begun". Without $NOTIFY_SOCKET (a terminal, --background, tests)
every call is a no-op, so callers never need to ask whether they run under systemd. A name
starting with "@" is an abstract socket (a NUL byte on the wire).
"""

from __future__ import annotations

import os
import socket


def notify(*states: str) -> bool:
    """Send `states` ("READY=1", "STATUS=...") in one datagram; False when there is no socket.

    Errors are swallowed on purpose: a vanished notify socket must never take the service down.
    """
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address or not states:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    payload = "\n".join(s.replace("\n", " ") for s in states).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(payload)
    except OSError:
        return False
    return True


def ready(status: str = "") -> bool:
    return notify("READY=1", *([f"STATUS={status}"] if status else []))


def status(text: str) -> bool:
    return notify(f"STATUS={text}")


def watchdog() -> bool:
    return notify("WATCHDOG=1")


def stopping(status: str = "") -> bool:
    return notify("STOPPING=1", *([f"STATUS={status}"] if status else []))


def reloading(status: str = "") -> bool:
    return notify("RELOADING=1", *([f"STATUS={status}"] if status else []))


def watchdog_period() -> float | None:
    """Seconds between WATCHDOG=1 pings: half of WatchdogSec, or None when no watchdog is asked.

    systemd sets WATCHDOG_USEC (and WATCHDOG_PID, which must be us when present).
    """
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        seconds = int(usec) / 1_000_000
    except ValueError:
        return None
    return seconds / 2 if seconds > 0 else None
