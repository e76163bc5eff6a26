"""The Modbus TCP driver against real pymodbus servers on loopback, and the simulated site."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path

import pytest
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from drivers.base import DriverError
from drivers.modbus.driver import ModbusTcpDriver
from drivers.registry import DriverSet, create_driver
from gateway.batch import Quality
from gateway.config.models import (
    Device,
    ModbusPoint,
    ModbusTcpConnection,
    Profile,
    SiteConfig,
    SiteInfo,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from services import free_port  # noqa: E402
from simsite import SimulatedSite  # noqa: E402

pytestmark = pytest.mark.integration

TIMEOUT = 0.5


def make_profile(profile_id: str, points: dict[str, dict], order: str = "ABCD") -> Profile:
    return Profile(
        id=profile_id, name=profile_id, system="test", order=order,
        points={name: ModbusPoint(**spec) for name, spec in points.items()},
    )


def make_device(device_id: str, profile_id: str, port: int, unit: int = 1) -> Device:
    connection = ModbusTcpConnection(host="127.0.0.1", port=port, unit=unit, timeout=TIMEOUT)
    return Device(id=device_id, profile=profile_id, connection=connection)


BOOSTER_PUMP = make_profile("booster_pump", {
    "frequency": {"address": 0, "scale": 0.01, "unit": "Hz"},
    "current": {"address": 1, "scale": 0.1, "unit": "A"},
    "outlet_pressure": {"address": 2, "scale": 0.001, "unit": "MPa"},
    "running": {"address": 3},
    "fault_code": {"address": 4},
    "run_hours": {"address": 10, "type": "uint32", "unit": "h"},
    "starts": {"address": 12, "type": "uint32"},
    "setpoint_pressure": {"address": 20, "scale": 0.001, "unit": "MPa", "writable": True},
})
ENERGY_METER = make_profile("energy_meter_3p", {
    "voltage_l1": {"table": "input", "address": 0, "type": "float32", "unit": "V"},
    "voltage_l2": {"table": "input", "address": 2, "type": "float32", "unit": "V"},
    "voltage_l3": {"table": "input", "address": 4, "type": "float32", "unit": "V"},
    "current_l1": {"table": "input", "address": 6, "type": "float32", "unit": "A"},
    "current_l2": {"table": "input", "address": 8, "type": "float32", "unit": "A"},
    "current_l3": {"table": "input", "address": 10, "type": "float32", "unit": "A"},
    "total_power": {"table": "input", "address": 52, "type": "float32", "scale": 0.001, "unit": "kW"},
    "frequency": {"table": "input", "address": 70, "type": "float32", "unit": "Hz"},
    "energy_import": {"table": "input", "address": 342, "type": "float32", "unit": "kWh"},
})

# What the static device holds: the pump map at 0..20, plus float32s in the input table.
PUMP_REGISTERS = [4512, 153, 452, 1, 0, 0, 0, 0, 0, 0, 0x0001, 0x86A0, 0, 321, 0, 0, 0, 0, 0, 0, 450]
PUMP_VALUES = {
    "frequency": 45.12, "current": 15.3, "outlet_pressure": 0.452, "running": 1, "fault_code": 0,
    "run_hours": 100000, "starts": 321, "setpoint_pressure": 0.45,
}
INPUT_REGISTERS = [0x42F6, 0xE979, 0xE979, 0x42F6, 0x7FC0, 0x0000]  # 123.456 ABCD, CDAB, NaN
MIXED = make_profile("mixed", {
    **{name: BOOSTER_PUMP.points[name].model_dump() for name in BOOSTER_PUMP.points},
    "power": {"table": "input", "address": 0, "type": "float32"},
    "power_swapped": {"table": "input", "address": 2, "type": "float32", "order": "CDAB"},
    "broken": {"table": "input", "address": 4, "type": "float32"},
    "missing": {"table": "holding", "address": 500},  # the device has no register 500
    "wide": {"table": "holding", "address": 30, "type": "float32", "writable": True},
})


class StaticDevice:
    """A pymodbus server holding fixed registers; it can be stopped and started again."""

    def __init__(self, port: int, unit: int = 1) -> None:
        self.port = port
        self.unit = unit
        self.server: ModbusTcpServer | None = None

    async def start(self) -> None:
        holding = PUMP_REGISTERS + [0] * 9 + [0, 0]  # up to the float32 at 30
        device = SimDevice(
            id=self.unit,
            simdata=(
                [SimData(0, values=False, datatype=DataType.BITS)],
                [SimData(0, values=False, datatype=DataType.BITS)],
                [SimData(0, values=holding, datatype=DataType.REGISTERS)],
                [SimData(0, values=list(INPUT_REGISTERS), datatype=DataType.REGISTERS)],
            ),
        )
        self.server = ModbusTcpServer(device, address=("127.0.0.1", self.port))
        await self.server.serve_forever(background=True)

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.shutdown()
            self.server = None

    async def holding(self, address: int, count: int) -> list[int]:
        """Read registers back with a client of our own, not the driver under test."""
        client = AsyncModbusTcpClient("127.0.0.1", port=self.port, timeout=1, retries=0)
        await client.connect()
        try:
            response = await client.read_holding_registers(address, count=count, device_id=self.unit)
            return response.registers
        finally:
            client.close()


@pytest.fixture
async def static_device():
    device = StaticDevice(free_port())
    await device.start()
    yield device
    await device.stop()


@pytest.fixture
async def driver(static_device):
    driver = create_driver(make_device("pump", "mixed", static_device.port), MIXED)
    await driver.start(lambda batch: None)
    yield driver
    await driver.stop()


async def test_a_poll_decodes_every_point_into_one_batch(driver):
    batch = await driver.read()
    values = dict(zip(batch.points, batch.values, strict=True))
    assert batch.device == "pump" and batch.points == tuple(MIXED.points)
    assert abs(batch.ts - time.time()) < 5
    for name, expected in PUMP_VALUES.items():
        assert values[name] == expected, name
    assert values["power"] == 123.456
    assert values["power_swapped"] == 123.456


async def test_an_exception_response_marks_only_that_requests_points(driver):
    batch = await driver.read()
    missing = batch.points.index("missing")
    assert batch.quality[missing] == Quality.DEVICE_EXCEPTION
    assert batch.values[missing] is None
    assert batch.quality_of(batch.points.index("frequency")) == Quality.GOOD


async def test_a_nan_float_is_a_decode_error_not_a_value(driver):
    batch = await driver.read()
    broken = batch.points.index("broken")
    assert (batch.values[broken], batch.quality[broken]) == (None, Quality.DECODE_ERROR)


async def test_a_device_answering_every_request_gets_no_quality_list(static_device):
    driver = ModbusTcpDriver(make_device("pump", "booster_pump", static_device.port), BOOSTER_PUMP)
    batch = await driver.read()  # read() connects on its own without start()
    assert batch.quality is None
    assert dict(zip(batch.points, batch.values, strict=True)) == PUMP_VALUES
    await driver.stop()


async def test_a_stopped_server_is_a_comm_failure_within_the_timeout(driver, static_device):
    await driver.read()
    await static_device.stop()
    started = time.monotonic()
    with pytest.raises(DriverError) as failure:
        await driver.read()
    assert failure.value.quality == Quality.COMM_FAILURE
    assert time.monotonic() - started < TIMEOUT + 0.5


async def test_a_server_restarted_mid_run_is_read_again(driver, static_device):
    assert (await driver.read()).values[0] == 45.12
    await static_device.stop()
    with pytest.raises(DriverError):
        await driver.read()
    await static_device.start()
    batch = await driver.read()
    assert batch.values[0] == 45.12


async def test_start_does_not_raise_when_the_device_is_down():
    driver = ModbusTcpDriver(make_device("pump", "booster_pump", free_port()), BOOSTER_PUMP)
    await driver.start(lambda batch: None)
    with pytest.raises(DriverError) as failure:
        await driver.read()
    assert failure.value.quality == Quality.COMM_FAILURE
    await driver.stop()


async def test_a_write_lands_in_the_devices_registers(driver, static_device):
    await driver.write("setpoint_pressure", 0.5)
    assert await static_device.holding(20, 1) == [500]
    await driver.write("wide", 123.456)  # two registers: write multiple registers
    assert await static_device.holding(30, 2) == [0x42F6, 0xE979]
    batch = await driver.read()
    assert batch.values[batch.points.index("setpoint_pressure")] == 0.5


@pytest.mark.parametrize(
    ("point", "value"),
    [("setpoint_pressure", 70.0), ("setpoint_pressure", -0.1), ("setpoint_pressure", "high"),
     ("frequency", 40.0), ("power", 1.0), ("no_such_point", 1)],
)
async def test_a_bad_write_is_refused_and_nothing_is_written(driver, static_device, point, value):
    with pytest.raises(DriverError) as refusal:
        await driver.write(point, value)
    assert refusal.value.quality == "bad_request"
    assert await static_device.holding(0, 21) == PUMP_REGISTERS


async def test_a_write_the_device_refuses_is_write_failed_with_its_exception(static_device):
    profile = make_profile("odd", {"frequency": {"address": 0}, "ghost": {"address": 500, "writable": True}})
    driver = create_driver(make_device("pump", "odd", static_device.port), profile)
    with pytest.raises(DriverError) as failure:
        await driver.write("ghost", 1)
    assert failure.value.quality == "write_failed"
    assert "Modbus exception 2 (illegal_address)" in str(failure.value)
    await driver.stop()


async def test_units_behind_one_endpoint_share_its_bus_and_keep_their_own_stats(static_device):
    drivers = DriverSet()
    pump = drivers.create(make_device("pump", "mixed", static_device.port, unit=1), MIXED)
    other = drivers.create(make_device("other", "booster_pump", static_device.port, unit=2), BOOSTER_PUMP)
    try:
        assert pump.bus is other.bus
        await pump.read()
        batch = await other.read()  # the server has no unit 2 and answers with an exception
        assert set(batch.quality) == {Quality.DEVICE_EXCEPTION}
        stats = pump.stats()
        assert stats["requests"] == len(pump.plans["default"].requests)
        assert stats["errors"] == {"exception_2": 1}  # the request for register 500
        assert stats["latency_ms"] is not None and stats["last_good_read"] is not None
        assert all(kind.startswith("exception_") for kind in other.stats()["errors"])
    finally:
        await drivers.close()


async def test_an_unknown_connection_type_is_a_clear_error():
    device = make_device("pump", "booster_pump", 502)
    odd = device.model_copy(update={"connection": device.connection.model_copy(update={"type": "bacnet"})})
    with pytest.raises(ValueError, match="no driver for connection type 'bacnet'"):
        create_driver(odd, BOOSTER_PUMP)


# --- the simulated site ------------------------------------------------------------


def site_config(pump_port: int, meter_port: int) -> SiteConfig:
    return SiteConfig(
        site=SiteInfo(id="test-site", name="test site"),
        profiles={"booster_pump": BOOSTER_PUMP, "energy_meter_3p": ENERGY_METER},
        devices=[
            make_device("pump_b1_1", "booster_pump", pump_port),
            make_device("meter_b1_main", "energy_meter_3p", meter_port),
        ],
    )


@pytest.fixture
async def site():
    config = site_config(free_port(), free_port())
    site = SimulatedSite(config, seed=7, tick=3600)  # registers stay put unless a test advances them
    await site.start()
    drivers = {d.id: create_driver(d, config.profiles[d.profile]) for d in config.devices}
    yield site, drivers
    for driver in drivers.values():
        await driver.stop()
    await site.stop()


def as_dict(batch) -> dict:
    return dict(zip(batch.points, batch.values, strict=True))


async def test_the_simulated_site_serves_what_it_simulates(site):
    site, drivers = site
    assert set(drivers) == {"pump_b1_1", "meter_b1_main"}
    for device_id, driver in drivers.items():
        batch = await driver.read()
        assert batch.quality is None
        assert set(batch.points) == set(driver.profile.points), device_id
        for point, value in as_dict(batch).items():
            assert value == site.value(device_id, point), (device_id, point)


async def test_simulated_pump_and_meter_values_are_plausible(site):
    site, drivers = site
    pump = as_dict(await drivers["pump_b1_1"].read())
    assert pump["setpoint_pressure"] == 0.45
    assert 0.40 <= pump["outlet_pressure"] <= 0.50
    if pump["running"]:
        assert 20 <= pump["frequency"] <= 50 and pump["current"] > 0
    assert pump["fault_code"] == 0 and pump["run_hours"] >= 1000
    meter = as_dict(await drivers["meter_b1_main"].read())
    for phase in (1, 2, 3):
        assert 220 <= meter[f"voltage_l{phase}"] <= 235
        assert meter[f"current_l{phase}"] > 0
    volt_amps = sum(meter[f"voltage_l{p}"] * meter[f"current_l{p}"] for p in (1, 2, 3)) / 1000
    assert 0.85 * volt_amps <= meter["total_power"] <= 0.98 * volt_amps + 0.01
    assert 49.9 <= meter["frequency"] <= 50.1


async def test_counters_count_up_as_simulated_time_passes(site):
    site, drivers = site
    before_pump = as_dict(await drivers["pump_b1_1"].read())
    before_meter = as_dict(await drivers["meter_b1_main"].read())
    site.advance(60)  # an hour of simulated time at the default speed
    after_meter = as_dict(await drivers["meter_b1_main"].read())
    assert after_meter["energy_import"] > before_meter["energy_import"]
    after_pump = as_dict(await drivers["pump_b1_1"].read())
    assert after_pump["run_hours"] >= before_pump["run_hours"]


async def test_a_setpoint_written_by_the_gateway_moves_the_simulated_pressure(site):
    site, drivers = site
    await drivers["pump_b1_1"].write("setpoint_pressure", 0.55)
    assert site.value("pump_b1_1", "setpoint_pressure") == 0.55
    site.advance(5)
    pump = as_dict(await drivers["pump_b1_1"].read())
    assert pump["setpoint_pressure"] == 0.55
    assert 0.50 <= pump["outlet_pressure"] <= 0.60


async def test_a_pump_trip_reads_as_stopped_with_a_fault_code_until_cleared(site):
    site, drivers = site
    await site.set_fault("pump_b1_1", "pump_trip")
    pump = as_dict(await drivers["pump_b1_1"].read())
    assert (pump["running"], pump["frequency"]) == (0, 0)
    assert pump["fault_code"] != 0
    await site.clear("pump_b1_1")
    site.advance(1)
    assert as_dict(await drivers["pump_b1_1"].read())["fault_code"] == 0


async def test_a_device_that_stops_answering_fails_alone_and_comes_back(site):
    site, drivers = site
    await drivers["pump_b1_1"].read()
    await site.set_fault("pump_b1_1", "stop_answering")
    with pytest.raises(DriverError) as failure:
        await drivers["pump_b1_1"].read()
    assert failure.value.quality == Quality.COMM_FAILURE
    assert (await drivers["meter_b1_main"].read()).quality is None
    await site.clear("pump_b1_1")
    assert (await drivers["pump_b1_1"].read()).quality is None


async def test_a_silent_device_costs_one_timeout_per_poll(site):
    site, drivers = site
    await site.set_fault("pump_b1_1", "silent")
    started = time.monotonic()
    with pytest.raises(DriverError) as failure:
        await drivers["pump_b1_1"].read()
    elapsed = time.monotonic() - started
    assert failure.value.quality == Quality.COMM_FAILURE
    assert TIMEOUT * 0.8 <= elapsed < TIMEOUT + 0.5
    await site.clear("pump_b1_1")
    assert (await drivers["pump_b1_1"].read()).quality is None


async def test_a_device_answering_with_exceptions_marks_its_points_not_a_comm_failure(site):
    site, drivers = site
    await site.set_fault("meter_b1_main", "exception")
    batch = await drivers["meter_b1_main"].read()
    assert set(batch.quality) == {Quality.DEVICE_EXCEPTION}
    assert batch.values == [None] * len(batch.points)


async def test_the_simulator_runs_as_a_script_until_interrupted(tmp_path):
    port = free_port()
    (tmp_path / "profiles").mkdir()
    (tmp_path / "devices").mkdir()
    (tmp_path / "site.yaml").write_text("site: {id: sim-test, name: sim test}\n")
    (tmp_path / "profiles" / "pump.yaml").write_text(
        "id: booster_pump\nname: pump\nsystem: water_supply\npoints:\n"
        "  outlet_pressure: {address: 2, scale: 0.001, unit: MPa}\n"
    )
    (tmp_path / "devices" / "pump.yaml").write_text(
        "devices:\n  - id: pump_b1_1\n    profile: booster_pump\n"
        f"    connection: {{type: modbus_tcp, host: 127.0.0.1, port: {port}, unit: 1}}\n"
    )
    ready = tmp_path / "ready"
    root = Path(__file__).resolve().parents[2]
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(root / "scripts" / "simsite"), "--config", str(tmp_path / "site.yaml"),
        "--ready-file", str(ready), cwd=root,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        for _ in range(100):
            if ready.exists() or process.returncode is not None:
                break
            await asyncio.sleep(0.1)
        assert ready.exists(), (await process.stderr.read()).decode()
        profile = make_profile("booster_pump", {"outlet_pressure": {"address": 2, "scale": 0.001}})
        driver = ModbusTcpDriver(make_device("pump_b1_1", "booster_pump", port), profile)
        batch = await driver.read()
        await driver.stop()
        assert 0.40 <= batch.values[0] <= 0.50
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(process.wait(), 5) == 0
    assert not ready.exists()
