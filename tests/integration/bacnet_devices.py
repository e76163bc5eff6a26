"""Real bacpypes3 BACnet/IP devices on 127.0.0.1, each on its own free UDP port.

Tests build a `TestDevice` with the objects they need, `start()` it, set values through
`set()`, and `stop()` / `start()` it again on the same port to simulate a restart (its
COV subscriptions are gone afterwards, as on a real controller). Variants pin the
quirks the driver must survive: `cov=False` refuses SubscribeCOV, `rpm=False` answers ReadPropertyMultiple with a Reject
(unrecognized service), and `max_apdu=...` with `segmentation=False` aborts any answer
longer than that many bytes instead of segmenting it.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field
from typing import Any

from bacpypes3.apdu import AbortPDU, AbortReason, ComplexAckPDU, ReadPropertyMultipleRequest
from bacpypes3.app import Application
from bacpypes3.basetypes import BDTEntry, IPMode
from bacpypes3.errors import ExecutionError, UnrecognizedService
from bacpypes3.local.analog import AnalogInputObject, AnalogOutputObject, AnalogValueObject
from bacpypes3.local.binary import BinaryInputObject, BinaryOutputObject
from bacpypes3.local.device import DeviceObject
from bacpypes3.local.multistate import MultiStateInputObject
from bacpypes3.local.networkport import NetworkPortObject
from bacpypes3.primitivedata import CharacterString, ObjectIdentifier

VENDOR_ID = 999  # bacpypes3's sample vendor; any registered vendor works

_CLASSES = {
    "analog-input": AnalogInputObject,
    "analog-output": AnalogOutputObject,
    "analog-value": AnalogValueObject,
    "binary-input": BinaryInputObject,
    "binary-output": BinaryOutputObject,
    "multi-state-input": MultiStateInputObject,
}


def free_udp_port() -> int:
    """A UDP port nobody listens on right now (bind to port 0 and let the kernel pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _QuirkyApplication(Application):
    """A device application with the quirks of real controllers switched on per instance."""

    rpm: bool = True
    cov: bool = True
    answer_limit: int | None = None  # abort complex acks longer than this (no segmentation)
    rpm_requests: int = 0
    rpm_sources: list[Any]  # who asked, as this device saw it (a routed request shows SNET)

    async def do_SubscribeCOVRequest(self, apdu: Any) -> None:
        if not self.cov:
            raise ExecutionError(errorClass="services", errorCode="covSubscriptionFailed")
        await super().do_SubscribeCOVRequest(apdu)

    async def do_ReadPropertyMultipleRequest(self, apdu: ReadPropertyMultipleRequest) -> None:
        self.rpm_requests += 1
        self.rpm_sources.append(apdu.pduSource)
        if not self.rpm:
            raise UnrecognizedService("no ReadPropertyMultiple here")
        await super().do_ReadPropertyMultipleRequest(apdu)

    async def response(self, apdu: Any) -> None:
        if self.answer_limit is not None and isinstance(apdu, ComplexAckPDU):
            length = len(apdu.encode().pduData) + 3  # service data plus the complex-ack header
            if length > self.answer_limit:
                abort = AbortPDU(True, apdu.apduInvokeID, AbortReason.segmentationNotSupported)
                abort.pduDestination = apdu.pduDestination
                apdu = abort
        await super().response(apdu)


async def _listening(app: Application) -> None:
    """Wait until the app's datagram endpoints are bound, before anyone sends to them."""
    for link in app.link_layers.values():
        await asyncio.gather(*link.server._transport_tasks)


@dataclass
class TestDevice:
    """One simulated controller: a device object plus `objects` {"analog-input,1": spec}.

    A spec is a dict of bacpypes3 keyword properties (presentValue, units, covIncrement,
    statusFlags, reliability, outOfService, numberOfStates, ...); objectName defaults to
    the object id.
    """

    __test__ = False  # not a pytest class

    instance: int
    objects: dict[str, dict[str, Any]]
    port: int = field(default_factory=free_udp_port)
    rpm: bool = True
    cov: bool = True
    max_apdu: int = 1476
    segmentation: bool = True
    app: _QuirkyApplication | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Bind the port and answer; idempotent."""
        if self.app is not None:
            return
        device = DeviceObject(
            objectIdentifier=("device", self.instance),
            objectName=f"test-device-{self.instance}",
            vendorIdentifier=VENDOR_ID,
            maxApduLengthAccepted=self.max_apdu,
            segmentationSupported="segmented-both" if self.segmentation else "no-segmentation",
        )
        port = NetworkPortObject(
            self.address, objectIdentifier=("network-port", 1), objectName="NetworkPort-1"
        )
        objects: list[Any] = [device, port]
        for object_id, spec in self.objects.items():
            kind, _, number = object_id.partition(",")
            props = {"objectName": CharacterString(object_id), **spec}
            objects.append(_CLASSES[kind](objectIdentifier=(kind, int(number)), **props))
        app = _QuirkyApplication.from_object_list(objects)
        app.rpm = self.rpm
        app.rpm_sources = []
        app.cov = self.cov
        app.answer_limit = None if self.segmentation else self.max_apdu
        self.app = app
        await _listening(app)

    async def stop(self) -> None:
        """Close the port: the device stops answering (and forgets its subscriptions)."""
        if self.app is None:
            return
        self.app.close()
        self.app = None
        await asyncio.sleep(0.05)  # let the transport close before the port is reused

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    def obj(self, object_id: str) -> Any:
        assert self.app is not None, "device is stopped"
        return self.app.get_object_id(ObjectIdentifier(object_id))

    def set(self, object_id: str, **props: Any) -> None:
        """Change properties of one object, as the plant would (COV fires on changes)."""
        target = self.obj(object_id)
        for name, value in props.items():
            setattr(target, name, value)

    @property
    def rpm_requests(self) -> int:
        return self.app.rpm_requests if self.app is not None else 0


@dataclass
class TestRouter:
    """A bacpypes3 BACnet router between network 1 (`port1`) and network 2 (`port2`), both
    on 127.0.0.1: a device on `port2`'s side is '2:127.0.0.1:<its port>' to a client on
    network 1, reached only through `port1`."""

    __test__ = False

    instance: int
    port1: int = field(default_factory=free_udp_port)
    port2: int = field(default_factory=free_udp_port)
    app: Application | None = None

    @property
    def address(self) -> str:
        """Its address on network 1, where the gateway is."""
        return f"127.0.0.1:{self.port1}"

    async def start(self) -> None:
        if self.app is not None:
            return
        device = DeviceObject(
            objectIdentifier=("device", self.instance), objectName=f"router-{self.instance}",
            vendorIdentifier=VENDOR_ID,
        )
        ports = [
            NetworkPortObject(
                f"127.0.0.1:{port}", objectIdentifier=("network-port", net), objectName=f"NetworkPort-{net}",
                networkNumber=net, networkNumberQuality="configured",
            )
            for net, port in ((1, self.port1), (2, self.port2))
        ]
        self.app = Application.from_object_list([device, *ports])
        await _listening(self.app)

    async def stop(self) -> None:
        if self.app is None:
            return
        self.app.close()
        self.app = None
        await asyncio.sleep(0.05)


async def start_all(*devices: TestDevice) -> None:
    for device in devices:
        await device.start()


async def stop_all(*devices: TestDevice) -> None:
    for device in devices:
        await device.stop()



@dataclass
class TestBBMD:
    """A bacpypes3 BBMD on its own port: foreign devices register with it, and broadcasts
    they distribute reach the peers in its broadcast distribution table (`peers`, each a
    'host:port' with no mask, so forwarding is a unicast to that peer).

    `registrations` lists every (address, ttl, was_still_registered) it accepted, renewals
    included, so a test can see a registration renewed before it lapsed without timing it.
    """

    __test__ = False

    instance: int
    peers: list[str] = field(default_factory=list)
    port: int = field(default_factory=free_udp_port)
    app: Application | None = None
    registrations: list[tuple[str, int, bool]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def link(self) -> Any:
        assert self.app is not None, "BBMD is stopped"
        return next(iter(self.app.link_layers.values()))

    def foreign_devices(self) -> dict[str, int]:
        """The foreign-device table now: {address: ttl}."""
        return {str(entry.fdAddress): int(entry.fdTTL) for entry in self.link.bbmdFDT}

    async def start(self) -> None:
        if self.app is not None:
            return
        device = DeviceObject(
            objectIdentifier=("device", self.instance), objectName=f"bbmd-{self.instance}",
            vendorIdentifier=VENDOR_ID,
        )
        port = NetworkPortObject(self.address, objectIdentifier=("network-port", 1), objectName="NetworkPort-1")
        port.bacnetIPMode = IPMode.bbmd
        port.bbmdAcceptFDRegistrations = True
        port.bbmdForeignDeviceTable = []
        port.bbmdBroadcastDistributionTable = [BDTEntry(peer) for peer in self.peers]
        self.app = Application.from_object_list([device, port])
        link = self.link
        accept, delete = link.register_foreign_device, link.delete_foreign_device_table_entry

        def register(addr: Any, ttl: int) -> int:
            self.registrations.append((str(addr), int(ttl), str(addr) in self.foreign_devices()))
            self.changed.set()
            return accept(addr, ttl)

        def unregister(addr: Any) -> int:
            self.changed.set()
            return delete(addr)

        link.register_foreign_device = register
        link.delete_foreign_device_table_entry = unregister
        await _listening(self.app)

    async def stop(self) -> None:
        if self.app is None:
            return
        self.link._fdt_clock_handle.cancel()  # bacpypes3 leaves its FDT clock ticking
        self.app.close()
        self.app = None
        await asyncio.sleep(0.05)
