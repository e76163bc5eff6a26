"""The demo site (config/site.yaml) served by the simulator and read through the real driver.

Every example device is read back point for point against what the simulator holds, the
dynamics are checked for plausibility, and each scenario is shown to change what the
gateway reads. Ports are rewritten to free ones; the simulator's clock only moves when a
test calls `advance`, so nothing here depends on timing.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from drivers.base import Driver, DriverError
from drivers.registry import create_driver
from gateway.batch import Quality
from gateway.config.loader import load_site
from gateway.config.models import SiteConfig

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
from services import free_port  # noqa: E402
from simsite import SimulatedSite  # noqa: E402
from simsite.models.elevator import FLOORS  # noqa: E402

pytestmark = pytest.mark.integration

TIMEOUT = 0.3  # seconds; only the meter_silent test waits for one
# A weekday at 08:00 in Shanghai: the morning rush, so lifts and water are busy. With a
# fixed seed too, every run simulates the same morning.
MORNING = datetime(2025, 6, 2, 8, 0, tzinfo=ZoneInfo("Asia/Shanghai")).timestamp()
SEED = 11


def demo_site(*, only: set[str] | None = None) -> SiteConfig:
    """config/site.yaml's Modbus devices, each on a free port with a short timeout (the
    BACnet plant and the MQTT devices have their own tests: test_bacnet_discovery.py,
    test_simsite_mqtt.py)."""
    config = load_site(ROOT / "config" / "site.yaml")
    devices = [
        device.model_copy(update={
            "connection": device.connection.model_copy(update={"port": free_port(), "timeout": TIMEOUT}),
        })
        for device in config.devices
        if (only is None or device.id in only) and device.connection.type not in ("bacnet_ip", "mqtt")
    ]
    return config.model_copy(update={"devices": devices})


@pytest.fixture
async def demo():
    config = demo_site()
    # tick=3600: the clock moves only when a test advances it
    site = SimulatedSite(config, seed=SEED, tick=3600, start=MORNING)
    await site.start()
    drivers = {d.id: create_driver(d, config.profiles[d.profile]) for d in config.devices}
    yield site, drivers
    for driver in drivers.values():
        await driver.stop()
    await site.stop()


async def read_all(driver: Driver) -> dict[str, Any]:
    """Every poll group of the device, merged: what the gateway knows of it after one round."""
    values: dict[str, Any] = {}
    for group in driver.poll_groups:  # type: ignore[attr-defined]
        batch = await driver.read(group)  # type: ignore[call-arg]
        assert batch.quality is None, dict(zip(batch.points, batch.quality, strict=True))
        values.update(zip(batch.points, batch.values, strict=True))
    return values


def test_the_example_profiles_exercise_every_map_feature():
    config = load_site(ROOT / "config" / "site.yaml")
    modbus = {k: p for k, p in config.profiles.items() if p.protocol == "modbus"}
    points = [p for profile in modbus.values() for p in profile.points.values()]
    assert {p.type for p in points} >= {
        "bool", "int16", "uint16", "uint32", "float32", "string", "bcd16", "bcd32",
    }
    assert {p.table for p in points} == {"holding", "input", "coil", "discrete"}
    assert any(p.bit is not None for p in points) and any(p.enum for p in points)
    assert any(p.writable and p.table == "coil" for p in points)
    assert any(p.writable and p.max is not None for p in points)
    assert {profile.addressing for profile in modbus.values()} >= {"zero_based", "modicon"}
    assert {profile.order for profile in modbus.values()} >= {"ABCD", "CDAB"}
    used = {device.profile for device in config.devices}
    assert used == set(config.profiles), "every profile has a demo device"


async def test_every_example_device_reads_back_exactly_what_is_simulated(demo):
    site, drivers = demo
    assert {"pump_b1_1", "meter_b1_lighting", "lift_b1_1", "fire_panel_main"} <= set(drivers)
    for device_id, driver in drivers.items():
        values = await read_all(driver)
        profile = site.devices[device_id].profile
        assert set(values) == set(profile.points), device_id
        for point, value in values.items():
            assert value == site.value(device_id, point), (device_id, point)


async def test_the_example_devices_read_plausible_values(demo):
    site, drivers = demo
    pump = await read_all(drivers["pump_b1_1"])
    assert 0.40 <= pump["outlet_pressure"] <= 0.50 and pump["fault_code"] == 0
    assert pump["remote"] is True and pump["dry_run"] is False
    lighting = await read_all(drivers["meter_b1_lighting"])
    assert 215 <= lighting["voltage"] <= 235 and 49.9 <= lighting["frequency"] <= 50.1
    assert lighting["active_power"] == pytest.approx(lighting["voltage"] * lighting["current"] * lighting["power_factor"], rel=0.01)
    assert lighting["energy_total"] == pytest.approx(lighting["energy_import"] + lighting["energy_export"], abs=0.01)
    assert 10_000_000 <= lighting["serial_number"] <= 19_999_999
    water = await read_all(drivers["water_b1_main"])
    assert water["flow_rate"] >= 0.35 and water["total_volume"] > 10_000
    assert len(str(water["meter_number"])) == 8 and water["pulse_litres"] == 10
    assert not water["wire_break"] and not water["magnetic_tamper"]
    sump = await read_all(drivers["sump_b1_1"])
    assert 0 < sump["level"] < 2.2 and not sump["high_level"]
    assert sump["level_percent"] == pytest.approx(100 * sump["level"] / 3, abs=0.2)
    assert sump["auto_mode"] is True and (sump["start_level"], sump["stop_level"]) == (1.2, 0.5)
    lift = await read_all(drivers["lift_b1_1"])
    assert lift["floor"] in FLOORS and lift["in_service"] and not lift["passengers_trapped"]
    assert lift["firmware_version"] == "HGP-CTL V3.2.1"
    panel = await read_all(drivers["fire_panel_main"])
    assert not any(panel[f"zone{z}_{k}"] for z in range(1, 9) for k in ("fire", "fault", "supervisory"))
    assert (panel["fire_alarm"], panel["panel_fault"], panel["auto_linkage"]) == (False, False, True)
    local = site.clock.time.local
    assert panel["panel_date"] == local.year * 10_000 + local.month * 100 + local.day
    assert panel["panel_time"] == local.hour * 100 + local.minute
    doors = await read_all(drivers["door_b1_io"])
    assert doors["tamper"] is False and doors["release_seconds"] == 5


async def test_meters_count_up_and_the_lift_makes_trips_as_simulated_time_passes(demo):
    site, drivers = demo
    before = {d: await read_all(drivers[d]) for d in ("meter_b1_lighting", "water_b1_main", "lift_b1_1")}
    site.advance(60)  # an hour of simulated time at the default speed
    after = {d: await read_all(drivers[d]) for d in before}
    assert after["meter_b1_lighting"]["energy_import"] > before["meter_b1_lighting"]["energy_import"]
    assert after["water_b1_main"]["total_volume"] > before["water_b1_main"]["total_volume"]
    assert after["lift_b1_1"]["run_count"] > before["lift_b1_1"]["run_count"]


def test_water_flow_follows_the_day_with_a_night_minimum(demo):
    site, _drivers = demo
    meter = site.devices["water_b1_main"].model.known
    night, morning, evening = meter.flow(3.0), meter.flow(7.5), meter.flow(20.0)
    assert 0.3 <= night < 1.0 < morning and morning < evening


def test_the_lift_travels_between_floors_and_cycles_its_doors(demo):
    site, _drivers = demo
    floors, doors, running = set(), set(), set()
    for _ in range(600):  # ten simulated minutes in one-second steps
        site.advance(1 / 60)
        floors.add(site.value("lift_b1_1", "floor"))
        doors.add(site.value("lift_b1_1", "door_state"))
        running.add(site.value("lift_b1_1", "running"))
    assert len(floors) >= 3 and floors <= set(FLOORS)
    assert doors == {0, 1, 2, 3} and running == {False, True}


def test_the_sump_fills_and_its_pumps_empty_it(demo):
    site, _drivers = demo
    levels, pumping = [], set()
    for _ in range(8 * 60):  # eight simulated hours in minutes
        site.advance(1)
        levels.append(site.value("sump_b1_1", "level"))
        pumping.add((site.value("sump_b1_1", "pump1_running"), site.value("sump_b1_1", "pump2_running")))
    assert max(levels) >= 1.2 and min(levels[levels.index(max(levels)):]) <= 0.55
    assert (True, False) in pumping and (False, True) in pumping  # lead pump alternates
    assert not any(site.value("sump_b1_1", p) for p in ("high_level", "pump1_fault", "pump2_fault"))


async def test_relays_and_the_lock_release_follow_what_the_gateway_writes(demo):
    site, drivers = demo
    sump = drivers["sump_b1_1"]
    await sump.write("auto_mode", False)
    await sump.write("pump2_relay", True)
    site.advance(0.1)
    values = await read_all(sump)
    assert (values["auto_mode"], values["pump2_relay"], values["pump2_running"]) == (False, True, True)
    doors = drivers["door_b1_io"]
    await doors.write("lock_release", True)
    assert site.value("door_b1_io", "lock_release") is True
    site.advance(2 / 60)  # the resident walks through
    values = await read_all(doors)
    assert values["lock_release"] and values["door1_open"]
    with pytest.raises(DriverError):
        await doors.write("release_seconds", 60)  # above the profile's max: never sent
    assert site.value("door_b1_io", "release_seconds") == 5


async def test_pump_trip_and_low_pressure_show_in_the_pump_readings(demo):
    site, drivers = demo
    await site.set_fault("pump_b1_1", "pump_trip")
    pump = await read_all(drivers["pump_b1_1"])
    assert (pump["running"], pump["frequency"], pump["fault_code"]) == (0, 0, 11)
    await site.clear("pump_b1_1")
    await site.set_fault("pump_b1_1", "low_pressure")
    site.advance(1)
    pump = await read_all(drivers["pump_b1_1"])
    assert pump["outlet_pressure"] < 0.2 and pump["running"] == 1 and pump["frequency"] == 50
    await site.clear("pump_b1_1")
    site.advance(1)
    assert (await read_all(drivers["pump_b1_1"]))["outlet_pressure"] > 0.4


async def test_a_stuck_elevator_traps_its_passengers_until_rescued(demo):
    site, drivers = demo
    await site.set_fault("lift_b1_1", "elevator_stuck")
    site.advance(1)  # stuck stays stuck
    lift = await read_all(drivers["lift_b1_1"])
    assert (lift["alarm_button"], lift["passengers_trapped"], lift["fault"]) == (True, True, True)
    assert (lift["running"], lift["in_service"], lift["door_zone"]) == (False, False, False)
    assert (lift["door_state"], lift["speed"], lift["fault_code"]) == (0, 0, 1)
    await site.clear("lift_b1_1")
    lift = await read_all(drivers["lift_b1_1"])
    assert not lift["passengers_trapped"] and lift["in_service"] and lift["door_zone"]
    assert lift["door_state"] == 1  # the doors open at the landing it was wound to


async def test_a_silent_meter_fails_alone_and_answers_again_when_cleared(demo):
    site, drivers = demo
    await site.set_fault("meter_b1_lighting", "meter_silent")
    with pytest.raises(DriverError) as failure:
        await drivers["meter_b1_lighting"].read()
    assert failure.value.quality == Quality.COMM_FAILURE
    assert (await drivers["water_b1_main"].read()).quality is None
    await site.clear("meter_b1_lighting")
    assert (await drivers["meter_b1_lighting"].read()).quality is None


async def test_a_fire_alarm_sets_its_zone_and_the_panel_flags(demo):
    site, drivers = demo
    await site.set_fault("fire_panel_main", "fire_alarm")
    panel = await read_all(drivers["fire_panel_main"])
    assert [z for z in range(1, 9) if panel[f"zone{z}_fire"]] == [3]
    assert (panel["fire_alarm"], panel["fire_count"], panel["linkage_active"]) == (True, 1, True)
    await site.clear("fire_panel_main")
    panel = await read_all(drivers["fire_panel_main"])
    assert not panel["fire_alarm"] and not panel["zone3_fire"]


async def test_a_flooding_sump_rises_to_its_high_level_switch_with_both_pumps_running(demo):
    site, drivers = demo
    await site.set_fault("sump_b1_1", "sump_high")
    site.advance(60)  # an hour of storm water
    sump = await read_all(drivers["sump_b1_1"])
    assert sump["high_level"] and sump["level"] >= 2.2
    assert sump["pump1_running"] and sump["pump2_running"]


async def test_a_forced_door_is_open_without_a_lock_release(demo):
    site, drivers = demo
    await site.set_fault("door_b1_io", "door_forced")
    site.advance(1)
    doors = await read_all(drivers["door_b1_io"])
    assert doors["door1_open"] and not doors["lock_release"]
    await site.clear("door_b1_io")
    assert not (await read_all(drivers["door_b1_io"]))["door1_open"]


async def test_a_scenario_the_equipment_cannot_play_is_refused(demo):
    site, _drivers = demo
    with pytest.raises(ValueError, match="cannot play 'fire_alarm'"):
        await site.set_fault("lift_b1_1", "fire_alarm")
    with pytest.raises(ValueError, match="cannot play 'meter_silent'"):
        await site.set_fault("pump_b1_1", "meter_silent")


async def test_a_scenario_given_on_the_command_line_starts_on_cue(tmp_path):
    port = free_port()
    (tmp_path / "site.yaml").write_text(
        "site: {id: sim-test, name: sim test}\n"
        f"include: {{profiles: ['{ROOT}/config/profiles/*.yaml']}}\n", encoding="utf-8"
    )
    (tmp_path / "devices").mkdir()
    (tmp_path / "devices" / "fire.yaml").write_text(
        "devices:\n  - id: fire_panel_main\n    profile: fire_panel\n"
        f"    connection: {{type: modbus_tcp, host: 127.0.0.1, port: {port}, unit: 1}}\n",
        encoding="utf-8",
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "scripts" / "simsite"), "--config", str(tmp_path / "site.yaml"),
        "--scenario", "fire_alarm@0s:fire_panel_main", cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        while True:  # the simulator says when the scenario started
            line = await asyncio.wait_for(process.stdout.readline(), 10)
            assert line, (await process.stderr.read()).decode()
            if b"fire_alarm on fire_panel_main" in line:
                break
        config = load_site(tmp_path / "site.yaml")
        driver = create_driver(config.devices[0], config.profiles["fire_panel"])
        panel = await read_all(driver)
        await driver.stop()
        assert panel["fire_alarm"] and panel["zone3_fire"]
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(process.wait(), 5) == 0
