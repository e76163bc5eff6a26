"""One paho client per broker endpoint and credentials, shared by every device that publishes there.

paho runs its own network thread (loop_start), which reconnects by itself; every
callback is bridged into the event loop, so subscriptions, routes and listeners are
touched from the loop only. Incoming messages are the exception, for speed: the network
thread stamps each one and appends it to an inbox, and one loop callback drains many
messages at a time, so a flood costs the loop one callback per drain rather than per
message. After every (re)connect the broker subscribes every registered filter again:
sessions are clean, so the broker forgets subscriptions with the connection.
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from gateway.config.models import MqttConnection
from gateway.loop_call import call_from_thread
from gateway.paho_loop import stop_network_thread, wait_set

log = structlog.get_logger(__name__)

KEEPALIVE = 30  # seconds
STOP_TIMEOUT = 1.0  # seconds close() waits for the network thread
MAX_INBOX = 10_000  # messages waiting for the loop; beyond this the loop is not keeping up
DRAIN_BATCH = 500  # messages one loop callback handles before letting other tasks run
MAX_ROUTES = 4096  # concrete topics whose listeners are remembered


class Listener(Protocol):
    """What receives a broker's messages: one device's driver."""

    def receive(self, topic: str, payload: bytes, retained: bool, wall: float, mono: float) -> None:
        """A message on a topic the listener subscribed to; `wall` is the arrival time
        (epoch seconds), `mono` the same instant on the monotonic clock."""


@dataclass(frozen=True, slots=True)
class BrokerKey:
    """What makes two devices share one client: the endpoint, the credentials, the client id."""

    host: str
    port: int
    username: str | None
    password: str | None = field(repr=False)
    client_id: str | None

    @property
    def name(self) -> str:
        return f"{self.host}:{self.port}"


def broker_key(connection: MqttConnection) -> BrokerKey:
    """The key of the client a device's connection uses (the password resolved by the loader)."""
    password = connection.password.reveal() if connection.password is not None else None
    return BrokerKey(
        connection.host, connection.port, connection.username, password or None,
        connection.client_id,
    )


def derived_client_id() -> str:
    """A client id unique to this process: a broker drops a client when another takes its id."""
    return f"{socket.gethostname()[:24]}-southbound-{uuid.uuid4().hex[:8]}"


def check_filter(topic_filter: str) -> None:
    """ValueError when `topic_filter` is not a valid MQTT subscription (wildcards misplaced)."""
    if not topic_filter:
        raise ValueError("the topic is empty")
    levels = topic_filter.split("/")
    for index, level in enumerate(levels):
        if "#" in level and (level != "#" or index != len(levels) - 1):
            raise ValueError(f"{topic_filter!r}: # stands alone as the last level (a/b/#)")
        if "+" in level and level != "+":
            raise ValueError(f"{topic_filter!r}: + stands alone in its level (a/+/c)")


