"""The MQTT driver: a device is a set of topic subscriptions whose payloads map to points.

Points are grouped by topic filter at start-up (`compile_topics`); a message becomes one
batch holding the points of every filter its topic matches, decoded from one parse of
the payload. Nothing a device sends can raise: malformed payloads are counted by reason
and logged once a minute, a flood is cut down by the device's own token bucket, and its
neighbours on the broker never notice. The device is never polled (`poll_groups` is
empty); the poller's `watch_forever` takes it offline when it falls silent.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from paho.mqtt.client import topic_matches_sub

from drivers.base import Driver, DriverError, Emit, PollGroup
from drivers.mqtt.broker import Broker, broker_key, check_filter
from drivers.mqtt.limits import LogGate, TokenBucket
from drivers.mqtt.payload import (
    OVERSIZED,
    Message,
    OutOfRange,
    PayloadError,
    PointDecoder,
    Timestamp,
    compile_point,
)
from gateway.batch import Batch, Quality
from gateway.config.models import Device, MqttConnection, MqttPoint, Profile

log = structlog.get_logger(__name__)

BAD_REQUEST = "bad_request"
PUBLISH_TIMEOUT = 5.0  # seconds a write waits for the broker to confirm
LOG_EVERY = 60.0  # seconds between log lines about one device's recurring problem
MAX_TOPIC_CACHE = 1024


@dataclass(frozen=True, slots=True)
class TopicPlan:
    """The points one topic filter carries, in profile order, with their decoders."""

    filter: str
    points: tuple[str, ...]
    decoders: tuple[PointDecoder, ...]


def join_topic(base: str, topic: str) -> str:
    """A point's topic under the device's base topic; "" is the base topic itself."""
    if not topic:
        return base
    return f"{base.rstrip('/')}/{topic.lstrip('/')}" if base else topic


def compile_topics(device: Device, profile: Profile) -> tuple[TopicPlan, ...]:
    """The device's points grouped by full topic filter; ValueError naming the device and
    point for a topic, JSON path or map that cannot work."""
    connection = device.connection
    assert isinstance(connection, MqttConnection)
    grouped: dict[str, list[PointDecoder]] = {}
    for name, point in profile.points.items():
        assert isinstance(point, MqttPoint)
        what = f"device {device.id} point {name}"
        topic = join_topic(connection.base_topic, point.topic)
        try:
            check_filter(topic)
        except ValueError as exc:
            raise ValueError(f"{what}: {exc}") from None
        grouped.setdefault(topic, []).append(compile_point(name, point, what))
    return tuple(
        TopicPlan(topic, tuple(d.name for d in decoders), tuple(decoders))
        for topic, decoders in grouped.items()
    )


@dataclass(slots=True)
class MessageStats:
    """What one device sent: accepted messages, problems by reason, throttled ones."""

    received: int = 0  # every message routed to the device, retained ones included
    messages: int = 0  # decoded into a batch
    throttled: int = 0
    errors: dict[str, int] = field(default_factory=dict)  # reason -> messages
    last_message: float | None = None  # epoch seconds, any message

    def count(self, reason: str) -> None:
        self.errors[reason] = self.errors.get(reason, 0) + 1

    def snapshot(self) -> dict[str, Any]:
        return {
            "received": self.received, "messages": self.messages, "throttled": self.throttled,
            "errors": dict(self.errors), "last_message": self.last_message,
        }


class MqttDriver(Driver):
    """One device on a broker it may share with others (the registry passes shared brokers).

    Without a `broker` the driver opens its own and closes it at stop, for tools and tests.
    """

    def __init__(self, device: Device, profile: Profile, broker: Broker | None = None) -> None:
        super().__init__(device, profile)
        connection = device.connection
        if not isinstance(connection, MqttConnection):
            raise ValueError(f"device {device.id}: an MQTT driver needs an mqtt connection")
        self.connection = connection
        self.plans = compile_topics(device, profile)
        self.timestamp = Timestamp(connection.timestamp_path, f"device {device.id} timestamp_path")
        self._owns_broker = broker is None
        self.broker = broker if broker is not None else Broker(broker_key(connection))
        self._points = tuple(name for plan in self.plans for name in plan.points)
        self._decoders = {d.name: d for plan in self.plans for d in plan.decoders}
        self._topics: dict[str, TopicPlan] = {}  # concrete topic -> merged plan
        self._bucket = TokenBucket(connection.max_rate)
        self._problem_gate = LogGate(LOG_EVERY)
        self._throttle_gate = LogGate(LOG_EVERY)
        self._stats = MessageStats()
        self._emit: Emit | None = None
        self.last_seen: float | None = None  # epoch seconds of the last live (not retained) message
        self._log = log.bind(device=device.id, broker=self.broker.name)

    # --- the driver interface ----------------------------------------------------------

    @property
    def points(self) -> tuple[str, ...]:
        return self._points

    @property
    def poll_groups(self) -> dict[str, PollGroup]:
        """None: the device pushes its values, so there is nothing to time."""
        return {}

    @property
    def silence(self) -> float:
        """Seconds without a message after which the device is offline."""
        return self.connection.silence

    def stats(self) -> dict[str, Any]:
        return {**self._stats.snapshot(), "last_seen": self.last_seen, **self.broker.stats()}

    async def start(self, emit: Emit) -> None:
        """Subscribe the device's topics; the broker connects (or retries) in the background."""
        self._emit = emit
        await self.broker.start()
        for plan in self.plans:
            self.broker.subscribe(plan.filter, self.connection.qos, self)

    async def wait_subscribed(self, timeout: float) -> bool:
        """Wait until the broker acknowledged every subscription (start-up, tests)."""
        return await self.broker.wait_ready(timeout)

    async def stop(self) -> None:
        for plan in self.plans:
            self.broker.unsubscribe(plan.filter, self)
        self._emit = None
        if self._owns_broker:
            await self.broker.close()

    async def read(self, group: str = "default") -> Batch:
        raise DriverError(
            f"{self.device.id} is an MQTT device: its values arrive as messages and are not polled",
            BAD_REQUEST,
        )

    async def write(self, point: str, value: Any) -> None:
        """Publish {"point", "value", "ts"} as JSON to the device's command_topic.

        Raises DriverError: bad_request (no such point, not writable, no command_topic,
        a value of the wrong type or outside min/max, the map or the enum), comm_failure
        (not connected, or the broker did not confirm).
        """
        decoder = self._decoders.get(point)
        if decoder is None:
            raise DriverError(f"{self.device.id} has no point {point!r}", BAD_REQUEST)
        spec = self.profile.points[point]
        assert isinstance(spec, MqttPoint)
        if not spec.writable:
            raise DriverError(
                f"point {point} of {self.device.id} is not writable "
                f"(profile {self.profile.id} does not mark it writable: true)", BAD_REQUEST,
            )
        topic = self.connection.command_topic
        if not topic:
            raise DriverError(f"{self.device.id} has no command_topic to write to", BAD_REQUEST)
        checked = _value_to_write(spec, decoder, value)
        body = {"point": point, "value": checked, "ts": _iso_now()}
        payload = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        try:
            await self.broker.publish(topic, payload, self.connection.qos, PUBLISH_TIMEOUT)
        except (ConnectionError, TimeoutError) as exc:
            raise DriverError(
                f"writing {point} of {self.device.id}: "
                f"{str(exc) or f'the broker did not confirm within {PUBLISH_TIMEOUT:g} s'}",
                Quality.COMM_FAILURE,
            ) from exc
        self._log.info("point written", point=point, topic=topic, value=decoder.shown(checked))

    # --- messages (on the loop, from the broker) ---------------------------------------

    def receive(self, topic: str, payload: bytes, retained: bool, wall: float, mono: float) -> None:
        """One message: throttle, size check, decode, one batch. Never raises for what the
        device sent."""
        stats = self._stats
        stats.received += 1
        stats.last_message = wall
        if not retained:  # a retained message is the broker's memory, not proof of life
            self.last_seen = wall
        if not self._bucket.take(mono):
            stats.throttled += 1
            held = self._throttle_gate.open(mono)
            if held is not None:
                self._log.warning(
                    "mqtt device publishes too fast; dropping the excess", topic=topic,
                    max_rate=self.connection.max_rate, throttled=stats.throttled,
                )
            return
        if len(payload) > self.connection.max_payload:
            stats.count(OVERSIZED)
            self._problem(topic, OVERSIZED, None,
                          f"{len(payload)} bytes, more than max_payload {self.connection.max_payload}",
                          mono)
            return
        plan = self._plan(topic)
        if plan is None or self._emit is None:
            return
        message = Message(payload)
        values: list[Any] = [None] * len(plan.points)
        quality: list[str] | None = None
        reasons: set[str] | None = None
        for index, decoder in enumerate(plan.decoders):
            try:
                values[index] = decoder.decode(message)
            except PayloadError as exc:
                quality = quality or [Quality.GOOD] * len(values)
                quality[index] = Quality.DECODE_ERROR
                if reasons is None or exc.reason not in reasons:
                    reasons = (reasons or set()) | {exc.reason}
                    stats.count(exc.reason)
                    self._problem(topic, exc.reason, decoder.name, exc.detail, mono)
            except OutOfRange:
                quality = quality or [Quality.GOOD] * len(values)
                quality[index] = Quality.OUT_OF_RANGE
        ts = wall
        try:
            ts = self.timestamp.of(message) or wall
        except PayloadError as exc:
            stats.count(exc.reason)
            self._problem(topic, exc.reason, None, exc.detail, mono)
        stats.messages += 1
        self._emit(Batch(self.device.id, ts, plan.points, values, quality))

    def _plan(self, topic: str) -> TopicPlan | None:
        """The points a concrete topic carries: every filter it matches, merged, remembered."""
        plan = self._topics.get(topic)
        if plan is None:
            matched = [p for p in self.plans if topic_matches_sub(p.filter, topic)]
            if not matched:
                return None
            plan = matched[0] if len(matched) == 1 else TopicPlan(
                topic,
                tuple(n for p in matched for n in p.points),
                tuple(d for p in matched for d in p.decoders),
            )
            if len(self._topics) >= MAX_TOPIC_CACHE:
                self._topics.clear()
            self._topics[topic] = plan
        return plan

    def _problem(self, topic: str, reason: str, point: str | None, detail: str, mono: float) -> None:
        """Log a malformed payload, at most once a minute per device, with what was held back."""
        held = self._problem_gate.open(mono)
        if held is None:
            return
        self._log.warning(
            "malformed mqtt payload", topic=topic, reason=reason, point=point, detail=detail,
            errors=dict(self._stats.errors), held_back=held,
        )


