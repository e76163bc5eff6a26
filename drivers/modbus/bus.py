"""A Modbus bus scheduler: one request at a time, fair to every unit, writes first.

A bus is one serial port or one TCP endpoint; every device (unit id) on it shares it.
RS-485 is half duplex and most serial servers and TCP gateways handle one transaction
at a time, so one worker task per bus sends every request, in this order:

- writes first (a command waits for at most the request on the wire);
- then polls round-robin across unit ids, and within a unit across its poll groups, so
  a device with many requests does not starve its neighbours;
- each request bounded by its device's own timeout, so a dead unit costs the bus its
  timeout per request it is sent and nothing more; retries are the device's choice;
- the silence RTU needs between frames plus the device's configured pause.

A dropped connection or a vanished serial port is reopened by the next request. One
failed connect attempt answers every request that was already waiting when it failed,
so a bus whose line is gone costs one attempt per round of polls, not one per request.
Buses never wait on each other.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from pymodbus.exceptions import ConnectionException, ModbusException

log = structlog.get_logger(__name__)

REGISTER_TABLES = ("holding", "input")
SILENT_LIMIT = 3  # consecutive timeouts with no answer from any unit before the line is reopened
CONNECT_MARGIN = 0.25  # connect timeout beyond the slowest device's request timeout

_READS = {
    "holding": "read_holding_registers",
    "input": "read_input_registers",
    "coil": "read_coils",
    "discrete": "read_discrete_inputs",
}

Client = Any  # a pymodbus async client, or a fake with the same methods in tests
ClientFactory = Callable[[float], Client]  # connect timeout -> a fresh, unconnected client


@dataclass(frozen=True, slots=True)
class Read:
    """Read `count` registers or bits of `table` from `start`."""

    table: str
    start: int
    count: int


@dataclass(frozen=True, slots=True)
class Write:
    """Write registers (holding) or bits (coil) from `address`."""

    table: str
    address: int
    values: tuple[int, ...] | tuple[bool, ...]


Operation = Read | Write


@dataclass(frozen=True, slots=True)
class Reply:
    """What a request came back with: data, a Modbus exception code, or a failure.

    `failure` is "timeout", "connection" or "protocol" (an answer that could not be
    used) when nothing usable came back; `latency` is the last attempt's time on the wire.
    """

    data: list[int] | list[bool] | None = None
    exception_code: int | None = None
    failure: str | None = None
    error: str | None = None
    latency: float = 0.0
    attempts: int = 1

    @property
    def ok(self) -> bool:
        return self.failure is None and self.exception_code is None


@dataclass(slots=True)
class _Call:
    unit: int
    lane: str
    op: Operation
    timeout: float
    retries: int
    pause: float
    future: asyncio.Future[Reply]
    queued: float  # loop time it was submitted


class _Lanes:
    """Waiting polls: round-robin across units, and within a unit across its lanes.

    Dicts keep insertion order, so taking the first key and putting it back at the end
    is the rotation; a unit with nothing waiting drops out and rejoins at the back.
    """

    def __init__(self) -> None:
        self._units: dict[int, dict[str, deque[_Call]]] = {}

    def push(self, call: _Call) -> None:
        lanes = self._units.setdefault(call.unit, {})
        queue = lanes.get(call.lane)
        if queue is None:
            queue = lanes[call.lane] = deque()
        queue.append(call)

    def pop(self) -> _Call | None:
        if not self._units:
            return None
        unit = next(iter(self._units))
        lanes = self._units.pop(unit)
        lane = next(iter(lanes))
        queue = lanes.pop(lane)
        call = queue.popleft()
        if queue:
            lanes[lane] = queue
        if lanes:
            self._units[unit] = lanes
        return call

    def drain(self) -> Iterator[_Call]:
        for lanes in self._units.values():
            for queue in lanes.values():
                yield from queue
        self._units.clear()


class Bus:
    """One serial line or TCP endpoint shared by the devices on it; see the module doc."""

    def __init__(
        self, name: str, client_factory: ClientFactory, frame_gap: float = 0.0,
        late_window: float = 0.0,
    ) -> None:
        self.name = name
        self.frame_gap = frame_gap
        self.late_window = late_window  # quiet after a timeout on RTU, for a late reply to pass
        self._factory = client_factory
        # Per bus only what a request needs: a site has a bus per TCP device, often a
        # thousand. Writes are few (a list, not a deque's block); the worker runs while
        # requests wait and ends when none does (no idle task, event and logger per bus).
        self._writes: list[_Call] = []
        self._polls = _Lanes()
        self._worker: asyncio.Task[None] | None = None
        self._current: _Call | None = None  # the request on the wire
        self._client: Client | None = None
        self._connect_timeout = 1.0
        self._quiet_until = 0.0  # no frame may start before this loop time
        self._connect_failed_at = -1.0  # loop time the last failed connect attempt ended
        self._silent = 0
        self._connected: bool | None = None  # for logging changes only
        self._closed = False

    def attach(self, timeout: float) -> None:
        """A device with request timeout `timeout` joins; connects may take as long as its requests."""
        self._connect_timeout = max(self._connect_timeout, timeout + CONNECT_MARGIN)

    @property
    def connected(self) -> bool:
        return self._client is not None and bool(self._client.connected)

    async def submit(
        self,
        unit: int,
        op: Operation,
        *,
        timeout: float,
        retries: int = 0,
        pause: float = 0.0,
        lane: str = "default",
        priority: bool = False,
    ) -> Reply:
        """Queue one request and wait for its reply; `priority` puts it ahead of every poll.

        A caller that is cancelled while waiting leaves the bus consistent: a request not
        yet sent is dropped, one on the wire runs to its end and its reply is discarded.
        """
        if self._closed:
            return Reply(failure="connection", error=f"bus {self.name} is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Reply] = loop.create_future()
        call = _Call(unit, lane, op, timeout, retries, pause, future, loop.time())
        if priority:
            self._writes.append(call)
        else:
            self._polls.push(call)
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._run(), name=f"modbus-bus:{self.name}")
        return await future

    async def close(self) -> None:
        """Stop the worker, cancel waiting requests, close the connection."""
        self._closed = True
        on_wire = [self._current] if self._current is not None else []
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        for call in [*on_wire, *self._writes, *self._polls.drain()]:
            call.future.cancel()
        self._writes.clear()
        self._drop_client()

    # --- the worker ------------------------------------------------------------------

    async def _run(self) -> None:
        """Serve waiting requests until none is left; `submit` starts it again."""
        while True:
            call = self._writes.pop(0) if self._writes else self._polls.pop()
            if call is None:
                return  # in the same step as the last pop: a later submit sees this task done
            if call.future.done():  # its caller gave up before its turn
                continue
            self._current = call
            try:
                reply = await self._serve(call)
            except Exception as exc:  # a bug here must not stop every device on the bus
                log.exception("modbus bus request failed unexpectedly", bus=self.name, unit=call.unit)
                self._drop_client(repr(exc))
                reply = Reply(failure="connection", error=repr(exc))
            finally:
                self._current = None
            if not call.future.done():
                call.future.set_result(reply)

    async def _serve(self, call: _Call) -> Reply:
        """Send one request, retrying a failed attempt up to the device's `retries`."""
        attempt = 0
        while True:
            attempt += 1
            client = await self._ready_client(call.queued)
            if client is None:
                return Reply(failure="connection", error=self._unreachable(), attempts=attempt)
            reply = await self._attempt(client, call)
            if reply.failure is None or attempt > call.retries:
                return Reply(
                    reply.data, reply.exception_code, reply.failure, reply.error,
                    reply.latency, attempt,
                )

    async def _attempt(self, client: Client, call: _Call) -> Reply:
        loop = asyncio.get_running_loop()
        wait = self._quiet_until - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        started = loop.time()
        try:
            async with asyncio.timeout(call.timeout):  # no task per request, unlike wait_for
                reply = await _perform(client, call.unit, call.op)
        except TimeoutError:
            reply = self._timed_out(client, call.timeout)
        except (ConnectionException, OSError) as exc:
            error = str(exc) or type(exc).__name__
            self._drop_client(error)
            reply = Reply(failure="connection", error=error)
        except ModbusException as exc:
            reply = Reply(failure="protocol", error=str(exc))
        else:
            self._silent = 0
        finished = loop.time()
        quiet = self.late_window if reply.failure == "timeout" else self.frame_gap
        self._quiet_until = finished + quiet + call.pause
        return Reply(reply.data, reply.exception_code, reply.failure, reply.error, finished - started)

    def _timed_out(self, client: Client, timeout: float) -> Reply:
        """A timeout: a silent unit, or a line that is gone (the port vanished, the peer left)."""
        if not client.connected:
            self._drop_client("connection lost")
            return Reply(failure="connection", error="connection lost")
        self._silent += 1
        if self._silent >= SILENT_LIMIT:
            # nobody on the bus answers: reopen the line in case it is the line that hangs
            self._silent = 0
            self._drop_client(f"{SILENT_LIMIT} requests in a row unanswered, reopening")
        return Reply(failure="timeout", error=f"no answer within {timeout * 1000:.0f} ms")

    async def _ready_client(self, queued: float) -> Client | None:
        """The connected client, connecting if need be; None when the line is unreachable.

        A request queued before the last failed attempt ended takes that failure as its
        answer instead of trying again.
        """
        if self._client is not None and self._client.connected:
            return self._client
        self._drop_client("connection lost")
        loop = asyncio.get_running_loop()
        if queued <= self._connect_failed_at:
            return None
        client = self._factory(self._connect_timeout)
        try:
            async with asyncio.timeout(self._connect_timeout):
                connected = await client.connect()
        except (TimeoutError, OSError, ModbusException):
            connected = False
        if not connected:
            client.close()
            self._connect_failed_at = loop.time()
            self._set_connected(False)
            return None
        self._client = client
        self._silent = 0
        self._set_connected(True)
        return client

    def _drop_client(self, reason: str | None = None) -> None:
        """Close the connection; with a `reason` it was lost, which is logged once."""
        if self._client is not None:
            client, self._client = self._client, None
            client.close()
            if reason is not None and self._connected:
                self._connected = False
                log.warning("modbus bus connection lost", bus=self.name, error=reason)

    def _unreachable(self) -> str:
        return f"cannot connect to {self.name.split(':', 1)[1]}"

    def _set_connected(self, connected: bool) -> None:
        """Log the line's state changes only, never every failed attempt."""
        if connected == self._connected:
            return
        self._connected = connected
        if connected:
            log.info("modbus bus connected", bus=self.name)
        else:
            log.warning("modbus bus unreachable", bus=self.name, error=self._unreachable())


async def _perform(client: Client, unit: int, op: Operation) -> Reply:
    """Run one operation with the pymodbus client; an exception response is a reply too."""
    if isinstance(op, Read):
        response = await getattr(client, _READS[op.table])(op.start, count=op.count, device_id=unit)
        if response.isError():
            return Reply(exception_code=response.exception_code)
        data: list[int] | list[bool] = (
            list(response.registers) if op.table in REGISTER_TABLES
            else list(response.bits[: op.count])  # bits come padded to whole bytes
        )
        return Reply(data)
    values: Sequence[Any] = op.values
    if op.table == "coil":
        response = await (
            client.write_coil(op.address, bool(values[0]), device_id=unit) if len(values) == 1
            else client.write_coils(op.address, [bool(v) for v in values], device_id=unit)
        )
    else:
        response = await (
            client.write_register(op.address, int(values[0]), device_id=unit) if len(values) == 1
            else client.write_registers(op.address, [int(v) for v in values], device_id=unit)
        )
    if response.isError():
        return Reply(exception_code=response.exception_code)
    return Reply([])
