"""The MQTT sink: telemetry, events and gateway status to a broker (the upstream link).

paho-mqtt runs its own network thread (loop_start); its callbacks are bridged into
the event loop with call_soon_threadsafe, so every piece of this sink's state is
touched from the loop only. Because a PUBACK's callback is queued behind the code
that published it, the mid is always registered before its confirmation is seen.

Topics (prefix defaults to "pm"):

- `<prefix>/<site>/gateway/status`   retained, QoS 1: birth {"state": "online"} on
  every (re)connect, last will {"state": "offline"} if the connection dies, and an
  explicit offline on a clean stop (a clean DISCONNECT does not fire the will).
- `<prefix>/<site>/telemetry/<device>`  one message per batch.
- `<prefix>/<site>/status/<device>`     device_status events, retained.
- `<prefix>/<site>/events/<type>`       other events.

Every message carries the outbox record id; the runner resends on SinkUnavailable,
so the platform sees duplicates with the same id, never gaps.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

import gateway
from gateway.batch import Batch, Event, Kind, Quality, Record
from gateway.catalog import Catalog
from gateway.config.models import MqttSinkConfig
from gateway.sinks.base import Sink, SinkUnavailable

log = structlog.get_logger(__name__)

PUBACK_TIMEOUT = 10.0  # seconds a send waits for the broker to confirm every message
MessageHandler = Callable[[str, bytes], Awaitable[None] | None]
STOP_TIMEOUT = 2.0
_MAX_INFLIGHT = 1000
_TOPIC_UNSAFE = str.maketrans({"+": "_", "#": "_", "/": "_", "\0": "_"})


def iso_utc(ts: float) -> str:
    """Seconds since the epoch → ISO-8601 UTC with milliseconds, e.g. 2024-05-01T08:00:00.123Z."""
    seconds, millis = divmod(round(ts * 1000), 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def _dumps(body: dict[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), default=str).encode("utf-8")


def _segment(name: str) -> str:
    """A topic level made safe: wildcards and separators would change the topic's meaning."""
    return name.translate(_TOPIC_UNSAFE) or "_"


