"""The Modbus driver: a device's read plans run through its bus, one batch per poll group.

Every Modbus device, TCP or RTU, is a unit id on a bus (`bus.py`) that it may share with
others; the driver only knows its own plans, writes and statistics. A poll's first
request is its probe: it is not retried, and when it goes unanswered the poll ends there,
so a dead device costs its bus one timeout per poll. Once a device has answered, later
requests of the poll and writes get the device's `retries`.
"""

from __future__ import annotations

import time
from typing import Any

import structlog
from pymodbus.constants import ExcCodes

from drivers.base import Driver, DriverError, Emit, PollGroup, plan_for, poll_groups_of
from drivers.base import RequestStats as BaseRequestStats
from drivers.modbus.bus import Bus, Read, Reply, Write
from drivers.modbus.plan import (
    DEFAULT_GROUP,
    BitRequest,
    PointRef,
    ReadPlan,
    Request,
    compile_plans,
)
from drivers.modbus.transport import open_bus
from gateway.batch import Batch, Quality
from gateway.config.models import Device, Profile

log = structlog.get_logger(__name__)

BAD_REQUEST = "bad_request"
WRITE_FAILED = "write_failed"
VERIFY_FAILED = "verify_failed"


class RequestStats(BaseRequestStats):
    """One device's requests on its bus; failures are timeout, connection, exception_N ..."""

    __slots__ = ()

    def record(self, reply: Reply) -> None:
        self.requests += 1
        if reply.failure is not None:
            self.error(reply.failure)
            return
        self.answer(reply.latency)
        if reply.exception_code is not None:
            self.error(f"exception_{reply.exception_code}")


