"""BACnet devices the gateway cannot reach by plain unicast on its own network: through a
BBMD as a foreign device, and behind a BACnet router (network number + MAC).

Real bacpypes3 peers on 127.0.0.1, each on its own UDP port. Broadcasts cannot cross
ports on loopback, which is exactly the situation both features exist for: the gateway's
Who-Is reaches the other "subnet" only through the BBMD, and the router is named in the
device's address because Who-Is-Router-To-Network (a broadcast) cannot find it here.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from bacnet_devices import TestBBMD, TestDevice, TestRouter, free_udp_port
from bacpypes3.pdu import Address

from drivers.bacnet.discover import who_is
from drivers.bacnet.network import BacnetNetwork, device_address, router_address
from drivers.base import DriverError
from gateway.batch import Quality
from gateway.config.models import BacnetConnection, BacnetLocal, BacnetPoint, Device, Profile

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

WAIT = 10.0  # a guard against hanging, never a measured time

POINTS = {
    "supply_temp": {"object": "analog-input,1"},
    "fan_status": {"object": "binary-input,1"},
    "ghost": {"object": "analog-input,99"},
}


def plant(instance: int) -> TestDevice:
    """A small controller: one good analog, one binary, and no analog-input,99."""
    return TestDevice(instance, {
        "analog-input,1": {"presentValue": 16.5, "units": "degreesCelsius"},
        "binary-input,1": {"presentValue": "active"},
    })


def device(address: str, instance: int, **connection: Any) -> Device:
    return Device(
        id="ahu_remote", profile="ahu", retries=0,
        connection=BacnetConnection(
            type="bacnet_ip", address=address, device_instance=instance,
            **{"timeout": 2.0, **connection},
        ),
    )


def profile() -> Profile:
    return Profile(
        id="ahu", name="ahu", system="hvac", protocol="bacnet",
        points={name: BacnetPoint(**spec) for name, spec in POINTS.items()},
    )


async def until(condition: Callable[[], bool], event: asyncio.Event | None = None) -> None:
    """Wait for `condition` (woken by `event` when given), at most WAIT seconds."""

    async def wait() -> None:
        while not condition():
            if event is not None:
                event.clear()
                if condition():
                    return
                await event.wait()
            else:
                await asyncio.sleep(0.02)

    await asyncio.wait_for(wait(), WAIT)


@pytest.fixture
async def remote() -> AsyncIterator[TestDevice]:
    dev = plant(2101)
    await dev.start()
    yield dev
    await dev.stop()


async def test_foreign_device_registers_and_reaches_a_device_on_another_subnet(remote: TestDevice) -> None:
    """The BBMD forwards the gateway's Who-Is to its peer (the device's "subnet"), the
    device answers, and the driver reads it at the address discovery reported. Closing the
    network takes the gateway out of the BBMD's table at once instead of at expiry."""
    bbmd = TestBBMD(3001, peers=[remote.address])
    await bbmd.start()
    gateway = f"127.0.0.1:{free_udp_port()}"
    network = BacnetNetwork(BacnetLocal(
        address=gateway, device_instance=4001,
        foreign_device={"address": bbmd.address, "ttl": "30s"},
    ))
    try:
        assert network.foreign_device_status == "unregistered"
        await network.start()
        await until(lambda: network.foreign_device_status == "registered")
        assert bbmd.foreign_devices() == {gateway: 30}

        found = {d.instance: d.address for d in await who_is(network.app, timeout=1.0)}
        assert found.get(remote.instance) == remote.address  # only the BBMD could carry that

        driver = network.driver(device(found[remote.instance], remote.instance), profile())
        got = {name: (value, quality) for name, value, quality in (await driver.read()).items()}
        assert got == {
            "supply_temp": (16.5, Quality.GOOD),
            "fan_status": (True, Quality.GOOD),
            "ghost": (None, Quality.DEVICE_EXCEPTION),
        }
        assert driver.stats()["rpm"] is True

        await network.close()
        await until(lambda: not bbmd.foreign_devices(), bbmd.changed)
        assert network.foreign_device_status == "unregistered"
    finally:
        await network.close()
        await bbmd.stop()


