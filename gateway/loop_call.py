"""Handing work from a thread (the outbox's SQLite thread, paho's network thread) to the
event loop, the one thread that touches the gateway's state."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


def call_from_thread(loop: asyncio.AbstractEventLoop | None, callback: Any, *args: Any) -> None:
    """Run `callback(*args)` on `loop`, in the order of these calls; dropped when the loop is
    gone (a stop that raced the thread)."""
    if loop is not None and not loop.is_closed():
        with contextlib.suppress(RuntimeError):  # the loop closed between check and call
            loop.call_soon_threadsafe(callback, *args)