def _value_to_write(point: MqttPoint, decoder: PointDecoder, value: Any) -> Any:
    """The value as the command carries it: of the point's type, within its map, range and enum."""
    checked = _of_type(point.type, value)
    if checked is None:
        raise DriverError(f"cannot write {value!r}: the point is a {point.type}", BAD_REQUEST)
    if decoder.value_map is not None and checked not in decoder.value_map.values():
        allowed = ", ".join(map(repr, dict.fromkeys(decoder.value_map.values())))
        raise DriverError(f"{value!r} is not one of the point's mapped values ({allowed})", BAD_REQUEST)
    if decoder.numeric and not decoder.low <= checked <= decoder.high:
        raise DriverError(f"{value!r} is outside the point's range {_range(point)}", BAD_REQUEST)
    if point.enum is not None and point.type == "integer" and checked not in point.enum:
        known = ", ".join(f"{code} ({text})" for code, text in point.enum.items())
        raise DriverError(f"{value!r} is not one of the point's codes: {known}", BAD_REQUEST)
    return checked


def _of_type(kind: str, value: Any) -> Any:
    """`value` as a `kind` point holds it, or None; stricter than decoding: a command says
    what it means (no "21" for a number, no "on" for a bool)."""
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "number" and is_number and math.isfinite(value):
        return float(value)
    if kind == "integer" and is_number and math.isfinite(value) and float(value).is_integer():
        return int(value)
    if kind == "bool" and (isinstance(value, bool) or (is_number and value in (0, 1))):
        return bool(value)
    if kind == "text" and isinstance(value, str):
        return value
    return None


def _range(point: MqttPoint) -> str:
    low = "-inf" if point.min is None else f"{point.min:g}"
    high = "+inf" if point.max is None else f"{point.max:g}"
    return f"[{low}, {high}]"


def _iso_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