async def test_registration_is_renewed_before_the_bbmd_drops_it() -> None:
    """bacpypes3 renews at the TTL and a BBMD keeps an entry for TTL plus a grace period,
    so every renewal must find the gateway still in the table. A 1 s TTL (the shortest
    the BVLL carries; 0.5 s is rounded up, not sent as 0) shows several renewals quickly."""
    bbmd = TestBBMD(3002)
    await bbmd.start()
    gateway = f"127.0.0.1:{free_udp_port()}"
    network = BacnetNetwork(BacnetLocal(
        address=gateway, device_instance=4002,
        foreign_device={"address": bbmd.address, "ttl": "0.5s"},
    ))
    try:
        await network.start()
        await until(lambda: len(bbmd.registrations) >= 3, bbmd.changed)
        first, *renewals = bbmd.registrations
        assert first == (gateway, 1, False)
        assert renewals and all(entry == (gateway, 1, True) for entry in renewals)
        assert network.foreign_device_status == "registered"
    finally:
        await network.close()
        await bbmd.stop()


async def test_routed_device_is_read_with_rpm_through_its_router(remote: TestDevice) -> None:
    """The device sits on network 2 behind a router; the gateway on network 1 addresses it
    as '2:<its IP:port as MAC>@<router>' and reads it with ReadPropertyMultiple. The device
    sees the request come from network 1, so it really crossed the router."""
    router = TestRouter(3003)
    await router.start()
    network = BacnetNetwork(BacnetLocal(address=f"127.0.0.1:{free_udp_port()}", device_instance=4003))
    await network.start()
    try:
        address = f"2:127.0.0.1:{remote.port}@{router.address}"
        # the remote station can also be written as the 6-byte MAC in hex
        mac_hex = "0x7f000001" + f"{remote.port:04x}"
        routed = device_address(address)
        assert routed == device_address(f"2:{mac_hex}")
        assert (routed.addrType, routed.addrNet) == (Address.remoteStationAddr, 2)
        assert routed.addrAddr == bytes([127, 0, 0, 1]) + remote.port.to_bytes(2, "big")
        assert router_address(address) == Address(router.address)

        driver = network.driver(device(address, remote.instance), profile())
        for _ in range(2):
            got = {name: (value, quality) for name, value, quality in (await driver.read()).items()}
            assert got == {
                "supply_temp": (16.5, Quality.GOOD),
                "fan_status": (True, Quality.GOOD),
                "ghost": (None, Quality.DEVICE_EXCEPTION),
            }
        stats = driver.stats()
        assert stats["rpm"] is True and stats["errors"] == {}
        assert remote.rpm_requests >= 2
        source = remote.app.rpm_sources[-1]  # type: ignore[union-attr]
        assert (source.addrType, source.addrNet) == (Address.remoteStationAddr, 1)
    finally:
        await network.close()
        await router.stop()


async def test_routed_device_without_a_known_router_is_a_comm_failure(remote: TestDevice) -> None:
    """Without '@router' the stack broadcasts Who-Is-Router-To-Network, which nothing
    hears here; bacpypes3 then hands back an Error PDU (communication: unknown-route) as if
    the device had sent it. That must be the device being unreachable, not a device that
    answered with an error for every point."""
    router = TestRouter(3004)
    await router.start()
    network = BacnetNetwork(BacnetLocal(address=f"127.0.0.1:{free_udp_port()}", device_instance=4004))
    await network.start()
    try:
        driver = network.driver(device(f"2:127.0.0.1:{remote.port}", remote.instance, timeout=5.0), profile())
        with pytest.raises(DriverError) as failed:
            await driver.read()
        assert failed.value.quality == Quality.COMM_FAILURE
        assert "unknown-route" in str(failed.value)
        assert driver.stats()["errors"] == {"error_unknown-route": 1}
        assert remote.rpm_requests == 0
    finally:
        await network.close()
        await router.stop()


def test_a_route_is_only_for_a_remote_station() -> None:
    """'@router' on a plain IP address would be ignored by the stack: refuse it in config."""
    with pytest.raises(ValueError, match="only a 'network:mac' address"):
        device_address("127.0.0.1:47809@127.0.0.1:47808")
    with pytest.raises(ValueError, match="router must be an IPv4"):
        device_address("2:12@3:4")
    assert router_address("2:127.0.0.1:47809") is None
