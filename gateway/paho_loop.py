"""paho-mqtt seen from asyncio. The southbound MQTT driver runs one paho client on its own
network thread (`call_from_thread`, `stop_network_thread`); the upstream sink runs its
client's I/O on the event loop (`PahoOnLoop`), so publishing and confirming thousands of
messages a second costs no thread hand-over per message."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from gateway.loop_call import call_from_thread


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


_PUBACK_SUCCESS = ReasonCode(PacketTypes.PUBACK)
_NO_PROPERTIES = Properties(PacketTypes.PUBACK)


class LeanPubackClient(mqtt.Client):
    """paho's client, with MQTT 3.1.1's PUBACK handled without building objects.

    paho decodes every PUBACK into a new ReasonCode and Properties, which in MQTT 3.1.1
    are always "success" and empty: tens of microseconds a message, more than publishing
    it, and the upstream sink's largest cost at thousands of messages a second. A 3.1.1
    PUBACK is its message id and nothing else; anything else (MQTT 5, PUBCOMP, a malformed
    packet) goes to paho's own handling. tests/unit/test_paho_loop.py holds this to paho's.
    """

    def _handle_pubackcomp(self, cmd: Any) -> mqtt.MQTTErrorCode:
        packet = self._in_packet["packet"]
        if cmd != "PUBACK" or self._protocol != mqtt.MQTTv311 or len(packet) != 2:
            return super()._handle_pubackcomp(cmd)
        mid = (packet[0] << 8) | packet[1]
        with self._out_message_mutex:
            if mid in self._out_messages:
                return self._do_on_publish(mid, _PUBACK_SUCCESS, _NO_PROPERTIES)
        return mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS


class PahoOnLoop:
    """One paho client's network I/O on the asyncio loop, instead of paho's own thread.

    paho reads and writes from loop callbacks (`add_reader` / `add_writer`), so its
    callbacks (CONNACK, PUBACK, messages) run on the loop: no thread to wake and no hand-over
    between threads for every message published and confirmed. Only what blocks, opening a
    connection (TCP connect, TLS handshake), runs in a daemon thread. A connection that is
    lost or cannot be opened is tried again after `min_delay` seconds, doubling up to
    `max_delay` while attempts fail; `on_connect_failed` hears of each failed attempt.

    Keep paho's callbacks short and queue the work they start (`schedule`): they run while
    paho holds its own locks.
    """

    def __init__(
        self, client: mqtt.Client, *, min_delay: float, max_delay: float,
        on_connect_failed: Any = None,
    ) -> None:
        self.client = client
        self.min_delay = min_delay
        self.max_delay = max_delay
        self.on_connect_failed = on_connect_failed
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = asyncio.Event()  # set while no socket is open
        self._closed.set()
        self._up = False  # the current connection got its CONNACK
        self._stopping = False
        client.on_socket_close = self._socket_closed
        client.on_socket_register_write = self._want_write
        client.on_socket_unregister_write = self._wrote

    def start(self) -> None:
        """Connect (after `client.connect_async(...)`) and keep connecting until `stop`."""
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._run(), name="mqtt-network")

    async def stop(self, timeout: float) -> bool:
        """Wait up to `timeout` for the socket to close (after `client.disconnect()`), then
        stop; False if it had to be closed without a clean DISCONNECT."""
        self._stopping = True
        clean = await wait_set(self._closed, max(0.0, timeout))
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        sock = self.client.socket()
        if sock is not None and not clean:
            self._unwatch(sock)
            sock.close()
        return clean

    # --- the connection's life, a task on the loop --------------------------------

    async def _run(self) -> None:
        delay = self.min_delay
        while not self._stopping:
            sock = await self._open()
            if sock is not None:
                await self._serve(sock)
                if self._up:  # it worked: the next loss waits the shortest delay again
                    delay = self.min_delay
            elif self.on_connect_failed is not None and not self._stopping:
                self.on_connect_failed()
            if self._stopping:
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_delay)

    async def _open(self) -> Any:
        """paho's blocking `reconnect()` (TCP, TLS, CONNECT queued) in a daemon thread: an
        executor thread would hold up the loop's shutdown while a dead broker times out."""
        loop = self._loop
        assert loop is not None
        opened: asyncio.Future[Any] = loop.create_future()
        self._closed.clear()
        self._up = False

        def attempt() -> None:
            try:
                self.client.reconnect()
                result: Any = self.client.socket()
            except Exception as exc:  # refused, timed out, TLS, DNS: tried again later
                result = exc
            call_from_thread(loop, self._opened, opened, result)

        threading.Thread(target=attempt, name="mqtt-connect", daemon=True).start()
        result = await opened
        if isinstance(result, Exception) or result is None:
            self._closed.set()
            return None
        return result

    def _opened(self, opened: asyncio.Future[Any], result: Any) -> None:
        if not opened.done():
            opened.set_result(result)
        elif not isinstance(result, Exception) and result is not None:
            result.close()  # stopped while connecting: nobody will serve this socket

    async def _serve(self, sock: Any) -> None:
        """Read while the socket is open; paho's keepalive (PINGREQ, a silent broker given
        up) ticks every second."""
        loop = self._loop
        assert loop is not None
        if self.client.socket() is not sock:  # closed already
            return
        loop.add_reader(sock, self._readable)
        while not self._closed.is_set():
            if not await wait_set(self._closed, 1.0):
                self.client.loop_misc()

    # --- paho's callbacks and the loop's ------------------------------------------

    def _readable(self) -> None:
        client = self.client
        rc = client.loop_read()
        sock = client.socket()
        # TLS may hold decrypted packets the socket no longer signals: read them too
        while rc == mqtt.MQTT_ERR_SUCCESS and isinstance(sock, ssl.SSLSocket) and sock.pending():
            rc = client.loop_read()
        if client.is_connected():
            self._up = True

    def _writable(self) -> None:
        self.client.loop_write()

    def _want_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        if self.on_loop():  # a publish: written as soon as the loop next looks
            self._watch_write(sock)
        else:  # the CONNECT, queued by reconnect() in the connecting thread
            schedule(self._loop, self._watch_write, sock)

    def _watch_write(self, sock: Any) -> None:
        if self.client.socket() is sock and self._loop is not None and not self._stopping:
            self._loop.add_writer(sock, self._writable)

    def _wrote(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        if self.on_loop():
            assert self._loop is not None
            self._loop.remove_writer(sock)
        else:
            schedule(self._loop, self._unwatch_write, sock)

    def _unwatch_write(self, sock: Any) -> None:
        if self.client.socket() is not sock:
            self._unwatch(sock)

    def _socket_closed(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        # paho closes the socket right after this: stop watching it now, on the loop's thread
        if self.on_loop():
            self._unwatch(sock)
            self._closed.set()
        else:  # a stale socket closed by reconnect() in the connecting thread
            schedule(self._loop, self._unwatch, sock)

    def _unwatch(self, sock: Any) -> None:
        if self._loop is not None:
            with contextlib.suppress(ValueError):  # closed already and never watched
                self._loop.remove_reader(sock)
                self._loop.remove_writer(sock)

    def on_loop(self) -> bool:
        """True when called on the loop's thread (paho's callbacks are, but for the CONNECT)."""
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False


def schedule(loop: asyncio.AbstractEventLoop | None, callback: Any, *args: Any) -> None:
    """Run `callback(*args)` on `loop` soon, from its own thread or from another one."""
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is not None and running is loop:
        loop.call_soon(callback, *args)
    else:
        call_from_thread(loop, callback, *args)
