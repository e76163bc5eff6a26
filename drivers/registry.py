"""Which driver serves a device: chosen by the type of its connection."""

from __future__ import annotations

from collections.abc import Callable

from drivers.base import Driver
from gateway.config.models import Device, Profile


def _modbus_tcp(device: Device, profile: Profile) -> Driver:
    from drivers.modbus.driver import ModbusTcpDriver

    return ModbusTcpDriver(device, profile)


# connection type -> factory; imports stay lazy so one protocol's library never loads another's
_FACTORIES: dict[str, Callable[[Device, Profile], Driver]] = {
    "modbus_tcp": _modbus_tcp,
}


def create_driver(device: Device, profile: Profile) -> Driver:
    """The driver for `device`; raise ValueError for a connection type no driver serves."""
    kind = device.connection.type
    factory = _FACTORIES.get(kind)
    if factory is None:
        raise ValueError(
            f"device {device.id}: no driver for connection type {kind!r}; "
            f"known types: {', '.join(sorted(_FACTORIES))}"
        )
    if profile.protocol != "modbus" and kind.startswith("modbus"):
        raise ValueError(
            f"device {device.id}: profile {profile.id} is a {profile.protocol} map, "
            f"but the connection is {kind}"
        )
    return factory(device, profile)
