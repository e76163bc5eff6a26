"""`gateway probe`: read one device once with the daemon's own driver and compiled plan.

What the engineer compares with the device's manual: each point's value, unit and
quality, and what was on the wire — for Modbus the words (or bits) of the request that
read it, from the driver's `replies` hook; for MQTT the payload that carried it. BACnet
values arrive decoded by the stack: there is nothing rawer to show ("-").
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from drivers.base import DriverError
from gateway.batch import Batch, Quality
from gateway.commission.target import describe
from gateway.commission.terminal import Progress
from gateway.config.models import BacnetLocal, Device, Profile
from gateway.textable import format_table

RAW_SHOWN = 48  # characters of an MQTT payload in the table (--json has it all)
RAW_KEPT = 2000  # characters of it kept at all


@dataclass(slots=True)
class PointRow:
    point: str
    name: str | None
    value: Any
    text: str | None  # the enum's text for the value, where the profile has one
    unit: str | None
    quality: str
    raw: str  # as shown: hex words, bits, a payload, an exception; "-" when nothing applies
    words: list[int] | None = None  # Modbus: the registers (or bits as 0/1) of this point


@dataclass(slots=True)
class RequestRow:
    """One Modbus request of the round and what came back."""

    request: str  # "holding 0-4"
    answered: bool  # words or an exception came back
    outcome: str  # "5 words", "exception 2 (illegal_address)", "timeout: no answer ..."
    words: list[int] | None
    latency_ms: float | None


@dataclass(slots=True)
class ProbeRound:
    device: str
    connection: str
    ts: float
    answered: bool
    error: str | None
    elapsed_ms: float
    points: list[PointRow]
    requests: list[RequestRow] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Prober(Protocol):
    steps: int  # for the progress bar

    async def read(self, progress: Progress) -> ProbeRound: ...

    async def close(self) -> None: ...


def make_prober(device: Device, profile: Profile, *, bacnet: BacnetLocal | None = None,
                wait: float = 10.0) -> Prober:
    """The prober for the device's protocol (its driver, with a connection of its own)."""
    kind = device.connection.type
    if kind.startswith("modbus"):
        return ModbusProber(device, profile)
    if kind == "bacnet_ip":
        return BacnetProber(device, profile, bacnet or BacnetLocal())
    if kind == "mqtt":
        return MqttProber(device, profile, wait)
    raise ValueError(f"device {device.id}: cannot probe a {kind} connection")


class _Rows:
    """Point rows in profile order with the profile's names, units and enum texts."""

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self.rows: dict[str, PointRow] = {}

    def add(self, batch: Batch, raws: dict[int, tuple[str, list[int] | None]]) -> None:
        for index, (point, value, quality) in enumerate(batch.items()):
            spec = self.profile.points.get(point)
            raw, words = raws.get(index, ("-", None))
            good = quality == Quality.GOOD
            enum = getattr(spec, "enum", None) or {}
            self.rows[point] = PointRow(
                point=point, name=getattr(spec, "name", None), value=value if good else None,
                text=enum.get(value) if good and isinstance(value, int) else None,
                unit=getattr(spec, "unit", None), quality=str(quality), raw=raw, words=words)

    def ordered(self) -> list[PointRow]:
        order = {name: i for i, name in enumerate(self.profile.points)}
        return sorted(self.rows.values(), key=lambda row: order.get(row.point, len(order)))


# --- Modbus --------------------------------------------------------------------------------


