"""COV subscriptions of one device: subscribe, renew before the lifetime ends, re-subscribe.

One SubscribeCOV per object that has `cov: true` points; each notification becomes one
batch of those points through the driver's `emit`. A subscription renews at three
quarters of its lifetime. A device that restarted has forgotten its subscriptions: the
next renewal re-creates them, and the driver calls `resubscribe()` as soon as a poll
finds the device answering again after it was unreachable. A device that refuses a
subscription (an Error or Reject) is left alone: its points are polled in their group
anyway, so refusing costs only the immediacy of changes.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from bacpypes3.apdu import ErrorRejectAbortNack, SubscribeCOVRequest
from bacpypes3.basetypes import PropertyIdentifier
from bacpypes3.pdu import Address
from bacpypes3.primitivedata import ObjectIdentifier, ObjectType
from bacpypes3.vendor import get_vendor_info

from drivers.bacnet.plan import PointRead
from drivers.bacnet.values import engineering_value, error_text, status_quality
from drivers.base import Emit
from gateway.batch import Batch, Quality

log = structlog.get_logger(__name__)

RENEW_AT = 0.75  # of the lifetime
RETRY_LOST = 10.0  # seconds between attempts while a subscription is lost (device down)

# the driver's request path: sends with the device's timeout and retries, raises
# NoAnswer when nothing came back and ErrorRejectAbortNack for a refusal
Send = Callable[[Any], Awaitable[Any]]


class NoAnswer(Exception):
    """The device did not answer within its timeout (after its retries)."""


@dataclass(slots=True)
class Subscription:
    """One monitored object and the points its notifications update."""

    object_id: str
    points: tuple[PointRead, ...]
    process_id: int
    state: str = "pending"  # pending, active, lost (no answer), refused
    renewals: int = 0
    resubscribed: int = 0  # times re-established after being lost (device down or restarted)
    notifications: int = 0

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(read.name for read in self.points)


class CovSubscriptions:
    """The COV side of one BacnetDriver."""

    def __init__(
        self,
        *,
        device_id: str,
        address: Address,
        points: list[PointRead],
        lifetime: float,
        confirmed: bool,
        send: Send,
        write_increment: Callable[[PointRead, float], Awaitable[None]],
        register: Callable[[Address, int, Callable[[Any], None] | None], None],
        next_process_id: Callable[[], int],
    ) -> None:
        self.device_id = device_id
        self.address = address
        self.lifetime = max(1, math.ceil(lifetime))
        self.confirmed = confirmed
        self._send = send
        self._write_increment = write_increment
        self._register = register
        by_object: dict[str, list[PointRead]] = {}
        for read in points:
            by_object.setdefault(read.key[0], []).append(read)
        self.subscriptions = {
            object_id: Subscription(object_id, tuple(reads), next_process_id())
            for object_id, reads in by_object.items()
        }
        self._emit: Emit | None = None
        self._task: asyncio.Task | None = None
        self._resubscribing: asyncio.Task | None = None
        self._pass_lock = asyncio.Lock()
        self._log = log.bind(device=device_id)

    async def start(self, emit: Emit) -> None:
        """Subscribe every object once now (a device that is down is retried later)."""
        self._emit = emit
        for sub in self.subscriptions.values():
            self._register(self.address, sub.process_id, self._handler(sub))
        await self._subscribe_all(first=True)
        self._task = asyncio.create_task(self._renew_forever(), name=f"cov-{self.device_id}")

    async def stop(self) -> None:
        """Stop renewing; the device drops the subscriptions when their lifetime ends."""
        for task in (self._task, self._resubscribing):
            if task is not None:
                task.cancel()
        for task in (self._task, self._resubscribing):
            if task is not None:
                try:
                    await task
                except (asyncio.CancelledError, Exception):  # noqa: S110 - stopping anyway
                    pass
        for sub in self.subscriptions.values():
            self._register(self.address, sub.process_id, None)

    def device_lost(self) -> None:
        """The device stopped answering: whatever it held may be gone when it returns."""
        for sub in self.subscriptions.values():
            if sub.state == "active":
                sub.state = "lost"

    def resubscribe(self) -> None:
        """The device answers again after being unreachable: it may have restarted."""
        if self._emit is None or (self._resubscribing and not self._resubscribing.done()):
            return
        self._resubscribing = asyncio.create_task(self._subscribe_all(first=False))

    def snapshot(self) -> dict[str, Any]:
        return {
            sub.object_id: {
                "state": sub.state, "renewals": sub.renewals,
                "resubscribed": sub.resubscribed, "notifications": sub.notifications,
            }
            for sub in self.subscriptions.values()
        }

    async def _renew_forever(self) -> None:
        loop = asyncio.get_running_loop()
        last_pass = loop.time()  # the first pass ran as this task started
        while True:
            # Timed from the start of the last pass, not its end: on a slow device with many
            # objects the pass itself takes time, and the first subscriptions must not lapse.
            lost = any(sub.state == "lost" for sub in self.subscriptions.values())
            wait = min(self.lifetime * RENEW_AT, RETRY_LOST) if lost else self.lifetime * RENEW_AT
            await asyncio.sleep(max(0.0, last_pass + wait - loop.time()))
            last_pass = loop.time()
            await self._subscribe_all(first=False)

    async def _subscribe_all(self, *, first: bool) -> None:
        # One pass at a time: a resubscription after a restart and a renewal must not send
        # every SubscribeCOV (and cov-increment write) twice.
        async with self._pass_lock:
            for sub in self.subscriptions.values():
                if sub.state != "refused":
                    await self._subscribe(sub, first=first)

    async def _subscribe(self, sub: Subscription, *, first: bool) -> None:
        if first or sub.state != "active":
            for read in sub.points:
                if read.point.cov_increment is not None:
                    await self._write_increment(read, read.point.cov_increment)
        request = SubscribeCOVRequest(
            subscriberProcessIdentifier=sub.process_id,
            monitoredObjectIdentifier=ObjectIdentifier(sub.object_id),
            issueConfirmedNotifications=self.confirmed,
            lifetime=self.lifetime,
            destination=self.address,
        )
        before = sub.state
        try:
            await self._send(request)
        except NoAnswer as exc:
            sub.state = "lost"
            if before != "lost":
                self._log.warning("cov subscription lost", object=sub.object_id, points=sub.names, error=str(exc))
            return
        except ErrorRejectAbortNack as exc:
            sub.state = "refused"
            self._log.warning(
                "cov subscription refused; polling instead",
                object=sub.object_id, points=sub.names, error=error_text(exc),
            )
            return
        sub.state = "active"
        if before == "active":
            sub.renewals += 1
        else:
            if before == "lost":
                sub.resubscribed += 1
            self._log.info(
                "cov subscribed" if before == "pending" else "cov re-subscribed",
                object=sub.object_id, points=sub.names, lifetime=self.lifetime,
                confirmed=self.confirmed,
            )

    def _handler(self, sub: Subscription) -> Callable[[Any], None]:
        kind = ObjectType(sub.object_id.split(",")[0])
        object_class = get_vendor_info(0).get_object_class(kind)

        def handle(apdu: Any) -> None:
            values: dict[str, Any] = {}
            for element in apdu.listOfValues:
                prop = element.propertyIdentifier
                datatype = object_class.get_property_type(prop) if object_class else None
                if datatype is None:
                    continue
                try:
                    values[str(PropertyIdentifier(prop))] = element.value.cast_out(datatype)
                except Exception:  # noqa: BLE001 - a malformed value is that point's problem
                    values[str(PropertyIdentifier(prop))] = None
            self._notified(sub, values)

        return handle

    def _notified(self, sub: Subscription, values: dict[str, Any]) -> None:
        if self._emit is None:
            return
        sub.notifications += 1
        if sub.state != "active":
            sub.state = "active"  # it is talking to us, whatever the last renewal said
        flags = status_quality(values.get("status-flags"), values.get("reliability"))
        names: list[str] = []
        out: list[Any] = []
        quality: list[str] = []
        for read in sub.points:
            if read.key[1] not in values:
                continue
            raw = values[read.key[1]]
            if raw is None:
                value, problem = None, Quality.DECODE_ERROR
            else:
                value, problem = engineering_value(read.point, raw)
            problem = problem or (flags if read.status is not None else None)
            names.append(read.name)
            out.append(None if problem else value)
            quality.append(problem or Quality.GOOD)
        if names:
            bad = any(q != Quality.GOOD for q in quality)
            self._emit(Batch(self.device_id, time.time(), tuple(names), out, quality if bad else None))

