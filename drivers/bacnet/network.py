"""The gateway's one BACnet/IP presence: a bacpypes3 application that every device shares.

BACnet devices answer to the UDP port a request came from, and COV notifications are
sent to the subscriber's address, so the whole gateway is one BACnet device on one port
(`SiteConfig.bacnet`). Drivers borrow this application for their requests; the network
routes incoming COV notifications to the driver that subscribed. With `foreign_device`
configured the application registers with a BBMD to reach devices on other subnets.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog
from bacpypes3.apdu import (
    ConfirmedCOVNotificationRequest,
    SimpleAckPDU,
    UnconfirmedCOVNotificationRequest,
)
from bacpypes3.app import Application
from bacpypes3.basetypes import HostNPort, IPMode
from bacpypes3.errors import ServicesError
from bacpypes3.local.device import DeviceObject
from bacpypes3.local.networkport import NetworkPortObject
from bacpypes3.pdu import Address

from gateway.config.models import BacnetLocal, Device, Profile

if TYPE_CHECKING:
    from drivers.bacnet.driver import BacnetDriver

log = structlog.get_logger(__name__)

DEFAULT_PORT = 47808
BIND_TIMEOUT = 5.0
# bacpypes3 gives up on a request after apduTimeout x (1 + retries); drivers time out
# (and retry) per device themselves, so the stack only needs to outlast the longest timeout
STACK_APDU_TIMEOUT_MS = 60_000

CovHandler = Callable[[Any], None]


def device_address(text: str) -> Address:
    """A bacpypes3 Address from a device's configured address.

    '192.168.1.20' (port 47808), '192.168.1.20:47809', or 'network:mac' for a device
    behind a BACnet router ('5:12', '5:192.168.5.20:47808').
    """
    try:
        return Address(text.strip())
    except (ValueError, TypeError) as exc:
        raise ValueError(
            f"{text!r} is not a BACnet address; write host, host:port or network:mac"
        ) from exc


class _GatewayApplication(Application):
    """The stack with COV notifications routed to the subscribing driver."""

    cov_handlers: dict[tuple[Address, int], CovHandler]

    async def do_UnconfirmedCOVNotificationRequest(  # noqa: N802 - bacpypes3's naming
        self, apdu: UnconfirmedCOVNotificationRequest
    ) -> None:
        handler = self.cov_handlers.get((apdu.pduSource, apdu.subscriberProcessIdentifier))
        if handler is not None:
            handler(apdu)

    async def do_ConfirmedCOVNotificationRequest(  # noqa: N802 - bacpypes3's naming
        self, apdu: ConfirmedCOVNotificationRequest
    ) -> None:
        handler = self.cov_handlers.get((apdu.pduSource, apdu.subscriberProcessIdentifier))
        if handler is None:
            # the device then drops the subscription instead of notifying us forever
            raise ServicesError(errorCode="unknownSubscription")
        handler(apdu)
        await self.response(SimpleAckPDU(context=apdu))


class BacnetNetwork:
    """One bacpypes3 application for the site; `driver()` makes a driver that uses it.

    `start()` is idempotent and safe to call from every driver's own start; `close()`
    releases the UDP port.
    """

    def __init__(self, local: BacnetLocal) -> None:
        self.local = local
        self._app: _GatewayApplication | None = None
        self._lock = asyncio.Lock()
        self._process_ids = itertools.count(1)
        self._log = log.bind(bacnet_address=local.address, device_instance=local.device_instance)

    @property
    def app(self) -> Application:
        """The running application; start() first."""
        if self._app is None:
            raise RuntimeError("BacnetNetwork.start() has not been awaited")
        return self._app

    @property
    def started(self) -> bool:
        return self._app is not None

    def driver(self, device: Device, profile: Profile) -> BacnetDriver:
        """The driver for one BACnet device, using this network's application."""
        from drivers.bacnet.driver import BacnetDriver

        return BacnetDriver(device, profile, self)

    async def start(self) -> None:
        """Bind the local address (and register with the BBMD when configured)."""
        async with self._lock:
            if self._app is not None:
                return
            app = _build_application(self.local)
            app.cov_handlers = {}
            try:
                tasks = [task for link in app.link_layers.values() for task in link.server._transport_tasks]
                await asyncio.wait_for(asyncio.gather(*tasks), BIND_TIMEOUT)
            except TimeoutError as exc:
                app.close()
                raise OSError(f"cannot bind BACnet/IP to {self.local.address}") from exc
            self._app = app
            fd = self.local.foreign_device
            self._log.info(
                "bacnet network started",
                foreign_device=fd.address if fd is not None else None,
            )

    async def close(self) -> None:
        """Release the port; drivers' later requests fail as comm_failure."""
        async with self._lock:
            if self._app is None:
                return
            app, self._app = self._app, None
            app.close()
            self._log.info("bacnet network closed")

    def next_process_id(self) -> int:
        """A subscriber process identifier unique within this gateway."""
        return next(self._process_ids) % (1 << 22) or next(self._process_ids)

    def on_cov(self, address: Address, process_id: int, handler: CovHandler | None) -> None:
        """Route notifications for (device address, process id) to `handler` (None: stop)."""
        if self._app is None:
            return
        if handler is None:
            self._app.cov_handlers.pop((address, process_id), None)
        else:
            self._app.cov_handlers[(address, process_id)] = handler


def _build_application(local: BacnetLocal) -> _GatewayApplication:
    """The stack: our device object and one IPv4 network port, normal or foreign."""
    device = DeviceObject(
        objectIdentifier=("device", local.device_instance),
        objectName=local.device_name or f"gateway-{local.device_instance}",
        vendorIdentifier=local.vendor_id,
        maxApduLengthAccepted=local.max_apdu,
        segmentationSupported="segmented-both",
        apduTimeout=STACK_APDU_TIMEOUT_MS,
        numberOfApduRetries=0,
    )
    port = NetworkPortObject(
        _local_address(local.address),
        objectIdentifier=("network-port", 1),
        objectName="NetworkPort-1",
    )
    if local.foreign_device is not None:
        bbmd = local.foreign_device.address
        port.bacnetIPMode = IPMode.foreign
        port.fdBBMDAddress = HostNPort(bbmd if ":" in bbmd else f"{bbmd}:{DEFAULT_PORT}")
        port.fdSubscriptionLifetime = int(local.foreign_device.ttl)
    return _GatewayApplication.from_object_list([device, port])


def _local_address(text: str) -> Address:
    """'0.0.0.0:47808', '192.168.1.10/24:47808' or '192.168.1.10' as an IPv4 address."""
    try:
        address = Address(text.strip())
    except (ValueError, TypeError) as exc:
        raise ValueError(f"bacnet.address {text!r} is not host[/prefix][:port]") from exc
    if getattr(address, "addrTuple", None) is None:
        raise ValueError(f"bacnet.address {text!r} must be an IPv4 address, not a routed one")
    return address
