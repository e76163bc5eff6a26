"""Modbus TCP: one client per device, one compiled plan, one batch per poll."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import structlog
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from drivers.base import Driver, DriverError, Emit
from drivers.modbus.plan import ReadPlan, Request, compile_plan
from gateway.batch import Batch, Quality
from gateway.config.models import Device, Profile

log = structlog.get_logger(__name__)

BAD_REQUEST = "bad_request"


class ModbusTcpDriver(Driver):
    """Polls one Modbus TCP device by running its read plan.

    The client does not reconnect in the background: a poll that finds it disconnected
    connects once, so a dead device costs one timeout per poll and its poll interval is
    the back-off. After a timeout the connection is dropped, so a late answer can never
    be taken for the next request's.
    """

    def __init__(self, device: Device, profile: Profile, plan: ReadPlan | None = None) -> None:
        super().__init__(device, profile)
        self.plan = plan if plan is not None else compile_plan(device, profile)
        self._client: AsyncModbusTcpClient | None = None
        self._online: bool | None = None  # None until the first poll says which
        self._failing: set[int] = set()  # requests answering with an exception, for logging once
        self._connecting = asyncio.Lock()  # a write racing a poll must not open a second socket
        self._log = log.bind(device=device.id)

    @property
    def points(self) -> tuple[str, ...]:
        return self.plan.points

    def _connection(self) -> AsyncModbusTcpClient:
        if self._client is None:
            conn = self.device.connection
            self._client = AsyncModbusTcpClient(
                conn.host,
                port=conn.port,
                timeout=conn.timeout,
                retries=0,  # the next poll is the retry; a poll must fit its own timeout
                reconnect_delay=0,  # reconnect on demand in read(), never behind our back
            )
        return self._client

    async def start(self, emit: Emit) -> None:
        """Open the connection if the device is there; a device that is down is not an error."""
        client = self._connection()
        if await client.connect():
            self._set_online(True)

    async def stop(self) -> None:
        if self._client is not None:
            self._client.close()

    async def _ensure_connected(self) -> AsyncModbusTcpClient:
        client = self._connection()
        async with self._connecting:
            if not client.connected and not await client.connect():
                conn = self.device.connection
                error = f"cannot connect to {conn.host}:{conn.port}"
                self._set_online(False, error)
                raise DriverError(error, Quality.COMM_FAILURE)
        return client

    async def read(self) -> Batch:
        """Run the plan once: one batch, each request's points good or carrying its failure."""
        client = await self._ensure_connected()
        plan = self.plan
        unit = self.device.connection.unit
        values: list[Any] = [None] * len(plan.points)
        quality: list[str] | None = None
        answered = 0
        comm_error: Exception | None = None
        for number, request in enumerate(plan.requests):
            if comm_error is not None:  # the device stopped answering: don't spend more timeouts
                quality = _mark(quality, values, request, Quality.COMM_FAILURE)
                continue
            read = (
                client.read_holding_registers
                if request.table == "holding"
                else client.read_input_registers
            )
            try:
                response = await read(request.start, count=request.count, device_id=unit)
            except asyncio.CancelledError:
                client.close()  # cancelled mid-request: its answer must not meet the next request
                raise
            except (ModbusException, OSError, TimeoutError) as exc:
                comm_error = exc
                client.close()  # resynchronise: the next poll starts on a fresh connection
                quality = _mark(quality, values, request, Quality.COMM_FAILURE)
                continue
            answered += 1
            if response.isError():
                quality = _mark(quality, values, request, Quality.DEVICE_EXCEPTION)
                self._request_failed(number, request, response.exception_code)
                continue
            if number in self._failing:
                self._failing.discard(number)
                self._log.info("request answers again", request=_name(request))
            registers = response.registers
            if len(registers) != request.count:
                quality = _mark(quality, values, request, Quality.DECODE_ERROR)
                continue
            failed = request.decode_into(registers, values)
            if failed:
                quality = quality or [Quality.GOOD] * len(values)
                for index in failed:
                    quality[index] = Quality.DECODE_ERROR
        if answered == 0 and comm_error is not None:
            self._set_online(False, str(comm_error))
            raise DriverError(f"no answer: {comm_error}", Quality.COMM_FAILURE)
        self._set_online(True)
        return Batch(self.device.id, time.time(), plan.points, values, quality)

    async def write(self, point: str, value: Any) -> None:
        """Write one writable holding point; the value is encoded with the point's own codec."""
        ref = self.plan.refs.get(point)
        if ref is None:
            raise DriverError(f"{self.device.id} has no point {point!r}", BAD_REQUEST)
        if not ref.writable or ref.table != "holding":
            raise DriverError(f"point {point} of {self.device.id} is not writable", BAD_REQUEST)
        try:
            words = ref.codec.encode(value)
        except ValueError as exc:
            raise DriverError(f"cannot write {point}: {exc}", BAD_REQUEST) from exc
        client = await self._ensure_connected()
        unit = self.device.connection.unit
        try:
            if len(words) == 1:
                response = await client.write_register(ref.address, words[0], device_id=unit)
            else:
                response = await client.write_registers(ref.address, words, device_id=unit)
        except (ModbusException, OSError, TimeoutError) as exc:
            client.close()
            raise DriverError(f"writing {point}: {exc}", Quality.COMM_FAILURE) from exc
        if response.isError():
            raise DriverError(
                f"{self.device.id} refused the write of {point}: "
                f"Modbus exception {response.exception_code}",
                Quality.DEVICE_EXCEPTION,
            )
        self._log.info("point written", point=point, value=value, registers=words)

    def _set_online(self, online: bool, error: str | None = None) -> None:
        """Log connection state changes only, never every failed poll."""
        if online == self._online:
            return
        conn = self.device.connection
        if online:
            self._log.info("modbus device connected", host=conn.host, port=conn.port)
        else:
            self._log.warning(
                "modbus device not answering", host=conn.host, port=conn.port, error=error
            )
        self._online = online

    def _request_failed(self, number: int, request: Request, code: int) -> None:
        if number not in self._failing:
            self._failing.add(number)
            names = [self.plan.points[i] for i, _offset, _codec in request.reads]
            self._log.warning(
                "request answered with a Modbus exception",
                request=_name(request), exception_code=code, points=names,
            )


def _mark(quality: list[str] | None, values: list[Any], request: Request, what: str) -> list[str]:
    """Give every point of `request` the quality `what` (its value stays None)."""
    if quality is None:
        quality = [Quality.GOOD] * len(values)
    for index, _offset, _codec in request.reads:
        quality[index] = what
    return quality


def _name(request: Request) -> str:
    return f"{request.table} {request.start}+{request.count}"
