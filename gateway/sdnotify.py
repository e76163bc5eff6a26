"""systemd's notify protocol: readiness (`Type=notify`), reloads, the watchdog, status.

READY=1 once the gateway is up, so dependants (and `systemctl start`) wait for a gateway
that really runs; RELOADING=1 … READY=1 around a reload (`systemctl reload`); STATUS= the
health line `systemctl status` shows; and WATCHDOG=1 at half the unit's `WatchdogSec=`,
sent from the event loop, so a loop that stops turning (a blocking call, a livelock)
stops the pings and systemd restarts the gateway.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable

import structlog

log = structlog.get_logger(__name__)

_failed_once = False  # a notify socket that refuses is logged once, not at every ping


def notify(state: str) -> bool:
    """Send e.g. 'READY=1' or 'STOPPING=1' to systemd; a no-op outside systemd.

    False when the notify socket could not be reached or is full (logged once): the
    gateway runs on whatever its supervisor thinks of it.
    """
    global _failed_once
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            # never wait on the event loop: a reader that fell behind costs this message
            # (the next ping comes half a watchdog period later), never a blocked loop
            sock.setblocking(False)
            sock.connect(address)
            sock.send(state.encode())
    except OSError as exc:
        if not _failed_once:
            _failed_once = True
            log.warning("systemd notify socket unreachable", socket=address.lstrip("\0"),
                        error=exc.strerror or str(exc))
        return False
    return True


def reloading() -> str:
    """RELOADING=1 with the monotonic time systemd (≥ 253, Type=notify-reload) asks for."""
    return f"RELOADING=1\nMONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}"


def watchdog_interval() -> float | None:
    """Seconds between two WATCHDOG=1: half of $WATCHDOG_USEC; None when systemd does not
    watch this process (no WatchdogSec=, or $WATCHDOG_PID names another process)."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 1e6 / 2


async def report_forever(status: Callable[[], str], watchdog: float | None,
                         every: float = 5.0) -> None:
    """STATUS=<health line> whenever it changes and, with `watchdog` (seconds, from
    `watchdog_interval`), WATCHDOG=1 that often, from the event loop."""
    period = min(watchdog, every) if watchdog else every
    shown: str | None = None
    while True:
        lines = ["WATCHDOG=1"] if watchdog else []
        try:
            line = status()
        except Exception as exc:  # a bug in the health line must not stop the pings
            log.exception("health line failed", error=repr(exc))
        else:
            if line != shown:
                shown = line
                lines.append(f"STATUS={line}")
        if lines:
            notify("\n".join(lines))
        await asyncio.sleep(period)