class ModbusProber:
    """Runs every poll group's plan once; the words come from the driver's `replies`."""

    def __init__(self, device: Device, profile: Profile, bus: Any = None) -> None:
        from drivers.modbus.driver import ModbusDriver

        self.device = device
        self.profile = profile
        self.bus = bus  # tests give one; otherwise the driver opens its own
        self.driver = ModbusDriver(device, profile, bus)
        self.steps = sum(len(plan.requests) for plan in self.driver.plans.values())

    async def read(self, progress: Progress) -> ProbeRound:
        started = time.monotonic()
        rows = _Rows(self.profile)
        requests: list[RequestRow] = []
        answered, error, done = False, None, 0
        for group, plan in self.driver.plans.items():
            if error is not None and not answered:
                # the device answered nothing so far: more groups would only cost timeouts
                rows.add(Batch.failed(self.device.id, time.time(), plan.points,
                                      Quality.COMM_FAILURE), {})
                continue
            replies: list[Any] = []
            polling = asyncio.ensure_future(self.driver.read(group, replies=replies))
            while not polling.done():
                await asyncio.wait({polling}, timeout=0.1)
                progress.update(done + len(replies))
            try:
                batch = polling.result()
            except DriverError as exc:
                batch = Batch.failed(self.device.id, time.time(), plan.points, exc.quality)
                error = error or str(exc)
            done += len(plan.requests)
            progress.update(done)
            raws: dict[int, tuple[str, list[int] | None]] = {}
            for request, reply in replies:
                answered = answered or reply.failure is None
                requests.append(_request_row(request, reply))
                for index, offset, codec in request.reads:
                    raws[index] = _raw(request.table, reply, offset, codec.count)
            rows.add(batch, raws)
        return ProbeRound(self.device.id, describe(self.device), time.time(), answered,
                          None if answered else error, _ms(started), rows.ordered(), requests)

    async def close(self) -> None:
        await self.driver.stop()  # closes the bus it opened
        if self.bus is not None:
            await self.bus.close()


def _raw(table: str, reply: Any, offset: int, count: int) -> tuple[str, list[int] | None]:
    """A point's part of its request's answer, as read: hex words, or bits as 0/1."""
    if reply.exception_code is not None:
        return f"exception {reply.exception_code}", None
    if reply.failure is not None or reply.data is None:
        return "-", None
    words = [int(v) for v in reply.data[offset:offset + count]]
    if table in ("coil", "discrete"):
        return " ".join(str(w) for w in words), words
    return " ".join(f"0x{w:04X}" for w in words), words


def exception_name(code: int) -> str:
    """`2 (illegal_address)`: a Modbus exception code with pymodbus's name for it."""
    from pymodbus.constants import ExcCodes

    try:
        return f"{code} ({ExcCodes(code).name.lower()})"
    except ValueError:
        return str(code)


def _request_row(request: Any, reply: Any) -> RequestRow:
    span = (f"{request.start}" if request.count == 1
            else f"{request.start}-{request.start + request.count - 1}")
    latency = round(reply.latency * 1000, 1) if reply.failure is None else None
    if reply.failure is not None:
        return RequestRow(f"{request.table} {span}", False, f"{reply.failure}: {reply.error}",
                          None, None)
    if reply.exception_code is not None:
        return RequestRow(f"{request.table} {span}", True,
                          f"exception {exception_name(reply.exception_code)}", None, latency)
    words = [int(v) for v in reply.data or []][:request.count]
    unit = "bits" if request.table in ("coil", "discrete") else "words"
    return RequestRow(f"{request.table} {span}", True, f"{len(words)} {unit}", words, latency)


# --- BACnet --------------------------------------------------------------------------------


class BacnetProber:
    """Every poll group once through the driver; the stack decodes, so no raw column."""

    def __init__(self, device: Device, profile: Profile, local: BacnetLocal) -> None:
        from drivers.registry import DriverSet

        self.device = device
        self.profile = profile
        self.drivers = DriverSet(local)
        self.driver: Any = self.drivers.create(device, profile)
        self.steps = len(self.driver.plans)

    async def read(self, progress: Progress) -> ProbeRound:
        started = time.monotonic()
        rows = _Rows(self.profile)
        answered, error = False, None
        for group, plan in self.driver.plans.items():
            try:
                batch = await self.driver.read(group)
                answered = True
            except DriverError as exc:
                batch = Batch.failed(self.device.id, time.time(), plan.points, exc.quality)
                error = error or str(exc)
            rows.add(batch, {})
            progress.advance()
        return ProbeRound(self.device.id, describe(self.device), time.time(), answered,
                          None if answered else error, _ms(started), rows.ordered())

    async def close(self) -> None:
        await self.driver.stop()
        await self.drivers.close()


# --- MQTT ----------------------------------------------------------------------------------