class ModbusDriver(Driver):
    """One Modbus device (one unit id) on a bus that other devices may share.

    Without a `bus` the driver opens its own, for tools and tests that read one device;
    the registry passes shared ones and closes them itself.
    """

    def __init__(
        self,
        device: Device,
        profile: Profile,
        bus: Bus | None = None,
        plans: dict[str, ReadPlan] | None = None,
    ) -> None:
        super().__init__(device, profile)
        self.plans = plans if plans is not None else compile_plans(device, profile)
        self._owns_bus = bus is None
        self.bus = bus if bus is not None else open_bus(device.connection)
        self.bus.attach(device.connection.timeout)
        # every point's place for writes, whichever group reads it; with one group, its
        # plan's own (plans may be shared by devices of one profile: nothing per device)
        only = next(iter(self.plans.values())) if len(self.plans) == 1 else None
        self._refs: dict[str, PointRef] = only.refs if only is not None else {
            name: ref for plan in self.plans.values() for name, ref in plan.refs.items()
        }
        self._points = only.points if only is not None else tuple(
            name for name in profile.points if name in self._refs
        )
        self._stats = RequestStats()
        self._answering: bool | None = None  # None until the first poll says which
        self._refusing: set[tuple[str, int]] = set()  # (group, request) answering with exceptions

    @property
    def points(self) -> tuple[str, ...]:
        """Every point of the device, in profile order; a group's read returns its own subset."""
        return self._points

    @property
    def poll_groups(self) -> dict[str, PollGroup]:
        """The groups `read()` takes, with their intervals and points (batch order)."""
        return poll_groups_of(self.plans)

    def stats(self) -> dict[str, Any]:
        """Request statistics for the CLI and the periodic device status."""
        return self._stats.snapshot()

    async def start(self, emit: Emit) -> None:
        """Nothing to open: the bus connects on its first request, and a device that is
        down is a failed poll, not a failed start."""

    async def stop(self) -> None:
        if self._owns_bus:
            await self.bus.close()

    async def read(
        self, group: str = DEFAULT_GROUP, *, replies: list[tuple[Request | BitRequest, Reply]] | None = None
    ) -> Batch:
        """Run one poll group's plan: one batch, each request's points good or carrying
        its failure. Raise DriverError(comm_failure) when the device answers nothing.

        With `replies`, each request and its reply (the words as read) are appended to it
        as they come, for `gateway probe`; polls pass none."""
        plan = plan_for(self.device.id, self.plans, group)
        values: list[Any] = [None] * len(plan.points)
        quality: list[str] | None = None
        requests = plan.requests
        for number, request in enumerate(requests):
            op = Read(request.table, request.start, request.count)
            reply = await self._submit(op, group, retries=0 if number == 0 else None)
            if replies is not None:
                replies.append((request, reply))
            if reply.failure is not None:
                if number == 0:
                    self._set_answering(False, reply.error)
                    raise DriverError(f"no answer: {reply.error}", Quality.COMM_FAILURE)
                # it stopped answering mid-poll: the rest would only cost more timeouts
                for skipped in requests[number:]:
                    quality = _mark(quality, values, skipped, Quality.COMM_FAILURE)
                break
            if reply.exception_code is not None:
                quality = _mark(quality, values, request, Quality.DEVICE_EXCEPTION)
                self._request_refused(group, number, request, reply.exception_code)
                continue
            if (group, number) in self._refusing:
                self._refusing.discard((group, number))
                self._logger().info("request answers again", request=_name(request))
            data = reply.data or []
            if len(data) != request.count:
                quality = _mark(quality, values, request, Quality.DECODE_ERROR)
                continue
            problems = request.decode_into(data, values)
            if problems:
                quality = quality or [Quality.GOOD] * len(values)
                for index, what in problems.items():
                    quality[index] = what
        self._set_answering(True)
        now = time.time()
        self._stats.last_good_read = now
        return Batch(self.device.id, now, plan.points, values, quality)

    async def write(self, point: str, value: Any) -> None:
        """Write one writable point ahead of every poll on the bus, then read it back.

        The value is range-checked and encoded by the point's own codec; nothing is sent
        for a value it refuses. Raises DriverError: bad_request (no such point, read-only,
        value refused), write_failed (the device answered with an exception),
        comm_failure (no answer; the write may or may not have landed), verify_failed
        (the read-back differs or could not be made).
        """
        ref = self._refs.get(point)
        if ref is None:
            raise DriverError(f"{self.device.id} has no point {point!r}", BAD_REQUEST)
        if not ref.writable:
            raise DriverError(
                f"point {point} of {self.device.id} is not writable "
                f"(profile {self.profile.id} does not mark it writable: true)",
                BAD_REQUEST,
            )
        try:
            words = ref.codec.encode(value)
        except (ValueError, TypeError) as exc:
            raise DriverError(f"cannot write {value!r} to {point} of {self.device.id}: {exc}", BAD_REQUEST) from exc
        written = await self._submit(Write(ref.table, ref.address, tuple(words)), "write", priority=True)
        if written.failure is not None:
            raise DriverError(f"writing {point} of {self.device.id}: {written.error}", Quality.COMM_FAILURE)
        if written.exception_code is not None:
            raise DriverError(
                f"{self.device.id} refused the write of {point}: "
                f"Modbus exception {_exception_name(written.exception_code)}",
                WRITE_FAILED,
            )
        check = await self._submit(Read(ref.table, ref.address, ref.codec.count), "write", priority=True)
        if not check.ok:
            why = check.error or f"Modbus exception {_exception_name(check.exception_code or 0)}"
            raise DriverError(f"{point} of {self.device.id} was written but not read back: {why}", VERIFY_FAILED)
        back = [bool(b) for b in check.data] if ref.table == "coil" else list(check.data or [])
        if back != list(words):
            raise DriverError(
                f"{point} of {self.device.id} reads back {ref.codec.decode(back)!r} "
                f"after writing {value!r}",
                VERIFY_FAILED,
            )
        self._logger().info("point written", point=point, value=value, registers=words)

    async def _submit(
        self, op: Read | Write, lane: str, *, retries: int | None = None, priority: bool = False
    ) -> Reply:
        conn = self.device.connection
        reply = await self.bus.submit(
            conn.unit, op, timeout=conn.timeout, pause=conn.pause,
            retries=self.device.retries if retries is None else retries,
            lane=lane, priority=priority,
        )
        self._stats.record(reply)
        return reply

    def _logger(self) -> Any:
        """A logger naming this device; bound when there is something to log (rarely), so
        a thousand devices do not each keep one."""
        return log.bind(device=self.device.id, unit=self.device.connection.unit, bus=self.bus.name)

    def _set_answering(self, answering: bool, error: str | None = None) -> None:
        """Log the device's state changes only, never every failed poll."""
        if answering == self._answering:
            return
        if answering:
            self._logger().info("modbus device answering")
        else:
            self._logger().warning("modbus device not answering", error=error)
        self._answering = answering

    def _request_refused(self, group: str, number: int, request: Request | BitRequest, code: int) -> None:
        if (group, number) not in self._refusing:
            self._refusing.add((group, number))
            names = [self.plans[group].points[i] for i, _offset, _codec in request.reads]
            self._logger().warning(
                "request answered with a Modbus exception",
                request=_name(request), exception_code=code, points=names,
            )


ModbusTcpDriver = ModbusDriver  # the name the TCP-only driver had


def _mark(
    quality: list[str] | None, values: list[Any], request: Request | BitRequest, what: str
) -> list[str]:
    """Give every point of `request` the quality `what` (its value stays None)."""
    if quality is None:
        quality = [Quality.GOOD] * len(values)
    for index, _offset, _codec in request.reads:
        quality[index] = what
        values[index] = None
    return quality


def _name(request: Request | BitRequest) -> str:
    return f"{request.table} {request.start}+{request.count}"


def _exception_name(code: int) -> str:
    try:
        return f"{code} ({ExcCodes(code).name.lower()})"
    except ValueError:
        return str(code)
