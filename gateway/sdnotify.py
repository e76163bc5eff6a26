"""systemd's readiness protocol, so `Type=notify` starts dependants only once we are up."""

from __future__ import annotations

import os
import socket


def notify(state: str) -> None:
    """Send e.g. 'READY=1' or 'STOPPING=1' to systemd; a no-op outside systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(address)
        sock.sendall(state.encode())
