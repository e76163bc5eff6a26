"""Discovery against the simulated BACnet plant (config/devices/plant.yaml) on loopback.

The AHU and the heat-exchange station run as real bacpypes3 applications on free UDP
ports of 127.0.0.1; discovery reaches them with directed Who-Is (broadcasts on loopback
do not reach every device). What discovery writes must load unchanged, and each
simulated fault must show in what a BACnet client reads.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from bacnet_devices import free_udp_port
from bacpypes3.app import Application
from bacpypes3.primitivedata import Null

from drivers.bacnet.discover import (
    DiscoveredDevice,
    describe,
    local_application,
    who_is,
    write_site_files,
)
from gateway.config.loader import load_site
from gateway.config.models import BacnetPoint, SiteConfig

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
from simsite import SimulatedSite  # noqa: E402

pytestmark = pytest.mark.integration

PLANT = ("ahu_b1_1", "hx_station_1")


def plant_site() -> SiteConfig:
    """The demo site's BACnet plant only, each device on a free loopback port."""
    config = load_site(ROOT / "config" / "site.yaml")
    devices = [
        d.model_copy(update={"connection": d.connection.model_copy(
            update={"address": f"127.0.0.1:{free_udp_port()}"})})
        for d in config.devices if d.id in PLANT
    ]
    return config.model_copy(update={"devices": devices})


@pytest.fixture
async def plant() -> AsyncIterator[tuple[SimulatedSite, Application, dict[str, str]]]:
    config = plant_site()
    site = SimulatedSite(config, seed=7, tick=3600)  # the clock moves only when a test advances it
    await site.start()
    client = local_application(f"127.0.0.1:{free_udp_port()}", 4194301)
    addresses = {d.id: d.connection.address for d in config.devices}
    yield site, client, addresses
    client.close()
    await site.stop()


async def discovered(client: Application, addresses: dict[str, str]) -> list[DiscoveredDevice]:
    devices = await who_is(client, addresses=addresses.values(), timeout=2)
    for device in devices:
        await describe(client, device)
    return devices


def tmp_site(directory: Path) -> Path:
    site = directory / "site.yaml"
    site.write_text('site: {id: discovered, name: 发现测试}\nbacnet: {address: "127.0.0.1:47808"}\n',
                    encoding="utf-8")
    return site


async def test_directed_who_is_finds_both_plant_devices_and_their_objects(plant):
    site, client, addresses = plant
    devices = await discovered(client, addresses)
    assert [(d.instance, d.address, d.name) for d in devices] == [
        (1001, addresses["ahu_b1_1"], "ahu_b1_1"), (2001, addresses["hx_station_1"], "hx_station_1"),
    ]
    ahu = devices[0]
    assert ahu.error is None and (ahu.vendor_name, ahu.model_name) == ("SimBAS", "AHU-DDC 200")
    by_id = {o.object_id: o for o in ahu.objects}
    profile = site.devices["ahu_b1_1"].profile
    assert set(by_id) == {p.object for p in profile.points.values()}
    assert by_id["analog-input,1"].name == "送风温度" and by_id["analog-input,1"].units == "degrees-celsius"
    assert by_id["analog-value,1"].commandable and by_id["binary-output,1"].commandable
    assert not by_id["binary-input,1"].commandable
    assert by_id["binary-input,1"].states == {0: "停止", 1: "运行"}
    assert by_id["multi-state-input,1"].states == {1: "正常", 2: "风机故障", 3: "过滤网堵塞", 4: "送风温度偏离设定"}
    assert by_id["analog-input,1"].value_type == "Real"


