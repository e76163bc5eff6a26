"""One simulated BACnet/IP device: a bacpypes3 application serving a profile's objects.

The objects are built from the profile itself (object ids, names, descriptions, units,
state texts; a priority array on writable points), so discovery of a simulated device
finds exactly what the profile says. Every tick the commanded values (whatever the
priority array makes effective) go into the model, and the model's values go out to the
other objects, where bacpypes3 notices the change and sends COV notifications.

It has the same face as the Modbus `SimulatedDevice` (model, shown, refresh, start,
stop, play, serving), so `SimulatedSite` runs both kinds alike.
"""

from __future__ import annotations

from typing import Any

import structlog
from bacpypes3.app import Application
from bacpypes3.local.analog import (
    AnalogInputObject,
    AnalogOutputObject,
    AnalogValueObject,
    AnalogValueObjectCmd,
)
from bacpypes3.local.binary import (
    BinaryInputObject,
    BinaryOutputObject,
    BinaryValueObject,
    BinaryValueObjectCmd,
)
from bacpypes3.local.device import DeviceObject
from bacpypes3.local.multistate import (
    MultiStateInputObject,
    MultiStateOutputObject,
    MultiStateValueObject,
)
from bacpypes3.local.networkport import NetworkPortObject

from drivers.bacnet.discover import UNIT_SYMBOLS
from gateway.config.models import BacnetPoint, Device, Profile, parse_object_id
from simsite.models.base import Model

log = structlog.get_logger(__name__)

# Communication faults a UDP device can play: it goes away, or it hears and says nothing.
BACNET_COMM_FAULTS = ("stop_answering", "silent")
SIM_VENDOR_ID = 999  # ASHRAE's id for examples; bacpypes3 knows its object classes
_UNITS = {symbol: name for name, symbol in reversed(UNIT_SYMBOLS.items())}
_OBJECT_CLASSES: dict[tuple[str, bool], type] = {  # (object type, commandable)
    ("analog-input", False): AnalogInputObject,
    ("analog-output", True): AnalogOutputObject,
    ("analog-value", False): AnalogValueObject,
    ("analog-value", True): AnalogValueObjectCmd,
    ("binary-input", False): BinaryInputObject,
    ("binary-output", True): BinaryOutputObject,
    ("binary-value", False): BinaryValueObject,
    ("binary-value", True): BinaryValueObjectCmd,
    ("multi-state-input", False): MultiStateInputObject,
    ("multi-state-output", True): MultiStateOutputObject,
    ("multi-state-value", False): MultiStateValueObject,
}
# Vendor and model names by profile, as a real controller reports them in its device object.
_MODELS = {"ahu": ("SimBAS", "AHU-DDC 200"), "heat_exchange_station": ("SimBAS", "HXS-100")}


class SimApplication(Application):
    """A device application that can play deaf: while `muted`, requests go unanswered."""

    muted = False

    async def indication(self, apdu: Any) -> None:  # type: ignore[override]
        if not self.muted:
            await super().indication(apdu)


def build_objects(profile: Profile, values: dict[str, Any]) -> dict[str, Any]:
    """The device's point objects by point name, initialised from the model's `values`."""
    objects: dict[str, Any] = {}
    for name, point in profile.points.items():
        if point.property != "present-value":
            continue  # another property of an object built for its present value
        kind, instance = parse_object_id(point.object)
        cls = _OBJECT_CLASSES.get((kind, point.writable))
        if cls is None:
            raise ValueError(f"{profile.id}.{name}: the simulator cannot serve {point.object} "
                             f"(writable: {point.writable})")
        kwargs: dict[str, Any] = {
            "objectIdentifier": (kind, instance),
            "objectName": point.name or name,
            "description": point.description or name,
            "statusFlags": [0, 0, 0, 0],
            "outOfService": False,
            "presentValue": _to_bacnet(kind, values[name]),
        }
        if kind.startswith("analog"):
            kwargs["units"] = _UNITS.get(point.unit or "", "no-units")
            kwargs["covIncrement"] = point.cov_increment or 0.1
        elif kind.startswith("binary"):
            states = point.enum or {}
            kwargs.update(inactiveText=states.get(0, "inactive"), activeText=states.get(1, "active"))
            if kind != "binary-value":
                kwargs["polarity"] = "normal"
        else:
            texts = [point.enum.get(i, f"state {i}") for i in range(1, max(point.enum) + 1)] if point.enum else ["state 1"]
            kwargs.update(numberOfStates=len(texts), stateText=texts)
        if point.writable:
            kwargs["relinquishDefault"] = kwargs["presentValue"]
        objects[name] = cls(**kwargs)
    return objects


