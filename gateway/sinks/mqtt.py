"""The MQTT sink: the upstream link to the central platform (contract: docs/upstream.md).

paho-mqtt's network I/O runs on the event loop (`PahoOnLoop`: no network thread, only a
daemon thread while a connection opens), so its callbacks run on the loop and every piece
of this sink's state is touched from the loop only. A PUBACK is read in a later turn of
the loop than the one that published (there is no await between publishing a batch and
registering its mids), so a mid is always registered before its confirmation is seen.

Topics and payloads are built in `contract.py`: `<prefix>/<site>/<gateway>/gateway/status`
(retained birth, last will and clean-stop offline), `.../telemetry/<device>`,
`.../status/<device>`, `.../alarms/<alarm>` and `.../tickets/<ticket>` (retained; a closed
alarm or ticket is an empty retained payload, which deletes it) and `.../events/<type>`.
Events go in a priority lane ahead of a telemetry backlog (the runner reads
`priority_kinds` first); telemetry may be filtered by report by exception (`report.py`)
and gzip-compressed.

Ordering of retained states: one alarm's states follow each other in the outbox's order,
in one lane, and a batch is published in that order on one connection, so the broker
keeps the newest. A batch that is sent again (no PUBACK, a reconnect) is sent again
whole and in order, after anything paho itself resends, so its last state still lands
last; the runner never moves to a newer record before an older one was confirmed.

Every message carries the outbox record id; the runner resends on SinkUnavailable,
so the platform sees duplicates with the same id, never gaps.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any

import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

import gateway
from gateway.batch import Batch, Event, Kind, Record
from gateway.catalog import Catalog
from gateway.config.models import MqttSinkConfig
from gateway.paho_loop import LeanPubackClient, PahoOnLoop, schedule, wait_set
from gateway.sinks import contract
from gateway.sinks.base import Sink, SinkUnavailable
from gateway.sinks.factory import client_id_of
from gateway.sinks.factory import gateway_id as default_gateway_id
from gateway.sinks.report import ReportFilter, policy_lookup
from gateway.sinks.tls import TlsSetupError, diagnose, ssl_context

log = structlog.get_logger(__name__)

PUBACK_TIMEOUT = 10.0  # seconds a send waits for the broker to confirm every message
MessageHandler = Callable[[str, bytes], Awaitable[None] | None]
STOP_TIMEOUT = 0.9  # within the daemon's share for stopping sinks
RECONNECT_MAX = 5  # seconds between attempts to reach a broker that is away
# No cap on messages in flight: with one, paho walks every message in flight after each
# PUBACK while fewer than the cap are out, which costs a batch quadratic time. A send has
# at most `batch_size` messages out, and _MAX_QUEUED bounds what paho keeps.
_MAX_INFLIGHT = 0
# paho keeps unconfirmed QoS 1 messages and resends them itself; after a PUBACK timeout the
# runner sends the batch again, so on a slow link copies would pile up without a cap. When
# the cap is hit, publishing fails and the runner backs off until paho's queue drains.
_MAX_QUEUED = 20_000
_PUBACK_PER_MESSAGE = 0.01  # seconds added to PUBACK_TIMEOUT per message of a batch


class _Awaited:
    """Messages of one send waiting for their PUBACKs: one future for all of them."""

    __slots__ = ("future", "left")

    def __init__(self, future: asyncio.Future[bool], left: int) -> None:
        self.future = future
        self.left = left


class MqttSink(Sink):
    """Publishes readings and events to an MQTT broker; each send waits for every PUBACK."""

    priority_kinds = frozenset({Kind.EVENT})  # the runner sends pending events first

    def __init__(
        self,
        config: MqttSinkConfig,
        catalog: Catalog,
        client_id: str | None = None,
        *,
        gateway_id: str | None = None,
        config_hash: str | None = None,
        started: float | None = None,
    ) -> None:
        super().__init__(config.name)
        self.config = config
        self.catalog = catalog
        self.max_batch = config.batch_size
        self.backlog_rate = config.backlog_rate  # records/s while a backlog drains
        self.site = catalog.site_id
        # the topic level; without one configured or given, the host name (see factory)
        self.gateway_id = gateway_id or default_gateway_id(config)
        self.client_id = client_id or config.client_id or client_id_of(self.site, self.gateway_id)
        self.identity = contract.Identity(self.site, self.gateway_id)
        self.topics = contract.Topics.of(config.topic_prefix, self.site, self.gateway_id)
        self.status_topic = self.topics.gateway_status
        self.info = contract.GatewayInfo(
            client_id=self.client_id,
            version=gateway.__version__,
            started=started if started is not None else time.time(),
            config_hash=config_hash,
            compression=config.compression,
            report_by_exception=config.report_by_exception,
        )
        self.report: ReportFilter | None = None
        if config.report_by_exception:
            self.report = ReportFilter(
                policy_lookup(config.report, lambda device: catalog.device(device).reports)
            )
        self.published = 0
        self.skipped = 0  # records that could not be encoded
        self.last_connect_error: str | None = None
        self._client: mqtt.Client | None = None
        self._network: PahoOnLoop | None = None
        self._tls: ssl.SSLContext | None = None
        self._setup_error: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connected = False
        self._connected_event: asyncio.Event | None = None
        self._pending: dict[int, _Awaited] = {}  # mid -> its send: True once all PUBACKed
        self._refused_logged = False
        self._diagnosis: asyncio.Task[None] | None = None
        self._stopping = False
        self._subscriptions: dict[str, tuple[MessageHandler, int]] = {}
        self._handlers: set[asyncio.Future[Any]] = set()

    @property
    def connected(self) -> bool:
        return self._connected

    async def announce(self, config_hash: str) -> None:
        """A reloaded configuration: publish the birth again with its hash (retained)."""
        self.info = dataclasses.replace(self.info, config_hash=config_hash)
        if self._client is not None and self._connected:
            birth = contract.gateway_status(self.identity, self.info, "online", now=time.time())
            await self.publish_now(self.status_topic, contract.dumps(birth), retain=True)

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
        awaited = _Awaited(asyncio.get_running_loop().create_future(), 1)
        self._pending[info.mid] = awaited
        try:
            return await asyncio.wait_for(awaited.future, timeout)
        except TimeoutError:
            self._pending.pop(info.mid, None)
            return False

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if message.retain:
            # A retained command would run again after every reconnect: never act on one.
            self._call(self._retained_ignored, message.topic)
            return
        self._call(self._dispatch, message.topic, bytes(message.payload))

    def _retained_ignored(self, topic: str) -> None:
        log.warning("retained message on a command topic ignored; commands must not be "
                    "retained", sink=self.name, topic=topic)

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
        """Connect in the background; a broker that is down is retried, not raised."""
        if self._client is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._stopping = False
        self._connected_event = asyncio.Event()
        if self.config.tls is not None:
            try:
                self._tls = ssl_context(self.config.tls)
            except TlsSetupError as exc:
                # A config mistake, not an outage: said once, loudly; send() keeps refusing.
                self._setup_error = f"mqtt TLS setup failed: {exc}"
                log.error("mqtt TLS setup failed", sink=self.name, error=str(exc))
                return
        client = LeanPubackClient(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=True,
            protocol=mqtt.MQTTv311,
        )
        if self._tls is not None:
            client.tls_set_context(self._tls)
        if self.config.username:
            password = self.config.password.reveal() if self.config.password else None
            client.username_pw_set(self.config.username, password or None)
        will = contract.gateway_status(self.identity, self.info, "offline", "connection_lost")
        client.will_set(self.status_topic, contract.dumps(will), qos=1, retain=True)
        client.max_inflight_messages_set(_MAX_INFLIGHT)
        client.max_queued_messages_set(_MAX_QUEUED)
        client.connect_timeout = 5.0
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        client.connect_async(
            self.config.host, self.config.port, keepalive=max(5, int(self.config.keepalive))
        )
        # A broker that is back is found within RECONNECT_MAX: a connection attempt is one
        # TCP handshake, cheap even on 4G, and a backlog should not wait half a minute.
        self._network = PahoOnLoop(
            client, min_delay=1.0, max_delay=RECONNECT_MAX, on_connect_failed=self._connect_failed
        )
        self._network.start()
        self._client = client

    async def wait_ready(self, timeout: float) -> None:
        """Back as soon as the broker is reachable again: while it was away the backoff grew
        to tens of seconds, and the backlog should not wait them out. A send that failed
        while connected (a PUBACK that did not come) waits the whole backoff."""
        if self.connected:
            await asyncio.sleep(timeout)
        else:
            await self.wait_connected(timeout)

    async def wait_connected(self, timeout: float) -> bool:
        """Wait until the broker accepted the connection (for start-up and tests)."""
        return await wait_set(self._connected_event, timeout)

    async def stop(self) -> None:
        """Announce offline (retained) and disconnect cleanly, within ~1 s."""
        client, self._client = self._client, None
        if client is None:
            return
        self._stopping = True
        deadline = time.monotonic() + STOP_TIMEOUT
        if self._diagnosis is not None:
            self._diagnosis.cancel()
        if self._connected:
            stopped = contract.gateway_status(
                self.identity, self.info, "offline", "stopped", now=time.time()
            )
            info = client.publish(self.status_topic, contract.dumps(stopped), qos=1, retain=True)
            while not info.is_published() and time.monotonic() < deadline - 0.5 and self._connected:
                await asyncio.sleep(0.02)
        client.disconnect()
        network, self._network = self._network, None
        if network is not None and not await network.stop(deadline - time.monotonic()):
            log.warning("mqtt connection closed without a clean disconnect", sink=self.name)
        self._set_disconnected("sink stopped")

    # --- paho callbacks → loop (queued: paho holds its locks while it calls them) -----

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any
    ) -> None:
        if reason_code.is_failure:
            self._call(self._refused, str(reason_code))
            return
        # Birth first, from the callback, so it precedes anything paho resends after a reconnect.
        birth = contract.gateway_status(self.identity, self.info, "online", now=time.time())
        client.publish(self.status_topic, contract.dumps(birth), qos=1, retain=True)
        self._call(self._set_connected)

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any
    ) -> None:
        self._call(self._set_disconnected, str(reason_code))

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason_code: Any, properties: Any
    ) -> None:
        # On the loop (PahoOnLoop): settle the send's future now, one queued call saved per
        # message; it calls nothing of paho's, so paho's locks do not matter.
        if self._network is not None and self._network.on_loop():
            self._confirmed(mid)
        else:
            self._call(self._confirmed, mid)

    def _call(self, callback: Any, *args: Any) -> None:
        schedule(self._loop, callback, *args)

    # --- state, on the loop ----------------------------------------------------------

    def _set_connected(self) -> None:
        if self._stopping:  # a CONNACK that raced stop()
            return
        self._connected = True
        self._refused_logged = False
        self.last_connect_error = None
        # Subscriptions are made here, on the loop, where subscribe() also runs: from the
        # network thread a subscription registered between CONNACK and this point was lost.
        if self._client is not None:
            for topic, (_handler, qos) in list(self._subscriptions.items()):
                self._client.subscribe(topic, qos)
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
        for awaited in pending.values():
            if not awaited.future.done():
                awaited.future.set_result(False)

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

    def _connect_failed(self) -> None:
        """paho could not connect (TCP or TLS); find out why, once per outage."""
        if self._diagnosis is None and self.last_connect_error is None and not self._stopping:
            self._diagnosis = asyncio.ensure_future(self._diagnose())

    async def _diagnose(self) -> None:
        try:
            reason = await asyncio.to_thread(
                diagnose, self.config.host, self.config.port, self._tls
            )
            self.last_connect_error = reason or "connection failed (the broker closed it)"
            log.error(
                "mqtt cannot connect to the broker",
                sink=self.name, host=self.config.host, port=self.config.port,
                tls=self._tls is not None, reason=self.last_connect_error,
            )
        finally:
            self._diagnosis = None

    def _confirmed(self, mid: int) -> None:
        awaited = self._pending.pop(mid, None)
        if awaited is not None:
            awaited.left -= 1
            if awaited.left == 0 and not awaited.future.done():
                awaited.future.set_result(True)

    # --- sending ---------------------------------------------------------------------

    async def send(self, records: list[Record]) -> None:
        """Publish every record (telemetry filtered by report by exception, if on) and
        return once the broker confirmed each message; raise SinkUnavailable otherwise."""
        client = self._client
        if self._setup_error is not None:
            raise SinkUnavailable(self._setup_error)
        if client is None or not self._connected:
            reason = f": {self.last_connect_error}" if self.last_connect_error else ""
            raise SinkUnavailable(
                f"not connected to mqtt broker {self.config.host}:{self.config.port}{reason}"
            )
        try:
            messages = [m for record in records if (m := self._encodable(record)) is not None]
            await self._publish_all(client, messages)
        except BaseException:
            if self.report is not None:
                self.report.rollback()  # the retry must decide the same way
            raise
        if self.report is not None:
            self.report.commit()
        self.published += len(messages)

    async def _publish_all(
        self, client: mqtt.Client, messages: list[tuple[str, bytes, bool]]
    ) -> None:
        assert self._loop is not None
        qos = self.config.qos
        if not messages:
            return
        # paho confirms QoS 1 on PUBACK, QoS 2 on PUBCOMP and QoS 0 once written
        awaited = _Awaited(self._loop.create_future(), len(messages))
        pending = self._pending
        publish = client.publish
        # No await in this loop: PUBACK callbacks queue behind it, after each mid is registered.
        for topic, payload, retain in messages:
            info = publish(topic, payload, qos=qos, retain=retain)
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                self._forget(awaited)
                raise SinkUnavailable(f"mqtt publish failed: {mqtt.error_string(info.rc)}")
            pending[info.mid] = awaited
        timeout = PUBACK_TIMEOUT + _PUBACK_PER_MESSAGE * len(messages)  # a slow link, a big batch
        try:
            confirmed = await asyncio.wait_for(awaited.future, timeout)
        except TimeoutError:
            self._forget(awaited)
            raise SinkUnavailable(
                f"mqtt broker did not confirm {awaited.left} of {len(messages)} messages "
                f"within {timeout:g} s"
            ) from None
        if not confirmed:
            raise SinkUnavailable("mqtt connection lost before the broker confirmed every message")

    def _forget(self, awaited: _Awaited) -> None:
        for mid in [m for m, a in self._pending.items() if a is awaited]:
            del self._pending[mid]
        if not awaited.future.done():
            awaited.future.cancel()

    def _encodable(self, record: Record) -> tuple[str, bytes, bool] | None:
        """The record's message; a record that cannot be encoded (an absurd timestamp) is
        logged and skipped like a line InfluxDB refuses, so one bad record never stalls the
        link: retrying it would fail the same way for ever."""
        try:
            return self._message(record)
        except (ValueError, OverflowError, OSError, TypeError) as exc:
            item = record.item
            log.error("record cannot be sent upstream; skipped", sink=self.name,
                      record=record.id, device=getattr(item, "device", None),
                      ts=getattr(item, "ts", None), error=repr(exc))
            self.skipped += 1
            return None

    def _message(self, record: Record) -> tuple[str, bytes, bool] | None:
        """Topic, payload and retain flag for one record; None when report by exception
        leaves every point of a batch out."""
        item = record.item
        if record.kind == Kind.READING:
            assert isinstance(item, Batch)
            batch = self.report.filter(item) if self.report is not None else item
            if batch is None:
                return None
            payload = contract.dumps(contract.telemetry(self.identity, record.id, record.seq, batch))
            if self.config.compression == "gzip":
                payload = contract.compress(payload)
            return self.topics.telemetry(batch.device), payload, False
        assert isinstance(item, Event)
        return contract.event_message(self.topics, self.identity, record.id, record.seq, item)
