"""Drives one sink: read after its cursor, send, advance only once the peer confirmed.

A sink may ask for a priority lane (`priority_kinds`): the upstream link sends every
pending event before the next slice of a readings backlog, so an alarm raised during an
outage does not wait behind an hour of telemetry. Each lane reads the outbox after its
own cursor, so records of one lane stay in order (readings in order per device); the
sink's cursor, which decides what the outbox may delete, is the lowest of its lanes.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass

import structlog

from gateway.batch import Kind, Record
from gateway.outbox import Outbox
from gateway.sinks.base import Sink, SinkUnavailable

log = structlog.get_logger(__name__)

_BACKOFF_FIRST = 0.5
_BACKOFF_MAX = 10.0  # a peer back from an outage is tried within this; Retry-After overrides
_PACE_SLICE = 0.25  # seconds of sending per paced slice: how long an event may wait behind it


@dataclass(slots=True)
class Lane:
    """Records of some kinds, read after their own cursor; `None` name: the sink's cursor."""

    name: str | None
    kinds: frozenset[Kind]
    cursor: int
    paced: bool


class Pacer:
    """At most `rate` records per second, in slices, so a drained backlog does not flood a
    thin link (and the broker's per-client limits) after an outage."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.slice = max(1, math.floor(rate * _PACE_SLICE))
        self._next = 0.0

    async def wait(self, count: int) -> None:
        """Wait until `count` more records fit within the rate."""
        now = time.monotonic()
        start = max(now, self._next)
        if start > now:
            await asyncio.sleep(start - now)
        self._next = start + count / self.rate


class SinkRunner:
    """Moves records from the outbox to one sink, at least once, in order per lane.

    A sink that fails is retried with exponential backoff (or after the peer's
    Retry-After); its outage is logged once when it starts and once when it ends.
    `linger` lets a sink wait for fuller batches when less than `max_batch` is waiting.
    A sink's `priority_kinds` get a lane that is always read first; its `backlog_rate`
    (records/s) paces the other lane while more than one batch is waiting.
    """

    def __init__(self, sink: Sink, outbox: Outbox, *, linger: float = 0.0) -> None:
        self.sink = sink
        self.outbox = outbox
        self.linger = linger
        self.delivered = 0
        self.failures = 0
        self.last_error: str | None = None
        self.last_success: float | None = None
        self._cursor = 0
        self._lanes: list[Lane] = []
        self._priority: frozenset[Kind] = frozenset(sink.priority_kinds)
        self._pacer = Pacer(sink.backlog_rate) if sink.backlog_rate else None
        self._stopping = False

    @property
    def name(self) -> str:
        return self.sink.name

    async def run(self) -> None:
        self._cursor = await self.outbox.register(self.sink.name)
        self._lanes = self._make_lanes()
        started = False
        backoff = _BACKOFF_FIRST
        while not self._stopping:
            try:
                if not started:  # a sink that cannot start (a full disk) is retried too
                    await self.sink.start()
                    started = True
                sent = await self._step()
            except SinkUnavailable as exc:
                backoff = await self._failed(str(exc), exc.retry_after, backoff)
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a sink bug must not end delivery for good
                if self.last_error is None:  # the traceback once per outage, not per retry
                    log.exception("sink raised unexpectedly", sink=self.name)
                backoff = await self._failed(repr(exc), None, backoff)
                continue
            if sent is None:
                await self.outbox.wait_committed(self._cursor, timeout=1.0)
                continue
            if self.last_error is not None:
                log.info("sink delivering again", sink=self.name, failures=self.failures)
                self.last_error = None
                self.outbox.peer_away(self.name, False)
            backoff = _BACKOFF_FIRST
            self.delivered += sent
            if sent:
                self.last_success = time.time()

    def _make_lanes(self) -> list[Lane]:
        kinds = frozenset(self.sink.kinds)
        first, rest = kinds & self._priority, kinds - self._priority
        if not first or not rest:
            return [Lane(None, kinds, self._cursor, paced=self._pacer is not None)]
        return [
            Lane("priority", first, self.outbox.lane_cursor(self.name, "priority"), paced=False),
            Lane("bulk", rest, self.outbox.lane_cursor(self.name, "bulk"), paced=self._pacer is not None),
        ]

    async def _step(self) -> int | None:
        """Send one batch from the first lane with something waiting: how many records were
        sent (0 when a lane only moved past records of other kinds), None when all are idle."""
        for lane in self._lanes:
            records, upto = await self._read(lane)
            if upto <= lane.cursor:
                continue
            if records and lane.paced and self._pacer is not None and self._draining(lane):
                if len(records) > self._pacer.slice:
                    records = records[: self._pacer.slice]
                    upto = records[-1].seq
                await self._pacer.wait(len(records))
            if records:
                await self.sink.send(records)
            self._advance(lane, upto)
            return len(records)
        return None

    async def _read(self, lane: Lane) -> tuple[list[Record], int]:
        batch = self.sink.max_batch
        records, upto = await self.outbox.read(lane.cursor, batch, lane.kinds)
        if records and len(records) < batch and self.linger and not self._stopping:
            await asyncio.sleep(self.linger)
            records, upto = await self.outbox.read(lane.cursor, batch, lane.kinds)
        return records, upto

    def _draining(self, lane: Lane) -> bool:
        """More than one batch is waiting behind this lane: a backlog, not live traffic."""
        return self.outbox.stats.committed_seq - lane.cursor > self.sink.max_batch

    def _advance(self, lane: Lane, upto: int) -> None:
        lane.cursor = upto
        if lane.name is not None:
            self.outbox.advance_lane(self.name, lane.name, upto)
        cursor = min(each.cursor for each in self._lanes)
        if cursor > self._cursor:
            self._cursor = cursor
            self.outbox.advance(self.sink.name, cursor)

    async def _failed(self, error: str, retry_after: float | None, backoff: float) -> float:
        self.failures += 1
        if self.last_error is None:
            log.warning("sink unavailable, will retry", sink=self.name, error=error)
            self.outbox.peer_away(self.name, True)  # its backlog is read from disk
        self.last_error = error
        if retry_after is not None:  # the peer said when: wait that long
            await asyncio.sleep(retry_after)
        else:
            await self.sink.wait_ready(backoff)
        return min(backoff * 2, _BACKOFF_MAX)

    async def drain(self, timeout: float) -> bool:
        """Wait until everything committed so far was delivered, at most `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._cursor >= self.outbox.stats.committed_seq and self.last_error is None:
                return True
            await asyncio.sleep(0.05)
        return False

    def stop(self) -> None:
        self._stopping = True

    def status(self) -> dict[str, object]:
        status: dict[str, object] = {
            "sink": self.name,
            "cursor": self._cursor,
            "behind": self.outbox.stats.committed_seq - self._cursor,
            "delivered": self.delivered,
            "failures": self.failures,
            "last_error": self.last_error,
            "last_success": self.last_success,
        }
        if len(self._lanes) > 1:
            status["lanes"] = {lane.name: lane.cursor for lane in self._lanes}
        return status
