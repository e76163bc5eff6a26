"""The BACnet driver against real bacpypes3 devices on 127.0.0.1, each on its own UDP port."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from bacnet_devices import TestDevice, free_udp_port

from drivers.bacnet.network import BacnetNetwork
from drivers.base import DriverError
from gateway.batch import Batch, Quality
from gateway.config.models import BacnetConnection, BacnetLocal, BacnetPoint, Device, Profile

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

TIMEOUT = 0.5


def profile(points: dict[str, dict[str, Any]], profile_id: str = "ahu") -> Profile:
    return Profile(
        id=profile_id, name=profile_id, system="hvac", protocol="bacnet",
        points={name: BacnetPoint(**spec) for name, spec in points.items()},
    )


def device(dev: TestDevice | int, device_id: str = "ahu_1", **connection: Any) -> Device:
    port = dev.port if isinstance(dev, TestDevice) else dev
    instance = dev.instance if isinstance(dev, TestDevice) else 9999
    conn = {"timeout": TIMEOUT, **connection}
    return Device(
        id=device_id, profile="ahu", retries=0,
        connection=BacnetConnection(
            type="bacnet_ip", address=f"127.0.0.1:{port}", device_instance=instance, **conn
        ),
    )


@pytest.fixture
async def network() -> AsyncIterator[BacnetNetwork]:
    net = BacnetNetwork(BacnetLocal(address=f"127.0.0.1:{free_udp_port()}", device_instance=4000))
    await net.start()
    yield net
    await net.close()


@pytest.fixture
async def ahu() -> AsyncIterator[TestDevice]:
    dev = TestDevice(1001, {
        "analog-input,1": {"presentValue": 18.5, "units": "degreesCelsius", "covIncrement": 0.1},
        "analog-input,2": {"presentValue": 55.0, "units": "percent",
                           "statusFlags": [0, 1, 0, 0], "reliability": "over-range"},
        "analog-input,3": {"presentValue": 240.0, "units": "pascals", "outOfService": True,
                           "statusFlags": [0, 0, 0, 1]},
        "binary-input,1": {"presentValue": "active"},
        "multi-state-input,1": {"presentValue": 2, "numberOfStates": 3},
        "analog-output,1": {"presentValue": 30.0, "units": "percent", "relinquishDefault": 30.0},
    })
    await dev.start()
    yield dev
    await dev.stop()


AHU_POINTS = {
    "supply_temp": {"object": "analog-input,1", "unit": "°C", "cov": True},
    "humidity": {"object": "analog-input,2"},
    "filter_dp": {"object": "analog-input,3"},
    "fan_status": {"object": "binary-input,1"},
    "mode": {"object": "multi-state-input,1", "enum": {1: "off", 2: "auto", 3: "manual"}},
    "valve": {"object": "analog-output,1", "writable": True, "priority": 10, "min": 0, "max": 100},
    "valve_pct_x10": {"object": "analog-output,1", "scale": 10},
    "ghost": {"object": "analog-input,99"},
    "bad_prop": {"object": "binary-input,1", "property": "units"},
}


def twenty_inputs() -> tuple[dict, dict, dict]:
    """Twenty analog inputs (value n at instance n): too many for one 128-byte APDU.

    Returns the device's objects, the profile's points and the values a good read gives.
    """
    objects = {f"analog-input,{n}": {"presentValue": float(n)} for n in range(1, 21)}
    points = {f"t{n}": {"object": f"analog-input,{n}"} for n in range(1, 21)}
    return objects, points, {f"t{n}": (float(n), Quality.GOOD) for n in range(1, 21)}


def values(batch: Batch) -> dict[str, tuple[Any, str]]:
    return {name: (value, quality) for name, value, quality in batch.items()}


async def test_rpm_decodes_values_and_gives_property_errors_and_flags_their_own_quality(
    network: BacnetNetwork, ahu: TestDevice
) -> None:
    driver = network.driver(device(ahu), profile(AHU_POINTS))
    batch = await driver.read()
    got = values(batch)
    assert got["supply_temp"] == (18.5, Quality.GOOD)
    assert isinstance(got["supply_temp"][0], float)
    assert got["fan_status"] == (True, Quality.GOOD)
    assert got["mode"] == (2, Quality.GOOD)
    assert got["valve"] == (30.0, Quality.GOOD)
    assert got["valve_pct_x10"] == (300.0, Quality.GOOD)
    # the device distrusts these itself: fault + reliability, out-of-service
    assert got["humidity"] == (None, Quality.DEVICE_EXCEPTION)
    assert got["filter_dp"] == (None, Quality.DEVICE_EXCEPTION)
    # unknown object / unknown property: that point only
    assert got["ghost"] == (None, Quality.DEVICE_EXCEPTION)
    assert got["bad_prop"] == (None, Quality.DEVICE_EXCEPTION)
    assert driver.stats()["rpm"] is True
    assert ahu.rpm_requests >= 1


async def test_device_that_rejects_rpm_is_read_property_by_property(network: BacnetNetwork) -> None:
    old = TestDevice(1002, {"analog-input,1": {"presentValue": 7.25}, "binary-input,1": {"presentValue": "inactive"}},
                     rpm=False)
    await old.start()
    try:
        points = {"temp": {"object": "analog-input,1"}, "run": {"object": "binary-input,1"},
                  "ghost": {"object": "analog-input,5"}}
        driver = network.driver(device(old), profile(points))
        for _ in range(2):
            got = values(await driver.read())
            assert got == {"temp": (7.25, Quality.GOOD), "run": (False, Quality.GOOD),
                           "ghost": (None, Quality.DEVICE_EXCEPTION)}
        assert driver.stats()["rpm"] is False
        assert driver.stats()["errors"].get("reject_unrecognized-service") == 1  # remembered
    finally:
        await old.stop()


async def test_small_apdu_device_without_segmentation_gets_several_smaller_requests(
    network: BacnetNetwork,
) -> None:
    objects, points, expected = twenty_inputs()
    small = TestDevice(1003, objects, max_apdu=128, segmentation=False)
    await small.start()
    try:
        driver = network.driver(device(small), profile(points))
        got = values(await driver.read())
        assert got == expected
        assert driver.stats()["max_apdu"] == 128
        assert small.rpm_requests > 3  # 20 objects x 3 properties do not fit 128 bytes
        assert driver.stats()["errors"] == {}  # sized right from the start: nothing aborted
    finally:
        await small.stop()


async def test_apdu_budget_halves_when_the_device_aborts_a_request_as_too_big(
    network: BacnetNetwork,
) -> None:
    objects, points, expected = twenty_inputs()
    liar = TestDevice(1004, objects, max_apdu=128, segmentation=False)
    await liar.start()
    try:
        # the config claims a big APDU: the device aborts, the driver halves and remembers
        driver = network.driver(device(liar, max_apdu=1476, segmentation=False), profile(points))
        got = values(await driver.read())
        assert got == expected
        stats = driver.stats()
        assert stats["apdu_budget"] <= 128
        aborts = stats["errors"]["abort_segmentation-not-supported"]
        await driver.read()
        assert driver.stats()["errors"]["abort_segmentation-not-supported"] == aborts
    finally:
        await liar.stop()


async def test_cov_batches_arrive_renew_and_come_back_after_a_device_restart(
    network: BacnetNetwork, ahu: TestDevice
) -> None:
    points = {"supply_temp": {"object": "analog-input,1", "cov": True, "cov_increment": 0.5},
              "fan_status": {"object": "binary-input,1"}}
    driver = network.driver(device(ahu, cov_lifetime=2), profile(points))
    batches: asyncio.Queue[Batch] = asyncio.Queue()
    await driver.start(batches.put_nowait)
    try:
        first = await asyncio.wait_for(batches.get(), 2)  # the initial notification
        assert first.points == ("supply_temp",) and first.values == [18.5]
        assert ahu.obj("analog-input,1").covIncrement == 0.5  # the point's increment written

        async def change_to(value: float) -> Batch:
            ahu.set("analog-input,1", presentValue=value)
            while True:
                batch = await asyncio.wait_for(batches.get(), 2)
                if batch.values == [value]:
                    return batch

        await change_to(19.5)
        await asyncio.sleep(2.5)  # past the 2 s lifetime: only a renewal keeps it alive
        assert driver.stats()["cov"]["analog-input,1"]["renewals"] >= 1
        await change_to(20.5)

        await ahu.stop()
        with pytest.raises(DriverError) as failed:
            await driver.read()
        assert failed.value.quality == Quality.COMM_FAILURE
        await ahu.start()  # a restarted controller: no subscriptions, initial values
        assert values(await driver.read())["supply_temp"] == (18.5, Quality.GOOD)
        batch = await change_to(22.0)  # re-subscribed on seeing the device answer again
        assert batch.quality is None
        assert driver.stats()["cov"]["analog-input,1"]["resubscribed"] == 1
    finally:
        await driver.stop()


async def test_confirmed_cov_and_a_refused_subscription_falls_back_to_polling(network: BacnetNetwork) -> None:
    points = {"supply_temp": {"object": "analog-input,1", "cov": True}}
    stubborn = TestDevice(1005, {"analog-input,1": {"presentValue": 12.0, "covIncrement": 0.1}}, cov=False)
    willing = TestDevice(1006, {"analog-input,1": {"presentValue": 13.0, "covIncrement": 0.1}})
    await stubborn.start()
    await willing.start()
    batches: asyncio.Queue[Batch] = asyncio.Queue()
    refused = network.driver(device(stubborn, "ahu_2"), profile(points))
    confirmed = network.driver(device(willing, "ahu_3", cov_confirmed=True), profile(points))
    try:
        await refused.start(batches.put_nowait)
        await confirmed.start(batches.put_nowait)
        assert refused.stats()["cov"]["analog-input,1"]["state"] == "refused"
        stubborn.set("analog-input,1", presentValue=14.0)
        assert values(await refused.read())["supply_temp"] == (14.0, Quality.GOOD)  # polled
        first = await asyncio.wait_for(batches.get(), 2)
        assert (first.device, first.values) == ("ahu_3", [13.0])
        willing.set("analog-input,1", presentValue=15.0)
        batch = await asyncio.wait_for(batches.get(), 2)
        assert (batch.device, batch.values) == ("ahu_3", [15.0])
    finally:
        await refused.stop()
        await confirmed.stop()
        await stubborn.stop()
        await willing.stop()


async def test_write_with_priority_lands_and_relinquish_returns_control(
    network: BacnetNetwork, ahu: TestDevice
) -> None:
    driver = network.driver(device(ahu), profile(AHU_POINTS))
    await driver.write("valve", 75.0)
    output = ahu.obj("analog-output,1")
    slot = output.priorityArray[9]  # priority 10, the point's
    assert (slot._choice, slot.real) == ("real", 75.0)
    assert output.presentValue == 75.0
    await driver.write("valve", 60.0, priority=5)  # a higher priority wins
    assert output.presentValue == 60.0
    await driver.relinquish("valve", priority=5)
    assert output.presentValue == 75.0  # back to priority 10
    await driver.relinquish("valve")
    assert output.presentValue == 30.0  # back to the relinquish-default
    assert values(await driver.read())["valve"] == (30.0, Quality.GOOD)

    with pytest.raises(DriverError) as refused:
        await driver.write("valve", 150)
    assert refused.value.quality == "bad_request" and "outside the point's range [0, 100]" in str(refused.value)
    with pytest.raises(DriverError) as read_only:
        await driver.write("supply_temp", 1.0)
    assert read_only.value.quality == "bad_request"
    assert output.presentValue == 30.0


async def test_unreachable_device_fails_within_its_timeout_and_does_not_delay_another(
    network: BacnetNetwork, ahu: TestDevice
) -> None:
    good = network.driver(device(ahu, timeout=5.0), profile(AHU_POINTS))
    dead_timeout = 3.0
    dead = network.driver(device(free_udp_port(), "ahu_dead", timeout=dead_timeout), profile(AHU_POINTS))
    loop = asyncio.get_running_loop()

    async def read(driver: Any) -> tuple[Any, float]:
        started = loop.time()
        try:
            result: Any = await driver.read()
        except DriverError as exc:
            result = exc
        return result, loop.time() - started

    (good_batch, good_took), (dead_result, dead_took) = await asyncio.gather(read(good), read(dead))
    assert isinstance(good_batch, Batch) and values(good_batch)["supply_temp"] == (18.5, Quality.GOOD)
    assert isinstance(dead_result, DriverError) and dead_result.quality == Quality.COMM_FAILURE
    assert dead_took < dead_timeout + 1.0  # one probe, no retries while never answered
    assert good_took < dead_timeout / 2  # the dead device's wait is its own
