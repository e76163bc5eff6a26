"""paho-mqtt's network thread seen from asyncio: shared by the upstream sink and the
southbound MQTT driver, which both run one paho client on its own thread."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any

import paho.mqtt.client as mqtt


def call_from_thread(loop: asyncio.AbstractEventLoop | None, callback: Any, *args: Any) -> None:
    """Run `callback(*args)` on `loop` from paho's thread; dropped when the loop is gone."""
    if loop is not None and not loop.is_closed():
        with contextlib.suppress(RuntimeError):  # the loop closed between check and call
            loop.call_soon_threadsafe(callback, *args)


async def stop_network_thread(client: mqtt.Client, timeout: float) -> bool:
    """Stop paho's thread, waiting at most `timeout`; False if it did not stop in time.

    A daemon thread does the waiting, not asyncio.to_thread: asyncio.run waits for executor
    threads at exit, and paho's thread can sit in a connect to a dead broker for seconds.
    """
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()

    def stop() -> None:
        client.loop_stop()
        call_from_thread(loop, stopped.set)

    threading.Thread(target=stop, name="mqtt-stop", daemon=True).start()
    return await wait_set(stopped, max(0.1, timeout))


async def wait_set(event: asyncio.Event | None, timeout: float) -> bool:
    """Wait until `event` is set; False on timeout or when there is no event yet."""
    if event is None:
        return False
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except TimeoutError:
        return False
    return True