class Broker:
    """A shared connection to one broker: devices register filters, the broker routes messages."""

    def __init__(self, key: BrokerKey, *, keepalive: int = KEEPALIVE) -> None:
        self.key = key
        self.name = key.name
        self.client_id = key.client_id or derived_client_id()
        self.keepalive = keepalive
        self._client: mqtt.Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._filters: dict[str, dict[Listener, int]] = {}  # filter -> listener -> qos
        self._routes: dict[str, tuple[Listener, ...]] = {}  # topic -> listeners, remembered
        self._inbox: deque[tuple[str, bytes, bool, float, float]] = deque()
        self._drain_scheduled = False
        self._connected = False
        self._ready: asyncio.Event | None = None  # connected and every filter acknowledged
        self._suback: dict[int, tuple[str, ...]] = {}  # mid -> filters awaiting SUBACK
        self._puback: dict[int, asyncio.Future[bool]] = {}
        self._refused_logged = False
        self.connects = 0
        self.overflow = 0  # messages dropped because the loop fell behind

    @property
    def connected(self) -> bool:
        return self._connected

    def stats(self) -> dict[str, Any]:
        return {
            "broker": self.name, "connected": self._connected, "connects": self.connects,
            "overflow": self.overflow,
        }

    # --- life cycle ------------------------------------------------------------------

    async def start(self) -> None:
        """Connect in the background (idempotent); a broker that is down is retried by paho."""
        if self._client is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._ready = asyncio.Event()
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=True,
            protocol=mqtt.MQTTv311,
        )
        if self.key.username:
            client.username_pw_set(self.key.username, self.key.password)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.connect_timeout = 5.0
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        client.connect_async(self.key.host, self.key.port, keepalive=self.keepalive)
        client.loop_start()
        self._client = client

    async def close(self) -> None:
        """Disconnect and end the network thread, within about STOP_TIMEOUT seconds."""
        client, self._client = self._client, None
        if client is None:
            return
        client.disconnect()
        if not await stop_network_thread(client, STOP_TIMEOUT):
            log.warning("mqtt network thread did not stop in time", broker=self.name)
        self._set_disconnected("closed", quiet=True)
        self._inbox.clear()

    async def wait_ready(self, timeout: float) -> bool:
        """Wait until connected with every registered filter acknowledged by the broker."""
        return await wait_set(self._ready, timeout)

    # --- subscriptions (on the loop) -------------------------------------------------

    def subscribe(self, topic_filter: str, qos: int, listener: Listener) -> None:
        """Route messages matching `topic_filter` to `listener`, now and after every reconnect."""
        check_filter(topic_filter)
        listeners = self._filters.setdefault(topic_filter, {})
        before = max(listeners.values(), default=-1)
        listeners[listener] = qos
        self._routes.clear()
        if qos > before and self._connected:
            self._send_subscribe([(topic_filter, qos)])

    def unsubscribe(self, topic_filter: str, listener: Listener) -> None:
        listeners = self._filters.get(topic_filter)
        if listeners is None or listener not in listeners:
            return
        del listeners[listener]
        self._routes.clear()
        if not listeners:
            del self._filters[topic_filter]
            if self._connected and self._client is not None:
                self._client.unsubscribe(topic_filter)

    def _send_subscribe(self, filters: list[tuple[str, int]]) -> None:
        if self._client is None or not filters:
            return
        result, mid = self._client.subscribe(filters)
        if result != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            return  # not connected after all: on_connect subscribes everything again
        self._suback[mid] = tuple(f for f, _qos in filters)
        if self._ready is not None:
            self._ready.clear()

    # --- publishing (on the loop) ----------------------------------------------------

    async def publish(self, topic: str, payload: bytes, qos: int, timeout: float = 5.0) -> None:
        """Publish and, for QoS 1 and 2, wait for the broker's confirmation.

        Raises ConnectionError when not connected or the connection drops first,
        TimeoutError when the broker does not confirm within `timeout`.
        """
        client = self._client
        if client is None or not self._connected or self._loop is None:
            raise ConnectionError(f"not connected to mqtt broker {self.name}")
        info = client.publish(topic, payload, qos=qos)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise ConnectionError(f"mqtt publish to {self.name} failed: {mqtt.error_string(info.rc)}")
        if qos == 0:
            return
        # registered before any await: the PUBACK's callback is queued behind this code
        future = self._loop.create_future()
        self._puback[info.mid] = future
        try:
            confirmed = await asyncio.wait_for(future, timeout)
        finally:
            self._puback.pop(info.mid, None)
        if not confirmed:
            raise ConnectionError(f"connection to {self.name} lost before the broker confirmed")

    # --- paho callbacks (network thread) ---------------------------------------------

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any,
                    properties: Any) -> None:
        if reason_code.is_failure:
            self._call(self._refused, str(reason_code))
        else:
            self._call(self._set_connected)

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any,
                       properties: Any) -> None:
        self._call(self._set_disconnected, str(reason_code))

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, reason_codes: Any,
                      properties: Any) -> None:
        refused = [i for i, code in enumerate(reason_codes) if code.is_failure]
        self._call(self._subscribed, mid, refused)

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason_code: Any,
                    properties: Any) -> None:
        self._call(self._confirmed, mid)

    def _on_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            topic = message.topic
        except UnicodeDecodeError:  # the protocol requires UTF-8; a broken publisher
            return
        if len(self._inbox) >= MAX_INBOX:
            self.overflow += 1
            return
        self._inbox.append((topic, message.payload, message.retain, time.time(), time.monotonic()))
        if not self._drain_scheduled:
            self._drain_scheduled = True
            self._call(self._drain)

    def _call(self, callback: Any, *args: Any) -> None:
        call_from_thread(self._loop, callback, *args)

    # --- state, on the loop ------------------------------------------------------------

    def _set_connected(self) -> None:
        if self._client is None:  # a CONNACK that raced close()
            return
        self._connected = True
        self.connects += 1
        self._refused_logged = False
        self._suback.clear()
        log.info("mqtt broker connected", broker=self.name, client_id=self.client_id,
                 filters=len(self._filters))
        filters = [(f, max(listeners.values())) for f, listeners in self._filters.items()]
        self._send_subscribe(filters)
        if not self._suback and self._ready is not None:
            self._ready.set()

    def _set_disconnected(self, reason: str, *, quiet: bool = False) -> None:
        was = self._connected
        self._connected = False
        self._suback.clear()
        if self._ready is not None:
            self._ready.clear()
        if was and not quiet and self._client is not None:
            log.warning("mqtt broker disconnected; reconnecting", broker=self.name, reason=reason)
        pending, self._puback = self._puback, {}
        for future in pending.values():
            if not future.done():
                future.set_result(False)

    def _refused(self, reason: str) -> None:
        if not self._refused_logged:
            self._refused_logged = True
            log.error("mqtt broker refused the connection", broker=self.name,
                      client_id=self.client_id, username=self.key.username, reason=reason)

    def _subscribed(self, mid: int, refused: list[int]) -> None:
        filters = self._suback.pop(mid, ())
        if refused and filters:
            log.error("mqtt broker refused subscriptions (check its ACL)", broker=self.name,
                      filters=[filters[i] for i in refused if i < len(filters)])
        if not self._suback and self._connected and self._ready is not None:
            self._ready.set()

    def _confirmed(self, mid: int) -> None:
        future = self._puback.pop(mid, None)
        if future is not None and not future.done():
            future.set_result(True)

    def _drain(self) -> None:
        self._drain_scheduled = False
        for _ in range(DRAIN_BATCH):
            try:
                topic, payload, retained, wall, mono = self._inbox.popleft()
            except IndexError:
                return
            for listener in self._route(topic):
                try:
                    listener.receive(topic, payload, retained, wall, mono)
                except Exception:  # one device's bug must not stop the others' messages
                    log.exception("mqtt message handler failed", broker=self.name, topic=topic)
        if self._inbox and not self._drain_scheduled and self._loop is not None:
            self._drain_scheduled = True
            self._loop.call_soon(self._drain)

    def _route(self, topic: str) -> tuple[Listener, ...]:
        """The listeners of every filter `topic` matches, each once."""
        listeners = self._routes.get(topic)
        if listeners is None:
            found: dict[Listener, None] = {}
            for topic_filter, subscribed in self._filters.items():
                if mqtt.topic_matches_sub(topic_filter, topic):
                    found.update(dict.fromkeys(subscribed))
            listeners = tuple(found)
            if len(self._routes) >= MAX_ROUTES:
                self._routes.clear()
            self._routes[topic] = listeners
        return listeners
