"""`gateway tail` in the daemon: the readings and events it emits, streamed to a client.

A tail is a control-socket connection (gateway/commands/local.py) that asked for
`{"tail": true, ...}`; `Tails.serve` answers it and streams until the client hangs up. Its subscription listens on the pipeline (`batch_listeners` for
readings, `listeners` for events); the listeners only filter and queue, so tailing costs
polling nothing but that, and nothing at all while nobody tails.

A client that reads slowly, or not at all, must never hold the daemon up: the queue is
bounded, and when it is full the oldest item goes and is counted. The client is told
how many it missed (`{"type": "dropped", ...}`) before the next items it gets.

The stream is JSON lines, the same objects `gateway tail --json` prints:
`{"type": "reading", "ts", "device", "point", "value", "quality", "unit"?, "text"?}` (one
per point; `text` is the profile's enum text for the value),
`{"type": "event", "event", "ts", "device", "body"}`, `{"type": "dropped", "count", "total"}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from fnmatch import fnmatchcase
from typing import Any

import structlog

from gateway.batch import Batch, Event

log = structlog.get_logger(__name__)

MAX_QUEUE = 1000  # batches and events waiting for one client; beyond, the oldest go
MAX_TAILS = 4  # tails at once: the rest of the control connections stay for commands
MAX_PATTERNS = 100  # names or patterns in one filter list
SEND_CHUNK = 64  # items written before waiting for the client to take them
TAIL_FIELDS = ("tail", "id", "devices", "points", "systems", "readings", "events")

Item = tuple[Batch, tuple[int, ...] | None] | Event  # a batch with the indices that match (None: all)


@dataclass(frozen=True, slots=True)
class TailFilter:
    """What a client wants: device, point and system names or shell patterns (`pump_*`);
    an empty list matches everything. `points` narrows readings only: an event is about
    a device, so `devices` and `systems` narrow events."""

    devices: tuple[str, ...] = ()
    points: tuple[str, ...] = ()
    systems: tuple[str, ...] = ()
    readings: bool = True
    events: bool = True

    @classmethod
    def parse(cls, data: dict[str, Any]) -> TailFilter:
        """The filter of a tail request; ValueError saying what is wrong."""
        extra = sorted(set(data) - set(TAIL_FIELDS))
        if extra:
            raise ValueError(f"unknown field {extra[0]!r}; a tail takes {', '.join(TAIL_FIELDS)}")
        lists = {}
        for key in ("devices", "points", "systems"):
            value = data.get(key) or []
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                raise ValueError(f"{key} must be a list of names or patterns")
            if len(value) > MAX_PATTERNS:
                raise ValueError(f"{key} may hold at most {MAX_PATTERNS} names or patterns")
            lists[key] = tuple(value)
        flags = {}
        for key in ("readings", "events"):
            value = data.get(key, True)
            if not isinstance(value, bool):
                raise ValueError(f"{key} must be true or false")
            flags[key] = value
        if not (flags["readings"] or flags["events"]):
            raise ValueError("readings and events are both false: there would be nothing to send")
        return cls(**lists, **flags)

    def describe(self) -> dict[str, Any]:
        return {key: list(value) if isinstance(value, tuple) else value
                for key, value in asdict(self).items()}


def _matcher(patterns: tuple[str, ...]) -> Callable[[str], bool]:
    """name -> whether it matches one of `patterns`, remembered per name (device, system
    and point names are few and come back with every batch)."""
    known: dict[str, bool] = {}

    def matches(name: str) -> bool:
        hit = known.get(name)
        if hit is None:
            if len(known) > 100_000:  # names are few; this only bounds a pathological site
                known.clear()
            hit = known[name] = any(fnmatchcase(name, p) for p in patterns)
        return hit

    return matches


class Subscription:
    """One client's filter and queue; `on_batch` and `on_event` are pipeline listeners."""

    def __init__(self, wanted: TailFilter, system_of: Callable[[str], str],
                 limit: int = MAX_QUEUE) -> None:
        self.filter = wanted
        self.system_of = system_of
        self.queue: deque[Item] = deque()
        self.limit = limit
        self.dropped = 0  # since the client was last told
        self.dropped_total = 0
        self.ready = asyncio.Event()
        self._device = _matcher(wanted.devices) if wanted.devices else None
        self._system = _matcher(wanted.systems) if wanted.systems else None
        self._point = _matcher(wanted.points) if wanted.points else None
        self._indices: dict[tuple[str, ...], tuple[int, ...]] = {}  # batch points -> matching

    def wants_device(self, device: str | None) -> bool:
        if self._device is not None and (device is None or not self._device(device)):
            return False
        return self._system is None or (device is not None and self._system(self.system_of(device)))

    def on_batch(self, batch: Batch) -> None:
        try:
            if not self.wants_device(batch.device):
                return
            indices = None
            if self._point is not None:
                indices = self._indices.get(batch.points)
                if indices is None:
                    if len(self._indices) > 10_000:
                        self._indices.clear()
                    indices = self._indices[batch.points] = tuple(
                        i for i, point in enumerate(batch.points) if self._point(point))
                if not indices:
                    return
            self._put((batch, indices))
        except Exception:  # a tail must never cost the pipeline a batch
            log.exception("tail listener failed", device=batch.device)

    def on_event(self, event: Event) -> None:
        try:
            if self.wants_device(event.device):
                self._put(event)
        except Exception:
            log.exception("tail listener failed", event=event.type)

    def _put(self, item: Item) -> None:
        if len(self.queue) >= self.limit:
            self.queue.popleft()  # the oldest goes: a live view wants what is happening now
            self.dropped += 1
            self.dropped_total += 1
        self.queue.append(item)
        self.ready.set()

    def take(self, most: int = SEND_CHUNK) -> tuple[list[Item], int]:
        """Up to `most` queued items and how many were dropped since the last take."""
        items = [self.queue.popleft() for _ in range(min(most, len(self.queue)))]
        dropped, self.dropped = self.dropped, 0
        if not self.queue:
            self.ready.clear()
        return items, dropped