def _to_bacnet(kind: str, value: Any) -> Any:
    if kind.startswith("binary"):
        return "active" if value else "inactive"
    if kind.startswith("multi-state"):
        return int(value)
    return float(value)


def _from_bacnet(kind: str, value: Any) -> Any:
    if kind.startswith("binary"):
        return int(str(value) == "active")
    if kind.startswith("multi-state"):
        return int(value)
    return float(value)


class SimulatedBacnetDevice:
    """A model served as a BACnet/IP device on `host:port` with the configured instance."""

    comm_faults = BACNET_COMM_FAULTS

    def __init__(self, device: Device, profile: Profile, model: Model, host: str | None = None) -> None:
        self.device = device
        self.profile = profile
        self.model = model
        address_host, _, port = device.connection.address.rpartition(":")
        self.host = host or address_host or device.connection.address
        self.port = int(port) if address_host else 47808
        self.instance = device.connection.device_instance
        self.shown: dict[str, Any] = {}
        self.mode: str | None = None
        self._app: SimApplication | None = None
        self._objects: dict[str, Any] = {}
        self._kinds = {n: parse_object_id(p.object)[0] for n, p in profile.points.items()
                       if isinstance(p, BacnetPoint)}

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def serving(self) -> bool:
        return self._app is not None

    async def start(self) -> None:
        """Serve the objects; a restart after stop_answering is a device reboot (commands
        written at any priority are gone, as in a controller without retained memory)."""
        vendor, model = _MODELS.get(self.profile.id, ("SimBAS", self.profile.id))
        device_object = DeviceObject(
            objectIdentifier=("device", self.instance), objectName=self.device.id,
            description=self.device.name or self.device.id, vendorIdentifier=SIM_VENDOR_ID,
            vendorName=vendor, modelName=model, maxApduLengthAccepted=1476,
            segmentationSupported="segmented-both",
        )
        port = NetworkPortObject(self.endpoint, objectIdentifier=("network-port", 1), objectName="NetworkPort-1")
        self._objects = build_objects(self.profile, self.model.values)
        self._app = SimApplication.from_object_list([device_object, port, *self._objects.values()])
        self._app.muted = self.mode == "silent"
        self.refresh()
        log.info("simulated BACnet device serving", device=self.device.id, address=self.endpoint,
                 instance=self.instance)

    async def stop(self) -> None:
        if self._app is not None:
            app, self._app = self._app, None
            app.close()

    def play(self, mode: str | None) -> None:
        """"silent" leaves requests unanswered; None answers again."""
        self.mode = mode
        if self._app is not None:
            self._app.muted = mode == "silent"

    def take_commands(self) -> None:
        """Copy what the priority arrays make effective into the model (before a step)."""
        for name, obj in self._objects.items():
            if self.profile.points[name].writable:
                value = _from_bacnet(self._kinds[name], obj.presentValue)
                if value != self.model.values.get(name):
                    self.model.write(name, value)

    def refresh(self) -> None:
        """Show the model's values in the objects it owns (not the commandable ones)."""
        self.take_commands()
        for name, obj in self._objects.items():
            if not self.profile.points[name].writable:
                value = _to_bacnet(self._kinds[name], self.model.values[name])
                if obj.presentValue != value:
                    obj.presentValue = value
        self.shown = {name: _from_bacnet(self._kinds[name], obj.presentValue)
                      for name, obj in self._objects.items()} or dict(self.model.values)