async def test_written_profiles_and_devices_load_unchanged(plant, tmp_path):
    _, client, addresses = plant
    devices = await discovered(client, addresses)
    written = write_site_files(tmp_path, devices)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in written) == [
        "devices/ahu_b1_1.yaml", "devices/hx_station_1.yaml",
        "profiles/sim_bas_ahu_ddc_200.yaml", "profiles/sim_bas_hxs_100.yaml",
    ]
    config = load_site(tmp_site(tmp_path))
    ahu = next(d for d in config.devices if d.id == "ahu_b1_1")
    assert (ahu.connection.address, ahu.connection.device_instance) == (addresses["ahu_b1_1"], 1001)
    points: dict[str, BacnetPoint] = {
        p.object: p for p in config.profiles[ahu.profile].points.values()  # type: ignore[misc]
    }
    assert points["analog-input,1"].cov and points["analog-input,1"].unit == "°C"
    assert points["analog-input,1"].cov_increment == pytest.approx(0.2)
    assert points["analog-input,3"].unit == "Pa" and points["analog-input,4"].unit == "%"
    assert points["analog-value,1"].writable and points["analog-value,1"].cov
    assert points["binary-output,1"].writable and not points["binary-output,1"].cov
    assert points["binary-input,1"].cov and not points["binary-input,1"].writable
    assert points["multi-state-input,1"].enum == {1: "正常", 2: "风机故障", 3: "过滤网堵塞", 4: "送风温度偏离设定"}
    hx = config.profiles["sim_bas_hxs_100"].points
    assert {p.unit for p in hx.values()} >= {"°C", "kPa", "kW", "kWh"}
    assert "supply_air_temperature" in config.profiles[ahu.profile].points
    with pytest.raises(FileExistsError):
        write_site_files(tmp_path, devices)
    assert write_site_files(tmp_path, devices, force=True) == written


async def test_the_cli_discovers_and_writes_a_site_that_checks(plant, tmp_path):
    _, _, addresses = plant
    args = [sys.executable, "-m", "gateway.cli", "discover", "bacnet", "--local",
            f"127.0.0.1:{free_udp_port()}", "--timeout", "2", "--write", str(tmp_path)]
    for address in addresses.values():
        args += ["--address", address]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE, env=env, cwd=ROOT)
    out, err = await proc.communicate()  # the simulated devices answer from this loop meanwhile
    assert proc.returncode == 0, err.decode()
    text = out.decode()
    assert "1001" in text and "2001" in text and "SimBAS / AHU-DDC 200" in text
    assert "wrote " in text and (tmp_path / "devices" / "hx_station_1.yaml").exists()
    check = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "check", "-c", str(tmp_site(tmp_path)),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd=ROOT)
    out, err = await check.communicate()
    assert check.returncode == 0 and "configuration OK" in out.decode(), err.decode()


async def read(client: Application, address: str, obj: str) -> str | float:
    value = await client.read_property(address, obj, "present-value")
    return str(value) if not isinstance(value, float) else value


async def test_fan_fail_shows_command_active_and_status_inactive(plant):
    site, client, addresses = plant
    ahu = addresses["ahu_b1_1"]
    assert (await read(client, ahu, "binary-output,1"), await read(client, ahu, "binary-input,1")) == ("active", "active")
    await site.set_fault("ahu_b1_1", "fan_fail")
    assert await read(client, ahu, "binary-output,1") == "active"
    assert await read(client, ahu, "binary-input,1") == "inactive"
    assert await read(client, ahu, "multi-state-input,1") == "2"  # 风机故障
    await site.clear("ahu_b1_1")
    assert await read(client, ahu, "binary-input,1") == "active"


async def test_filter_clogged_raises_the_differential_pressure_past_the_alarm(plant):
    site, client, addresses = plant
    ahu = addresses["ahu_b1_1"]
    assert await read(client, ahu, "analog-input,3") < 250
    await site.set_fault("ahu_b1_1", "filter_clogged")
    site.advance(60)  # an hour of simulated time
    assert await read(client, ahu, "analog-input,3") > 250
    assert await read(client, ahu, "multi-state-input,1") == "3"  # 过滤网堵塞


async def test_supply_drift_moves_the_supply_air_off_its_setpoint(plant):
    site, client, addresses = plant
    ahu = addresses["ahu_b1_1"]
    setpoint = await read(client, ahu, "analog-value,1")
    assert abs(await read(client, ahu, "analog-input,1") - setpoint) < 1.5
    await site.set_fault("ahu_b1_1", "supply_drift")
    site.advance(30)
    assert await read(client, ahu, "analog-input,1") - setpoint > 3
    assert await read(client, ahu, "multi-state-input,1") == "4"  # 送风温度偏离设定


async def test_a_setpoint_written_at_a_priority_is_followed_and_relinquish_hands_it_back(plant):
    site, client, addresses = plant
    hx = addresses["hx_station_1"]
    await client.write_property(hx, "analog-value,1", "present-value", 60.0, priority=10)
    site.advance(1)  # the write reaches the model
    site.advance(60)  # an hour: the secondary supply follows the new setpoint
    assert await read(client, hx, "analog-input,3") == pytest.approx(60.0, abs=1.0)
    await client.write_property(hx, "analog-value,1", "present-value", Null(()), priority=10)
    assert await read(client, hx, "analog-value,1") == pytest.approx(50.0)