PointInfo = Callable[[str, str], tuple[str | None, dict[Any, str] | None]]  # unit, enum


def lines(item: Item, about: PointInfo) -> list[dict[str, Any]]:
    """The stream's objects for one queued item: a line per point of a batch."""
    if isinstance(item, Event):
        return [{"type": "event", "event": item.type, "ts": item.ts, "device": item.device,
                 "body": item.body}]
    batch, indices = item
    out = []
    for index in range(len(batch.points)) if indices is None else indices:
        point = batch.points[index]
        line: dict[str, Any] = {
            "type": "reading", "ts": batch.ts, "device": batch.device, "point": point,
            "value": batch.values[index], "quality": str(batch.quality_of(index)),
        }
        unit, enum = about(batch.device, point)
        if unit:
            line["unit"] = unit
        if enum and line["value"] in enum:
            line["text"] = enum[line["value"]]
        out.append(line)
    return out


Send = Callable[[list[dict[str, Any]]], Awaitable[None]]


async def run(subscription: Subscription, send: Send, hung_up: Awaitable[None],
              about: PointInfo) -> None:
    """Send what the subscription queues until the client hangs up (`hung_up` completes)
    or the task is cancelled (the gateway stops). `send` writes lines and waits for the
    client to take them: only this task waits on a slow client, never the pipeline."""

    async def pump() -> None:
        while True:
            await subscription.ready.wait()
            items, dropped = subscription.take()
            out: list[dict[str, Any]] = []
            if dropped:
                out.append({"type": "dropped", "count": dropped,
                            "total": subscription.dropped_total})
            for item in items:
                out.extend(lines(item, about))
            if out:
                await send(out)

    sender = asyncio.ensure_future(pump())
    watcher = asyncio.ensure_future(hung_up)
    try:
        done, _pending = await asyncio.wait({sender, watcher},
                                            return_when=asyncio.FIRST_COMPLETED)
        if sender in done:
            sender.result()  # the client went away while we wrote: raise what happened
    finally:
        for task in (sender, watcher):
            task.cancel()
        for task in (sender, watcher):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


class Tails:
    """The tails one control socket serves, at most MAX_TAILS at once."""

    def __init__(self) -> None:
        self.active = 0

    async def serve(self, gateway: Any, data: dict[str, Any], user: str,
                    reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answer the tail request `data`, then stream what it asks for from the gateway's
        pipeline until the client hangs up or the connection is cancelled (a stop)."""
        try:
            wanted = TailFilter.parse(data)
        except ValueError as exc:
            await _send(writer, [_error(str(exc))])
            return
        pipeline = getattr(gateway, "pipeline", None)
        if pipeline is None:
            await _send(writer, [_error("this gateway has no pipeline to tail")])
            return
        if self.active >= MAX_TAILS:
            await _send(writer, [_error(f"the gateway serves at most {MAX_TAILS} tails at "
                                        "once; end one and try again")])
            return
        catalog = getattr(gateway, "catalog", None)  # reloads update it in place
        subscription = Subscription(
            wanted, lambda device: catalog.device(device).system if catalog else "",
            limit=MAX_QUEUE)
        devices = sorted(catalog.devices) if catalog is not None else []
        matching = sum(subscription.wants_device(device) for device in devices)
        result: dict[str, Any] = {"tail": wanted.describe(), "devices": matching,
                                  "queue": MAX_QUEUE}
        if not matching:
            result["known"] = devices[:20]
        ack: dict[str, Any] = {"ok": True, "result": result}
        if isinstance(data.get("id"), str):
            ack["id"] = data["id"]

        def about(device: str, point: str) -> tuple[str | None, dict[Any, str] | None]:
            if catalog is None:
                return None, None
            info = catalog.device(device)
            return info.units.get(point), info.enums.get(point)

        self.active += 1
        if wanted.readings:
            pipeline.batch_listeners.append(subscription.on_batch)
        if wanted.events:
            pipeline.listeners.append(subscription.on_event)
        log.info("tail started", user=user, **wanted.describe())
        try:
            await _send(writer, [ack])
            await run(subscription, lambda lines: _send(writer, lines), _until_eof(reader), about)
        finally:
            for listeners, listener in ((pipeline.batch_listeners, subscription.on_batch),
                                        (pipeline.listeners, subscription.on_event)):
                with contextlib.suppress(ValueError):
                    listeners.remove(listener)
            self.active -= 1
            log.info("tail ended", user=user, dropped=subscription.dropped_total)


async def _send(writer: asyncio.StreamWriter, lines: list[dict[str, Any]]) -> None:
    """Write lines and wait until the client has taken enough: only this connection
    waits for a slow client."""
    writer.write(b"".join(json.dumps(line, ensure_ascii=False, separators=(",", ":"),
                                     default=str).encode("utf-8") + b"\n" for line in lines))
    await writer.drain()


def _error(message: str) -> dict[str, Any]:
    return {"ok": False, "error": message}


async def _until_eof(reader: asyncio.StreamReader) -> None:
    """Returns when the client hangs up; what it sends meanwhile is read and ignored."""
    while await reader.read(65536):
        pass
