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
import math
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
from bacpypes3.ipv4.service import BIPForeign
from bacpypes3.local.device import DeviceObject
from bacpypes3.local.networkport import NetworkPortObject
from bacpypes3.pdu import Address

from gateway.config.models import BacnetLocal, Device, Profile

if TYPE_CHECKING:
    from drivers.bacnet.driver import BacnetDriver

log = structlog.get_logger(__name__)
UNREGISTER_TIMEOUT = 0.5  # seconds close() gives the BBMD to take the deregistration

DEFAULT_PORT = 47808
BIND_TIMEOUT = 5.0
# bacpypes3 gives up on a request after apduTimeout x (1 + retries); drivers time out
# (and retry) per device themselves, so the stack only needs to outlast the longest timeout
STACK_APDU_TIMEOUT_MS = 60_000

CovHandler = Callable[[Any], None]


def device_address(text: str) -> Address:
    """A bacpypes3 Address from a device's configured address.

    '192.168.1.20' (port 47808), '192.168.1.20:47809', or 'network:mac' for a device
    behind a BACnet router ('5:12', '5:192.168.5.20:47808', '5:0xc0a80514bac0'), which may
    name its router after '@' ('5:192.168.5.20:47808@192.168.1.1:47808').
    """
    return _split_route(text)[0]


def router_address(text: str) -> Address | None:
    """The router named after '@' in a device's address, or None (then it is found by a
    Who-Is-Router-To-Network broadcast the first time the device is asked)."""
    return _split_route(text)[1]


def _split_route(text: str) -> tuple[Address, Address | None]:
    # parsed here rather than by bacpypes3, whose own '@route' only works with its
    # process-wide route_aware setting, which also changes every source address it reports
    device_text, at, router_text = text.strip().partition("@")
    try:
        device = Address(device_text.strip())
        router = Address(router_text.strip()) if at else None
    except (ValueError, TypeError) as exc:
        raise ValueError(
            f"{text!r} is not a BACnet address; write host, host:port or network:mac[@router]"
        ) from exc
    if router is not None:
        if device.addrType != Address.remoteStationAddr:
            raise ValueError(f"{text!r}: only a 'network:mac' address goes through a router")
        if getattr(router, "addrTuple", None) is None:
            raise ValueError(f"{text!r}: the router must be an IPv4 host[:port]")
    return device, router


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
        self._routes: dict[int, Address] = {}  # network number -> router, from device addresses
        self._routes_applied: set[int] = set()
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

    @property
    def foreign_device_status(self) -> str | None:
        """None without `foreign_device`; else 'registered', 'registering', 'unregistered'
        (not started, closed, or lapsed) or 'refused (0x0030)' when the BBMD said no."""
        if self.local.foreign_device is None:
            return None
        link = self._foreign_link()
        if link is None:
            return "unregistered"
        status = int(link.bbmdRegistrationStatus)
        if status > 0:
            return f"refused (0x{status:04x})"
        return {0: "registered", -1: "registering"}.get(status, "unregistered")

    def add_route(self, network: int, router: Address) -> None:
        """Reach `network` through `router` (taken on the next start(), or now if started).

        Without it the stack asks Who-Is-Router-To-Network by broadcast, which works on a
        LAN but not where broadcasts do not reach the router.
        """
        known = self._routes.get(network)  # (bacpypes3 cannot compare an Address with None)
        if known is None or known != router:
            self._routes[network] = router
            self._routes_applied.discard(network)

    async def start(self) -> None:
        """Bind the local address (and register with the BBMD when configured)."""
        async with self._lock:
            if self._app is not None:
                await self._apply_routes()
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
            await self._apply_routes()
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
            self._routes_applied.clear()
            try:
                await asyncio.wait_for(_unregister(app), UNREGISTER_TIMEOUT)
            except (TimeoutError, Exception) as exc:  # a BBMD that does not answer
                self._log.warning("bacnet foreign-device deregistration incomplete", error=repr(exc))
            finally:
                # Always release the socket: bacpypes3 binds with SO_REUSEPORT, so a leaked
                # socket would silently share (and swallow) the next network's replies.
                app.close()
            self._log.info("bacnet network closed")

    async def _apply_routes(self) -> None:
        app = self._app
        if app is None:
            return
        nsap = app.nsap
        for network, router in self._routes.items():
            if network in self._routes_applied:
                continue
            await nsap.router_info_cache.update_path_info(nsap.local_adapter.adapterNet, router, {network})
            self._routes_applied.add(network)
            self._log.info("bacnet route", network=network, router=str(router))

    def _foreign_link(self) -> Any:
        if self._app is None:
            return None
        return next((link for link in self._app.link_layers.values() if isinstance(link, BIPForeign)), None)

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
        # the BVLL field is whole seconds, 1..65535; bacpypes3 rejects 0 (a ttl under 1 s)
        port.fdSubscriptionLifetime = min(65535, max(1, math.ceil(local.foreign_device.ttl)))
    return _GatewayApplication.from_object_list([device, port])


async def _unregister(app: Application) -> None:
    """Leave the BBMD's foreign-device table and stop the renewal timers.

    bacpypes3's close() only closes the socket: its renewal timer keeps firing into the
    closed transport ("Task exception was never retrieved" every few seconds, for the
    life of the process) and the BBMD keeps forwarding broadcasts to us until the
    registration lapses. unregister() sends the ttl-0 registration from a task it does
    not return, so wait for the tasks it started before the socket goes.
    """
    for link in app.link_layers.values():
        if isinstance(link, BIPForeign) and link.bbmdAddress is not None:
            before = asyncio.all_tasks()
            link.unregister()
            started = asyncio.all_tasks() - before
            if started:
                await asyncio.wait(started, timeout=1.0)


def _local_address(text: str) -> Address:
    """'0.0.0.0:47808', '192.168.1.10/24:47808' or '192.168.1.10' as an IPv4 address."""
    try:
        address = Address(text.strip())
    except (ValueError, TypeError) as exc:
        raise ValueError(f"bacnet.address {text!r} is not host[/prefix][:port]") from exc
    if getattr(address, "addrTuple", None) is None:
        raise ValueError(f"bacnet.address {text!r} must be an IPv4 address, not a routed one")
    return address