class MqttSink(Sink):
    """Publishes readings and events to an MQTT broker; each send waits for every PUBACK."""

    def __init__(
        self, config: MqttSinkConfig, catalog: Catalog, client_id: str | None = None
    ) -> None:
        super().__init__(config.name)
        self.config = config
        self.catalog = catalog
        self.max_batch = config.batch_size
        self.client_id = client_id or config.client_id or f"{catalog.site_id}-gateway"
        self.site = catalog.site_id
        base = f"{config.topic_prefix}/{_segment(self.site)}"
        self.status_topic = f"{base}/gateway/status"
        self._telemetry = f"{base}/telemetry/"
        self._device_status = f"{base}/status/"
        self._events = f"{base}/events/"
        self.published = 0
        self._client: mqtt.Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connected = False
        self._connected_event: asyncio.Event | None = None
        self._pending: dict[int, asyncio.Future[bool]] = {}  # mid -> True on PUBACK, False if lost
        self._refused_logged = False
        self._stopping = False
        self._subscriptions: dict[str, tuple[MessageHandler, int]] = {}
        self._handlers: set[asyncio.Future[Any]] = set()

    @property
    def connected(self) -> bool:
        return self._connected

    # --- messages in (commands) ----------------------------------------------------

    def subscribe(self, topic: str, handler: MessageHandler, qos: int = 1) -> None:
        """Receive messages on `topic` over this connection (the platform's commands).

        Subscriptions are made again on every (re)connect; `handler(topic, payload)` runs on
        the event loop, and may be a coroutine function.
        """
        self._subscriptions[topic] = (handler, qos)
        if self._client is not None and self._connected:
            self._client.subscribe(topic, qos)

    async def publish_now(
        self, topic: str, payload: bytes, qos: int = 1, retain: bool = False,
        timeout: float = PUBACK_TIMEOUT,
    ) -> bool:
        """Publish outside the outbox (a command's reply); True once the broker confirmed."""
        client = self._client
        if client is None or not self._connected:
            return False
        info = client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            return False
        if qos == 0:
            return True
        future = asyncio.get_running_loop().create_future()
        self._pending[info.mid] = future
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            self._pending.pop(info.mid, None)
            return False

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self._call(self._dispatch, message.topic, bytes(message.payload))

    def _dispatch(self, topic: str, payload: bytes) -> None:
        for topic_filter, (handler, _qos) in self._subscriptions.items():
            if mqtt.topic_matches_sub(topic_filter, topic):
                result = handler(topic, payload)
                if asyncio.iscoroutine(result):
                    task = asyncio.ensure_future(result)
                    self._handlers.add(task)
                    task.add_done_callback(self._handler_done)

    def _handler_done(self, task: asyncio.Future[Any]) -> None:
        self._handlers.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("message handler failed", sink=self.name, error=repr(task.exception()))

    # --- life cycle --------------------------------------------------------------

    async def start(self) -> None:
        """Connect in the background; a broker that is down is retried by paho, not raised."""
        if self._client is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._stopping = False
        self._connected_event = asyncio.Event()
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=True,
            protocol=mqtt.MQTTv311,
        )
        if self.config.username:
            password = self.config.password.reveal() if self.config.password else None
            client.username_pw_set(self.config.username, password or None)
        client.will_set(self.status_topic, self._status("offline"), qos=1, retain=True)
        client.max_inflight_messages_set(_MAX_INFLIGHT)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.connect_timeout = 5.0
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        client.connect_async(
            self.config.host, self.config.port, keepalive=max(5, int(self.config.keepalive))
        )
        client.loop_start()
        self._client = client

    async def wait_connected(self, timeout: float) -> bool:
        """Wait until the broker accepted the connection (for start-up and tests)."""
        if self._connected_event is None:
            return False
        try:
            await asyncio.wait_for(self._connected_event.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def stop(self) -> None:
        """Announce offline (retained), disconnect cleanly and end the network thread, within ~2 s."""
        client, self._client = self._client, None
        if client is None:
            return
        self._stopping = True
        deadline = time.monotonic() + STOP_TIMEOUT
        if self._connected:
            info = client.publish(self.status_topic, self._status("offline"), qos=1, retain=True)
            while not info.is_published() and time.monotonic() < deadline - 0.5 and self._connected:
                await asyncio.sleep(0.02)
        client.disconnect()
        try:
            await asyncio.wait_for(
                asyncio.to_thread(client.loop_stop), max(0.1, deadline - time.monotonic())
            )
        except TimeoutError:
            log.warning("mqtt network thread did not stop in time", sink=self.name)
        self._set_disconnected("sink stopped")

    # --- paho callbacks (network thread) → loop ------------------------------------

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any
    ) -> None:
        if reason_code.is_failure:
            self._call(self._refused, str(reason_code))
            return
        # Birth first, from the network thread, so it precedes anything resent after a reconnect.
        client.publish(self.status_topic, self._status("online"), qos=1, retain=True)
        for topic, (_handler, qos) in list(self._subscriptions.items()):
            client.subscribe(topic, qos)
        self._call(self._set_connected)

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any
    ) -> None:
        self._call(self._set_disconnected, str(reason_code))

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason_code: Any, properties: Any
    ) -> None:
        self._call(self._confirmed, mid)

    def _call(self, callback: Any, *args: Any) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(callback, *args)
            except RuntimeError:  # loop closed between the check and the call
                pass

    # --- state, on the loop ----------------------------------------------------------

    def _set_connected(self) -> None:
        if self._stopping:  # a CONNACK that raced stop()
            return
        self._connected = True
        self._refused_logged = False
        if self._connected_event is not None:
            self._connected_event.set()
        log.info(
            "mqtt connected",
            sink=self.name,
            host=self.config.host,
            port=self.config.port,
            client_id=self.client_id,
        )

    def _set_disconnected(self, reason: str) -> None:
        was_connected = self._connected
        self._connected = False
        if self._connected_event is not None:
            self._connected_event.clear()
        if was_connected and not self._stopping:
            log.warning("mqtt disconnected", sink=self.name, host=self.config.host, reason=reason)
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_result(False)

    def _refused(self, reason: str) -> None:
        if not self._refused_logged:
            self._refused_logged = True
            log.error(
                "mqtt broker refused the connection",
                sink=self.name,
                host=self.config.host,
                port=self.config.port,
                client_id=self.client_id,
                username=self.config.username,
                reason=reason,
            )

    def _confirmed(self, mid: int) -> None:
        future = self._pending.pop(mid, None)
        if future is not None and not future.done():
            future.set_result(True)

    # --- sending ---------------------------------------------------------------------

    async def send(self, records: list[Record]) -> None:
        client = self._client
        if client is None or not self._connected:
            raise SinkUnavailable(
                f"not connected to mqtt broker {self.config.host}:{self.config.port}"
            )
        assert self._loop is not None
        qos = self.config.qos
        futures: list[asyncio.Future[bool]] = []
        # No await in this loop: PUBACK callbacks queue behind it, after each mid is registered.
        for record in records:
            topic, payload, retain = self._message(record)
            info = client.publish(topic, payload, qos=qos, retain=retain)
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                self._forget(futures)
                raise SinkUnavailable(f"mqtt publish failed: {mqtt.error_string(info.rc)}")
            future = self._loop.create_future()
            self._pending[info.mid] = future
            futures.append(future)
        try:
            confirmed = await asyncio.wait_for(asyncio.gather(*futures), PUBACK_TIMEOUT)
        except TimeoutError:
            self._forget(futures)
            raise SinkUnavailable(
                f"mqtt broker did not confirm {len(futures)} messages within {PUBACK_TIMEOUT:g} s"
            ) from None
        if not all(confirmed):
            raise SinkUnavailable("mqtt connection lost before the broker confirmed every message")
        self.published += len(futures)

    def _forget(self, futures: list[asyncio.Future[bool]]) -> None:
        wanted = set(map(id, futures))
        for mid in [m for m, f in self._pending.items() if id(f) in wanted]:
            del self._pending[mid]
        for future in futures:
            if not future.done():
                future.cancel()

    def _message(self, record: Record) -> tuple[str, bytes, bool]:
        """Topic, JSON payload and retain flag for one record."""
        item = record.item
        if record.kind == Kind.READING:
            assert isinstance(item, Batch)
            return (
                self._telemetry + _segment(item.device),
                self._telemetry_body(record.id, item),
                False,
            )
        assert isinstance(item, Event)
        body: dict[str, Any] = {
            "id": record.id,
            "site": self.site,
            "device": item.device,
            "ts": iso_utc(item.ts),
            "type": item.type,
        }
        for key, value in item.body.items():
            body.setdefault(key, value)  # the envelope wins over a body field of the same name
        if item.type == "device_status" and item.device:
            return self._device_status + _segment(item.device), _dumps(body), True
        return self._events + _segment(item.type), _dumps(body), False

    def _telemetry_body(self, record_id: str, batch: Batch) -> bytes:
        values: dict[str, Any] = {}
        quality: dict[str, str] = {}
        for point, value, q in batch.items():
            if q != Quality.GOOD:
                quality[point] = str(q)
            elif isinstance(value, float) and not math.isfinite(value):
                quality[point] = str(Quality.OUT_OF_RANGE)  # JSON has no NaN or infinity
            else:
                values[point] = value
        body: dict[str, Any] = {
            "id": record_id,
            "site": self.site,
            "device": batch.device,
            "ts": iso_utc(batch.ts),
            "values": values,
        }
        if quality:
            body["quality"] = quality
        return _dumps(body)

    def _status(self, state: str) -> bytes:
        body: dict[str, Any] = {"state": state, "site": self.site, "gateway": self.client_id}
        if state == "online":
            body["version"] = gateway.__version__
        body["ts"] = iso_utc(time.time())
        return _dumps(body)