class MqttProber:
    """Subscribes the device's topics and waits (up to `wait` s) until every point has
    arrived; retained messages count. A later round shows the newest of each point."""

    def __init__(self, device: Device, profile: Profile, wait: float) -> None:
        from drivers.mqtt.driver import MqttDriver

        self.device = device
        self.profile = profile
        self.wait = wait
        self.driver = MqttDriver(device, profile)  # a broker connection of its own
        self.steps = len(self.driver.points)
        self.rows = _Rows(profile)
        self.messages = 0
        self._payload = "-"  # the message being decoded: the recorder hears it first
        self._complete = asyncio.Event()
        self._started = False

    def receive(self, topic: str, payload: bytes, retained: bool, wall: float, mono: float) -> None:
        """Broker listener, subscribed before the driver so it hears each message first."""
        self._payload = payload[:RAW_KEPT].decode("utf-8", errors="replace")

    def _emit(self, batch: Batch) -> None:
        self.messages += 1
        self.rows.add(batch, dict.fromkeys(range(len(batch.points)), (self._payload, None)))
        if len(self.rows.rows) >= len(self.driver.points):
            self._complete.set()

    async def read(self, progress: Progress) -> ProbeRound:
        started = time.monotonic()
        if not self._started:
            for plan in self.driver.plans:
                self.driver.broker.subscribe(plan.filter, self.driver.connection.qos, self)
            await self.driver.start(self._emit)
            self._started = True
        deadline = started + self.wait
        while not self._complete.is_set() and time.monotonic() < deadline:
            try:
                await asyncio.wait_for(self._complete.wait(), min(0.2, deadline - time.monotonic()))
            except TimeoutError:
                pass
            progress.update(len(self.rows.rows))
        rows = self.rows.ordered()
        seen = {row.point for row in rows}
        missing = [p for p in self.driver.points if p not in seen]
        for point in missing:  # not heard from yet: nothing to show but that
            spec = self.profile.points[point]
            rows.append(PointRow(point, spec.name, None, None, spec.unit, "no message", "-"))
        error = None
        if not self.messages:
            filters = ", ".join(plan.filter for plan in self.driver.plans)
            error = f"no message on {filters} within {self.wait:g} s"
        return ProbeRound(self.device.id, describe(self.device), time.time(),
                          self.messages > 0, error, _ms(started), rows)

    async def close(self) -> None:
        for plan in self.driver.plans:
            self.driver.broker.unsubscribe(plan.filter, self)
        await self.driver.stop()


# --- output --------------------------------------------------------------------------------


def render(result: ProbeRound, *, clock: bool = False) -> str:
    """The round as a headline and a table (`clock`: the time first, for --watch)."""
    head = f"{result.device} — {result.connection}"
    if clock:
        head = f"{time.strftime('%H:%M:%S', time.localtime(result.ts))}  {head}"
    if result.requests:
        answered = sum(r.answered for r in result.requests)
        refused = sum(r.answered and r.words is None for r in result.requests)
        head += (f": {_count(len(result.points), 'point')}, {answered} of "
                 f"{_count(len(result.requests), 'request')} answered"
                 + (f" ({refused} with an exception)" if refused else ""))
    else:
        head += f": {_count(len(result.points), 'point')}"
    head += f" in {result.elapsed_ms:.0f} ms"
    if not result.answered:
        head += f"; NO ANSWER: {result.error or 'nothing came back'}"
    rows = [(row.point, row.name or "-", _shown(row), row.unit or "-", row.quality,
             _clip(row.raw)) for row in result.points]
    table = format_table(("point", "name", "value", "unit", "quality", "raw"), rows)
    out = f"{head}\n{table}"
    failed = [r for r in result.requests if r.words is None]
    if failed and result.answered:
        out += "\n" + "\n".join(f"  {r.request}: {r.outcome}" for r in failed)
    return out


def _shown(row: PointRow) -> str:
    if row.quality != Quality.GOOD or row.value is None:
        return "-"
    value = row.value
    # decoded values are already rounded to their scale's decimals: show them whole, as the
    # meter's own display does (138765.4 kWh, not 138765)
    text = str(value)
    return f"{text} ({row.text})" if row.text else text


def _clip(raw: str) -> str:
    raw = " ".join(raw.split())  # a payload's newlines would break the table
    return raw if len(raw) <= RAW_SHOWN else raw[:RAW_SHOWN - 1] + "…"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)
