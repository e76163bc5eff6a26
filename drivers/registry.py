"""Which driver serves a device, chosen by the type of its connection; buses shared by endpoint.

Devices on one serial port or behind one TCP endpoint must share one bus scheduler, or
they would talk over each other on the line. `DriverSet` hands every driver it creates
the bus of its endpoint and closes those buses at stop; `create_driver` makes a
stand-alone driver with a bus of its own, for tools and tests that read one device.
MQTT devices on one broker (same endpoint and credentials) likewise share one client.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog

from drivers.base import Driver
from gateway.config.models import BacnetLocal, Device, Profile

if TYPE_CHECKING:
    from drivers.bacnet.network import BacnetNetwork
    from drivers.modbus.bus import Bus
    from drivers.mqtt.broker import Broker, BrokerKey

log = structlog.get_logger(__name__)

MODBUS_TYPES = ("modbus_tcp", "modbus_rtu", "modbus_rtu_over_tcp")


class DriverSet:
    """Creates the drivers of a site and owns the buses they share."""

    def __init__(self, bacnet: BacnetLocal | None = None) -> None:
        self._bacnet_local = bacnet or BacnetLocal()  # the gateway's own BACnet presence
        self._bacnet: BacnetNetwork | None = None  # one BACnet application, made on first use
        self._buses: dict[str, tuple[Bus, Device]] = {}  # bus key -> bus, first device on it
        self._brokers: dict[BrokerKey, Broker] = {}  # MQTT clients, one per broker and login

    def create(self, device: Device, profile: Profile) -> Driver:
        """The driver for `device`; ValueError for a connection no driver serves, or one
        that contradicts another device on the same serial port."""
        _check(device, profile)
        if device.connection.type in MODBUS_TYPES:
            return self._modbus(device, profile)
        if device.connection.type == "mqtt":
            return self._mqtt(device, profile)
        if device.connection.type == "bacnet_ip":
            return self._bacnet_driver(device, profile)
        return _FACTORIES[device.connection.type](device, profile)

    @property
    def buses(self) -> tuple[Bus, ...]:
        return tuple(bus for bus, _device in self._buses.values())

    async def close(self) -> None:
        """Close every shared bus (cancel queued requests, close connections and ports)
        and every shared MQTT client."""
        buses, self._buses = self.buses, {}
        brokers, self._brokers = tuple(self._brokers.values()), {}
        network, self._bacnet = self._bacnet, None
        closing = [bus.close() for bus in buses] + [broker.close() for broker in brokers]
        if network is not None:
            closing.append(network.close())
        # Concurrently, each to its end: one slow broker must not keep a port or the
        # BACnet socket open (a caller's timeout would otherwise cut the rest short).
        results = await asyncio.gather(*closing, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                log.warning("closing a shared connection failed", error=repr(result))

    def _bacnet_driver(self, device: Device, profile: Profile) -> Driver:
        from drivers.bacnet.network import BacnetNetwork

        if self._bacnet is None:
            self._bacnet = BacnetNetwork(self._bacnet_local)
        return self._bacnet.driver(device, profile)

    def _modbus(self, device: Device, profile: Profile) -> Driver:
        # imports stay lazy so one protocol's library never loads another's
        from drivers.modbus.driver import ModbusDriver
        from drivers.modbus.plan import shared_plans
        from drivers.modbus.transport import bus_key, check_same_line, open_bus

        plans = shared_plans(device, profile)  # one per profile and polling, not per device
        key = bus_key(device.connection)
        shared = self._buses.get(key)
        if shared is None:
            bus = open_bus(device.connection)
            self._buses[key] = (bus, device)
        else:
            bus, first = shared
            check_same_line(first.connection, device.connection, (first.id, device.id))
        return ModbusDriver(device, profile, bus, plans)

    def _mqtt(self, device: Device, profile: Profile) -> Driver:
        from drivers.mqtt.broker import Broker, broker_key
        from drivers.mqtt.driver import MqttDriver

        key = broker_key(device.connection)
        broker = self._brokers.get(key)
        if broker is None:
            broker = self._brokers[key] = Broker(key)
        return MqttDriver(device, profile, broker)


def _modbus_alone(device: Device, profile: Profile) -> Driver:
    from drivers.modbus.driver import ModbusDriver

    return ModbusDriver(device, profile)


def _mqtt_alone(device: Device, profile: Profile) -> Driver:
    from drivers.mqtt.driver import MqttDriver

    return MqttDriver(device, profile)


def _bacnet_alone(device: Device, profile: Profile) -> Driver:
    raise ValueError(
        f"{device.id}: BACnet devices share the gateway's one BACnet application; "
        "create them through DriverSet(config.bacnet)"
    )


# connection type -> stand-alone factory
_FACTORIES: dict[str, Callable[[Device, Profile], Driver]] = {
    **{kind: _modbus_alone for kind in MODBUS_TYPES},
    "mqtt": _mqtt_alone,
    "bacnet_ip": _bacnet_alone,
}

# connection type -> the profile protocol it needs (BACnet profiles are not checked here)
_PROTOCOLS: dict[str, str] = {**{kind: "modbus" for kind in MODBUS_TYPES}, "mqtt": "mqtt"}


def create_driver(device: Device, profile: Profile) -> Driver:
    """A stand-alone driver for `device` (its own connection); ValueError for a
    connection type no driver serves. Its `stop()` closes its connection."""
    _check(device, profile)
    return _FACTORIES[device.connection.type](device, profile)


def _check(device: Device, profile: Profile) -> None:
    kind = device.connection.type
    if kind not in _FACTORIES:
        raise ValueError(
            f"device {device.id}: no driver for connection type {kind!r}; "
            f"known types: {', '.join(sorted(_FACTORIES))}"
        )
    expected = _PROTOCOLS.get(kind)
    if expected is not None and profile.protocol != expected:
        raise ValueError(
            f"device {device.id}: profile {profile.id} is a {profile.protocol} map, "
            f"but the connection is {kind}"
        )
