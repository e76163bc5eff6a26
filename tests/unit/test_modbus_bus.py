"""The bus scheduler with fake clients: turns, priority, gaps, timeouts, reconnects; poll backoff."""

from __future__ import annotations

import asyncio

import pytest

from drivers.modbus.bus import Bus, Read, Write
from drivers.modbus.transport import frame_gap
from gateway.batch import Quality
from gateway.config.models import (
    Device,
    ModbusRtuConnection,
    ModbusRtuOverTcpConnection,
    ModbusTcpConnection,
)
from gateway.health import DeviceHealth
from gateway.poller import MAX_BACKOFF, PollSpec, backoff_interval, poll_forever


class Response:
    def __init__(self, registers=None, bits=None, exception_code=None) -> None:
        self.registers = registers or []
        self.bits = bits or []
        self.exception_code = exception_code

    def isError(self) -> bool:  # noqa: N802 - pymodbus's name
        return self.exception_code is not None


class FakeClient:
    """Answers like a pymodbus client and records what went on the wire, in order."""

    def __init__(self, wire: list, *, silent=(), refusing=(), latency=0.0, can_connect=True) -> None:
        self.wire = wire
        self.silent = set(silent)
        self.refusing = set(refusing)
        self.latency = latency
        self.can_connect = can_connect
        self.connected = False
        self.connects = 0

    async def connect(self) -> bool:
        self.connects += 1
        self.connected = self.can_connect
        return self.connected

    def close(self) -> None:
        self.connected = False

    async def _answer(self, what: str, unit: int, address: int, count: int) -> Response:
        self.wire.append((unit, what, address, asyncio.get_running_loop().time()))
        if unit in self.silent:
            await asyncio.sleep(3600)
        await asyncio.sleep(self.latency)
        if unit in self.refusing:
            return Response(exception_code=2)
        return Response(registers=[unit] * count, bits=[True] * ((count + 7) // 8 * 8))

    async def read_holding_registers(self, address, *, count, device_id):
        return await self._answer("read", device_id, address, count)

    async def read_coils(self, address, *, count, device_id):
        return await self._answer("coils", device_id, address, count)

    async def write_register(self, address, value, *, device_id):
        return await self._answer("write", device_id, address, 1)


def fake_bus(wire: list, gap: float = 0.0, **client) -> tuple[Bus, list[FakeClient]]:
    clients: list[FakeClient] = []

    def factory(_timeout: float) -> FakeClient:
        clients.append(FakeClient(wire, **client))
        return clients[-1]

    return Bus("tcp:fake:502", factory, gap), clients


READ = Read("holding", 0, 2)


def units(wire: list) -> list[int]:
    return [unit for unit, *_rest in wire]


async def test_units_take_turns_however_many_requests_one_has_waiting():
    wire: list = []
    bus, _ = fake_bus(wire)
    waiting = [1, 1, 1, 1, 2, 2, 3]
    await asyncio.gather(*(bus.submit(unit, READ, timeout=1) for unit in waiting))
    assert units(wire) == [1, 2, 3, 1, 2, 1, 1]
    await bus.close()


async def test_poll_groups_of_one_unit_take_turns_too():
    wire: list = []
    bus, _ = fake_bus(wire)
    lanes = [("fast", 0), ("fast", 1), ("fast", 2), ("slow", 100)]
    await asyncio.gather(*(
        bus.submit(1, Read("holding", address, 1), timeout=1, lane=lane) for lane, address in lanes
    ))
    assert [address for _unit, _what, address, _t in wire] == [0, 100, 1, 2]
    await bus.close()


async def test_a_write_goes_ahead_of_every_waiting_poll():
    wire: list = []
    bus, _ = fake_bus(wire, latency=0.02)
    polls = [asyncio.create_task(bus.submit(unit, READ, timeout=1)) for unit in (1, 2, 3)]
    await asyncio.sleep(0.005)  # unit 1's poll is on the wire, 2 and 3 wait
    write = bus.submit(3, Write("holding", 20, (500,)), timeout=1, priority=True)
    assert (await write).ok
    await asyncio.gather(*polls)
    assert [(unit, what) for unit, what, *_ in wire] == [
        (1, "read"), (3, "write"), (2, "read"), (3, "read"),
    ]
    await bus.close()


async def test_a_dead_unit_costs_its_neighbours_only_its_timeout():
    wire: list = []
    bus, _ = fake_bus(wire, silent={3})
    dead, alive = await asyncio.gather(
        bus.submit(3, READ, timeout=0.05), bus.submit(1, READ, timeout=0.05)
    )
    assert (dead.failure, dead.attempts) == ("timeout", 1)
    assert dead.latency >= 0.05
    assert alive.ok and alive.data == [1, 1]
    assert units(wire) == [3, 1]
    await bus.close()


async def test_retries_resend_a_request_that_timed_out():
    wire: list = []
    bus, _ = fake_bus(wire, silent={3})
    reply = await bus.submit(3, READ, timeout=0.02, retries=2)
    assert (reply.failure, reply.attempts, units(wire)) == ("timeout", 3, [3, 3, 3])
    await bus.close()


async def test_an_exception_response_is_a_reply_not_a_failure():
    wire: list = []
    bus, _ = fake_bus(wire, refusing={2})
    reply = await bus.submit(2, READ, timeout=1, retries=3)
    assert (reply.exception_code, reply.failure, reply.attempts, reply.ok) == (2, None, 1, False)
    await bus.close()


async def test_coil_reads_come_back_trimmed_to_the_bits_asked_for():
    bus, _ = fake_bus([])
    reply = await bus.submit(1, Read("coil", 0, 3), timeout=1)
    assert reply.data == [True, True, True]
    await bus.close()


@pytest.mark.parametrize(
    ("connection", "gap_ms"),
    [
        (ModbusRtuConnection(type="modbus_rtu", port="/dev/ttyUSB0", baudrate=9600), 3.646),
        (ModbusRtuConnection(type="modbus_rtu", port="/dev/ttyUSB0", baudrate=9600, parity="E"), 4.010),
        (ModbusRtuConnection(type="modbus_rtu", port="/dev/ttyUSB0", baudrate=2400, stopbits=2), 16.042),
        (ModbusRtuConnection(type="modbus_rtu", port="/dev/ttyUSB0", baudrate=19200), 1.823),
        (ModbusRtuConnection(type="modbus_rtu", port="/dev/ttyUSB0", baudrate=38400), 1.75),
        (ModbusRtuConnection(type="modbus_rtu", port="/dev/ttyUSB0", baudrate=115200), 1.75),
        (ModbusRtuOverTcpConnection(type="modbus_rtu_over_tcp", host="10.0.0.9"), 1.75),
        (ModbusTcpConnection(host="10.0.0.9"), 0.0),
    ],
)
def test_the_inter_frame_gap_is_three_and_a_half_characters_at_the_baud_rate(connection, gap_ms):
    assert frame_gap(connection) * 1000 == pytest.approx(gap_ms, abs=0.001)


async def test_frames_are_spaced_by_the_gap_plus_the_devices_pause():
    wire: list = []
    bus, _ = fake_bus(wire, gap=0.01)
    await asyncio.gather(*(bus.submit(unit, READ, timeout=1, pause=0.03) for unit in (1, 2, 3)))
    sent = [t for *_rest, t in wire]
    assert all(later - earlier >= 0.04 for earlier, later in zip(sent, sent[1:], strict=False))
    await bus.close()


async def test_a_dropped_connection_is_reopened_by_the_next_request():
    wire: list = []
    bus, clients = fake_bus(wire)
    assert (await bus.submit(1, READ, timeout=1)).ok
    clients[-1].connected = False  # the peer went away
    assert (await bus.submit(1, READ, timeout=1)).ok
    assert len(clients) == 2
    await bus.close()


async def test_one_failed_connect_answers_every_request_already_waiting():
    wire: list = []
    bus, clients = fake_bus(wire, can_connect=False)
    replies = await asyncio.gather(*(bus.submit(unit, READ, timeout=1) for unit in (1, 2, 3)))
    assert [r.failure for r in replies] == ["connection"] * 3
    assert len(clients) == 1  # one attempt for the three
    assert (await bus.submit(1, READ, timeout=1)).failure == "connection"
    assert len(clients) == 2  # a request queued later tries again
    await bus.close()


async def test_a_caller_that_gives_up_leaves_the_bus_serving_the_others():
    wire: list = []
    bus, _ = fake_bus(wire, latency=0.02)
    first = asyncio.create_task(bus.submit(1, READ, timeout=1))
    abandoned = asyncio.create_task(bus.submit(2, READ, timeout=1))
    await asyncio.sleep(0.005)
    abandoned.cancel()
    assert (await bus.submit(3, READ, timeout=1)).ok
    assert (await first).ok
    assert units(wire) == [1, 3]  # unit 2's request was dropped before its turn
    await bus.close()


async def test_closing_the_bus_cancels_what_waits_and_refuses_what_comes():
    bus, _ = fake_bus([], silent={1})
    waiting = [asyncio.create_task(bus.submit(unit, READ, timeout=5)) for unit in (1, 2)]
    await asyncio.sleep(0.01)
    await bus.close()
    for task in waiting:
        with pytest.raises(asyncio.CancelledError):
            await task
    assert (await bus.submit(1, READ, timeout=1)).failure == "connection"


# --- backoff of a device that stopped answering -------------------------------------


def test_backoff_doubles_the_interval_while_offline_up_to_a_minute():
    assert [backoff_interval(5, n) for n in range(7)] == [5, 10, 20, 40, MAX_BACKOFF, 60, 60]
    assert backoff_interval(0.5, 3) == 4
    assert backoff_interval(120, 4) == 120  # a slow group is never polled faster


class Collector:
    def __init__(self) -> None:
        self.batches: list = []
        self.events: list = []

    def emit_batch(self, batch) -> None:
        self.batches.append(batch)

    def emit_event(self, event) -> None:
        self.events.append(event)


class DeadDevice:
    """A driver whose device does not answer until told to."""

    def __init__(self) -> None:
        self.device = Device(id="meter", profile="m", connection=ModbusTcpConnection(host="x"))
        self.points = ("energy",)
        self.reads = 0
        self.answering = False

    async def read(self, group="default"):
        from drivers.base import DriverError
        from gateway.batch import Batch

        self.reads += 1
        if not self.answering:
            raise DriverError("no answer", Quality.COMM_FAILURE)
        return Batch("meter", 0.0, self.points, [1.0])


async def test_an_offline_device_is_polled_with_backoff_and_every_poll_has_quality():
    driver, pipeline = DeadDevice(), Collector()
    health = DeviceHealth("meter", offline_after=2)
    task = asyncio.create_task(poll_forever(driver, pipeline, health, PollSpec("default", 0.01, ("energy",))))
    await asyncio.sleep(0.6)
    # 60 polls at the interval; offline after 2, then waits of 0.02, 0.04, 0.08, 0.16, 0.32
    assert 4 <= driver.reads <= 10
    assert len(pipeline.batches) == driver.reads
    assert all(b.values == [None] and b.quality == [Quality.COMM_FAILURE] for b in pipeline.batches)
    assert [e.body["online"] for e in pipeline.events] == [False]
    driver.answering = True
    await asyncio.sleep(0.7)  # the next probe answers, and the interval is back to 10 ms
    reads = driver.reads
    await asyncio.sleep(0.1)
    task.cancel()
    assert driver.reads - reads >= 5
    assert pipeline.events[-1].body["online"] is True


def test_after_a_timeout_an_rtu_line_stays_quiet_long_enough_for_a_late_reply_to_pass():
    # RTU has no transaction id: a late answer must not be taken for the next request's.
    from drivers.modbus.transport import late_reply_window
    from gateway.config.models import ModbusRtuConnection, ModbusRtuOverTcpConnection

    slow = ModbusRtuConnection(type="modbus_rtu", port="/dev/ttyUSB0", baudrate=9600)
    fast = ModbusRtuConnection(type="modbus_rtu", port="/dev/ttyUSB0", baudrate=115200)
    assert late_reply_window(slow) == pytest.approx(256 * 10 / 9600 + 3.5 * 10 / 9600)
    assert late_reply_window(fast) < late_reply_window(slow)
    over_tcp = ModbusRtuOverTcpConnection(type="modbus_rtu_over_tcp", host="10.0.0.9")
    assert late_reply_window(over_tcp) == 0.1
    assert late_reply_window(ModbusTcpConnection(host="x")) == 0.0
