"""The site's shared connections ("lines"), each with its own `DriverSet`.

Devices on one serial port or TCP endpoint share a Modbus bus, devices on one broker and
login share an MQTT client, and every BACnet device shares the gateway's one BACnet
application. A reload that changes one line's settings (a serial port's baud rate, the
gateway's BACnet address) must rebuild that line and no other, so each line gets a
`DriverSet` of its own: closing it closes that bus, client or application alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable, Iterable

import structlog

from drivers.base import Driver
from drivers.registry import MODBUS_TYPES, DriverSet
from gateway.config.models import BacnetLocal, Device, ModbusRtuConnection, Profile

log = structlog.get_logger(__name__)

LineKey = tuple[str, Hashable]

# The serial settings a port is opened with: every device on the port must agree on them.
_SERIAL_SETTINGS = ("baudrate", "parity", "stopbits", "bytesize")


def line_of(device: Device) -> LineKey:
    """Which shared connection `device` is on: ("modbus", "rtu:/dev/ttyUSB0"),
    ("mqtt", <broker and login>), ("bacnet", "") or, for a device alone, its own."""
    connection = device.connection
    kind = connection.type
    if kind in MODBUS_TYPES:
        from drivers.modbus.transport import bus_key

        return ("modbus", bus_key(connection))
    if kind == "mqtt":
        from drivers.mqtt.broker import broker_key

        return ("mqtt", broker_key(connection))  # type: ignore[arg-type]
    if kind == "bacnet_ip":
        return ("bacnet", "")
    return ("device", device.id)


def line_settings(device: Device, bacnet: BacnetLocal) -> Hashable:
    """What the line `device` is on is opened with, beyond its key: a serial port's
    settings, the gateway's own BACnet presence. Equal settings: the line may stay."""
    connection = device.connection
    if isinstance(connection, ModbusRtuConnection):
        return tuple(getattr(connection, name) for name in _SERIAL_SETTINGS)
    if connection.type == "bacnet_ip":
        return bacnet.model_dump_json()
    return None


def line_name(key: LineKey) -> str:
    """For logs and summaries: "modbus rtu:/dev/ttyUSB0", "mqtt 10.0.0.5:1883", "bacnet"."""
    kind, detail = key
    name = getattr(detail, "name", detail)  # a broker key names only its endpoint
    return f"{kind} {name}".strip()


class Lines:
    """The running lines and the drivers made on them; `create` is `DriverSet.create`."""

    def __init__(self, bacnet: BacnetLocal | None = None) -> None:
        self.bacnet = bacnet or BacnetLocal()
        self._sets: dict[LineKey, DriverSet] = {}

    def create(self, device: Device, profile: Profile) -> Driver:
        """The driver for `device` on its line, the line made on first use; ValueError as
        `DriverSet.create`."""
        key = line_of(device)
        driver_set = self._sets.get(key)
        if driver_set is None:
            driver_set = self._sets[key] = DriverSet(self.bacnet)
        return driver_set.create(device, profile)

    def keys(self) -> set[LineKey]:
        return set(self._sets)

    def __contains__(self, key: object) -> bool:
        return key in self._sets

    def staging(self, rebuild: Iterable[LineKey], bacnet: BacnetLocal) -> Staging:
        """Drivers for a reload: on the lines that stay, and on new `Lines` for lines that
        are new or rebuilt. Nothing here changes until `Staging.commit`."""
        return Staging(self, set(rebuild), bacnet)

    async def close(self, keys: Iterable[LineKey] | None = None) -> None:
        """Close these lines (every line by default), together, each to its end."""
        chosen = self.keys() if keys is None else set(keys) & self.keys()
        closing = [self._sets.pop(key) for key in chosen]
        results = await asyncio.gather(*(s.close() for s in closing), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                log.warning("closing a line failed", error=repr(result))


class Staging:
    """The drivers a reload starts, made before anything running is touched."""

    def __init__(self, lines: Lines, rebuild: set[LineKey], bacnet: BacnetLocal) -> None:
        self._lines = lines
        self._rebuild = rebuild
        self.fresh = Lines(bacnet)  # new and rebuilt lines

    def create(self, device: Device, profile: Profile) -> Driver:
        key = line_of(device)
        if key in self._rebuild or key not in self._lines:
            return self.fresh.create(device, profile)
        # a line that stays: the driver joins its bus, client or application; making it
        # opens nothing, so dropping it on an abort leaves the line as it was
        return self._lines.create(device, profile)

    async def abort(self) -> None:
        await self.fresh.close()

    async def commit(self, unused: Iterable[LineKey]) -> list[LineKey]:
        """Close the rebuilt lines and the `unused` ones (no device left on them), then
        take over the fresh lines; call it once the old drivers on them have stopped.
        Returns the lines closed."""
        gone = (self._rebuild | set(unused)) & self._lines.keys()
        await self._lines.close(gone)
        self._lines._sets.update(self.fresh._sets)
        self._lines.bacnet = self.fresh.bacnet
        self.fresh._sets = {}
        return sorted(gone, key=line_name)
