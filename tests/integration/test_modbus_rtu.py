"""Modbus RTU over a real serial line (a socat pty pair) and RTU framed over TCP.

Three unit ids share one line; units 1 and 2 are pymodbus serial devices, unit 3 is
configured in the gateway but never answers, like a meter whose RS-485 pair came loose.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import services
from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from drivers.base import DriverError
from drivers.registry import DriverSet
from gateway.batch import Quality
from gateway.config.models import (
    Device,
    ModbusPoint,
    ModbusRtuConnection,
    ModbusRtuOverTcpConnection,
    Profile,
)
from gateway.health import DeviceHealth
from gateway.poller import poll_forever, poll_specs

pytestmark = pytest.mark.integration

BAUD = 38400
TIMEOUT = 0.1  # per request, every unit
INTERVAL = 0.25  # poll interval of every unit in the rate test

METER = Profile(
    id="rtu_meter", name="rtu meter", system="power",
    points={
        "unit_id": ModbusPoint(address=0),
        "setpoint": ModbusPoint(address=1, writable=True),
        "energy": ModbusPoint(address=2, type="uint32"),
        "power": ModbusPoint(table="input", address=0, type="float32"),
        "relay": ModbusPoint(table="coil", address=0, writable=True),
    },
)
POWER_WORDS = [0x42F6, 0xE979]  # 123.456 as float32 ABCD


def sim_device(unit: int, wake: asyncio.Event | None = None) -> SimDevice:
    """Unit `unit` with its id in register 0; with `wake`, it holds every request unanswered."""

    async def never_answer(*_request) -> None:
        await wake.wait()  # released at teardown, when nobody listens any more

    return SimDevice(
        id=unit,
        simdata=(
            [SimData(0, values=[False] * 8, datatype=DataType.BITS)],
            [SimData(0, values=[False] * 8, datatype=DataType.BITS)],
            [SimData(0, values=[unit, 10 * unit, 0, 1000 + unit], datatype=DataType.REGISTERS)],
            [SimData(0, values=list(POWER_WORDS), datatype=DataType.REGISTERS)],
        ),
        action=never_answer if wake is not None else None,
    )


class SerialLine:
    """A socat pty pair: the gateway opens `gateway_end`, the devices `device_end`."""

    def __init__(self, directory: Path) -> None:
        self.gateway_end = directory / "ttyGW"
        self.device_end = directory / "ttyDEV"
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            services.require(services.SOCAT), f"pty,raw,echo=0,link={self.gateway_end}",
            f"pty,raw,echo=0,link={self.device_end}",
        )
        for _ in range(100):
            if self.gateway_end.exists() and self.device_end.exists():
                return
            await asyncio.sleep(0.02)
        raise RuntimeError("socat did not create its ptys")

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            await self.process.wait()
        self.process = None


class SerialDevices:
    """Units 1 and 2 answering on the device end of the line, unit 3 never answering."""

    def __init__(self, line: SerialLine) -> None:
        self.line = line
        self.wake = asyncio.Event()
        self.server: ModbusSerialServer | None = None

    async def start(self) -> None:
        devices = [sim_device(1), sim_device(2), sim_device(3, self.wake)]
        self.server = ModbusSerialServer(devices, port=str(self.line.device_end), baudrate=BAUD)
        await self.server.serve_forever(background=True)

    async def stop(self) -> None:
        self.wake.set()
        if self.server is not None:
            await self.server.shutdown()
            self.server = None
        self.wake = asyncio.Event()


def rtu_device(device_id: str, unit: int, port: Path) -> Device:
    connection = ModbusRtuConnection(
        type="modbus_rtu", port=str(port), baudrate=BAUD, unit=unit, timeout=TIMEOUT
    )
    return Device(id=device_id, profile=METER.id, connection=connection, poll_interval=INTERVAL)


@pytest.fixture
async def line(tmp_path):
    line = SerialLine(tmp_path)
    await line.start()
    devices = SerialDevices(line)
    await devices.start()
    yield line, devices
    await devices.stop()
    await line.stop()


@pytest.fixture
async def meters(line):
    """Three drivers on one serial bus, as the daemon makes them."""
    serial_line, _devices = line
    drivers = DriverSet()
    made = {
        unit: drivers.create(rtu_device(f"meter_{unit}", unit, serial_line.gateway_end), METER)
        for unit in (1, 2, 3)
    }
    yield made
    await drivers.close()


def values(batch) -> dict:
    return dict(zip(batch.points, batch.values, strict=True))


async def test_units_on_one_line_each_answer_with_their_own_registers(meters):
    assert len({driver.bus for driver in meters.values()}) == 1  # one bus for the port
    for unit in (1, 2):
        batch = await meters[unit].read()
        assert batch.quality is None
        assert values(batch) == {
            "unit_id": unit, "setpoint": 10 * unit, "energy": 1000 + unit,
            "power": 123.456, "relay": False,
        }
    started = time.monotonic()
    with pytest.raises(DriverError) as failure:
        await meters[3].read()
    assert failure.value.quality == Quality.COMM_FAILURE
    assert time.monotonic() - started < TIMEOUT + 0.4  # one timeout: the first request only
    assert meters[3].stats()["errors"] == {"timeout": 1}


async def test_writes_on_the_line_land_and_are_verified(meters):
    await meters[2].write("setpoint", 77)
    await meters[2].write("relay", True)
    batch = await meters[2].read()
    assert (values(batch)["setpoint"], values(batch)["relay"]) == (77, True)
    assert values(await meters[1].read())["setpoint"] == 10  # its neighbour is untouched
    with pytest.raises(DriverError) as failure:
        await meters[3].write("setpoint", 1)
    assert failure.value.quality == Quality.COMM_FAILURE


class Collector:
    def __init__(self) -> None:
        self.batches: list = []

    def emit_batch(self, batch) -> None:
        self.batches.append(batch)

    def emit_event(self, event) -> None:
        pass


async def poll_for(drivers: dict, seconds: float) -> tuple[dict[int, float], dict[int, float]]:
    """Run the real poller on `drivers` for `seconds`: good polls per second and the
    longest poll of each unit."""
    pipeline = Collector()
    longest: dict[int, float] = dict.fromkeys(drivers, 0.0)
    tasks = []
    for unit, driver in drivers.items():
        read = driver.read

        async def timed(group: str = "default", unit: int = unit, read=read):
            started = time.monotonic()
            try:
                return await read(group)
            finally:
                longest[unit] = max(longest[unit], time.monotonic() - started)

        driver.read = timed
        health = DeviceHealth(driver.device.id, driver.device.offline_after)
        (spec,) = poll_specs(driver)
        tasks.append(asyncio.create_task(poll_forever(driver, pipeline, health, spec)))
    await asyncio.sleep(seconds)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for driver in drivers.values():
        del driver.read
    rates = {}
    for unit, driver in drivers.items():
        good = [b for b in pipeline.batches if b.device == driver.device.id and b.quality is None]
        rates[unit] = len(good) / seconds
    return rates, longest


async def test_a_dead_unit_costs_its_neighbours_at_most_its_timeout(meters):
    expected = 1 / INTERVAL
    alone, _ = await poll_for({1: meters[1], 2: meters[2]}, 2.0)
    shared, longest = await poll_for(meters, 5.0)
    print(  # the issue asks for these numbers; `pytest -s` shows them
        f"\npolls/s per unit, expected {expected:g}: without the dead unit "
        f"{alone[1]:.2f} / {alone[2]:.2f}, with it {shared[1]:.2f} / {shared[2]:.2f}; "
        f"longest poll {longest[1] * 1000:.0f} / {longest[2] * 1000:.0f} ms; "
        f"dead unit probed {meters[3].stats()['requests']} times in 5 s"
    )
    assert shared[3] == 0
    for unit in (1, 2):
        assert alone[unit] >= 0.8 * expected
        # a poll waits behind at most one of the dead unit's timeouts, so no tick is lost
        assert shared[unit] >= 0.8 * expected
        assert longest[unit] < TIMEOUT + INTERVAL / 2
    # offline after 3 failed polls, then probed with backoff: 0.5 s, 1 s, 2 s, ...
    assert meters[3].stats()["requests"] < 5.0 * expected / 2


async def test_a_vanished_serial_line_is_a_comm_failure_and_reads_recover(line, meters):
    serial_line, devices = line
    assert (await meters[1].read()).quality is None
    await devices.stop()
    await serial_line.stop()  # the adapter is unplugged: the pty is gone
    with pytest.raises(DriverError) as failure:
        await meters[1].read()
    assert failure.value.quality == Quality.COMM_FAILURE
    await serial_line.start()
    await devices.start()
    deadline = time.monotonic() + 5
    while True:
        try:
            batch = await meters[1].read()
            break
        except DriverError:
            assert time.monotonic() < deadline, "reads did not recover after the line came back"
            await asyncio.sleep(0.1)
    assert values(batch)["unit_id"] == 1
    assert set(meters[1].stats()["errors"]) <= {"connection", "timeout"}


# --- RTU framed over TCP (a serial server) ------------------------------------------


@pytest.fixture
async def serial_server():
    """A serial-to-Ethernet converter: RTU frames over TCP, units 1 and 2 behind it."""
    port = services.free_port()
    server = ModbusTcpServer(
        [sim_device(1), sim_device(2)], address=("127.0.0.1", port), framer=FramerType.RTU,
    )
    await server.serve_forever(background=True)
    yield port
    await server.shutdown()


async def test_rtu_over_tcp_reads_each_unit_behind_the_serial_server(serial_server):
    drivers = DriverSet()
    made = {}
    for unit in (1, 2):
        connection = ModbusRtuOverTcpConnection(
            type="modbus_rtu_over_tcp", host="127.0.0.1", port=serial_server, unit=unit,
            timeout=0.5,
        )
        device = Device(id=f"meter_{unit}", profile=METER.id, connection=connection)
        made[unit] = drivers.create(device, METER)
    try:
        assert made[1].bus is made[2].bus
        for unit in (1, 2):
            batch = await made[unit].read()
            assert batch.quality is None
            assert values(batch)["unit_id"] == unit and values(batch)["power"] == 123.456
        await made[1].write("setpoint", 5)
        assert values(await made[1].read())["setpoint"] == 5
    finally:
        await drivers.close()


async def test_two_devices_on_one_port_must_agree_on_its_settings(tmp_path):
    port = tmp_path / "ttyUSB0"
    first = rtu_device("meter_1", 1, port)
    other = rtu_device("meter_2", 2, port)
    other = other.model_copy(update={"connection": other.connection.model_copy(update={"baudrate": 9600})})
    drivers = DriverSet()
    drivers.create(first, METER)
    with pytest.raises(ValueError, match="share serial port .* differ in baudrate"):
        drivers.create(other, METER)
    await drivers.close()
