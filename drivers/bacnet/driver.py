"""The BACnet driver: one device's read plans over the gateway's shared BACnet network.

A poll packs its group's reads into ReadPropertyMultiple requests sized to the device's
APDU budget (learned once from the device object, or from config). When the device
aborts a request as too big the budget halves and stays halved; when it rejects
ReadPropertyMultiple the driver reads property by property from then on. A property
error is that point's quality, never a failed batch. A poll's first request is its
probe: while the device is not known to answer it gets no retries, so a dead device
costs one timeout per poll and never delays another device (each has its own requests
in flight on the shared UDP socket).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog
from bacpypes3.apdu import AbortPDU, ErrorPDU, ErrorRejectAbortNack, RejectPDU
from bacpypes3.primitivedata import Null, ObjectIdentifier

from drivers.bacnet.cov import CovSubscriptions, NoAnswer
from drivers.bacnet.network import device_address, router_address
from drivers.bacnet.plan import (
    DEFAULT_GROUP,
    PointRead,
    PropertyRead,
    ReadPlan,
    answer_size,
    compile_plans,
    pack,
    property_read,
    rpm_parameters,
)
from drivers.bacnet.values import (
    engineering_value,
    error_text,
    is_error,
    python_value,
    same_value,
    status_quality,
    value_to_write,
)
from drivers.base import (
    Driver,
    DriverError,
    Emit,
    PollGroup,
    RequestStats,
    plan_for,
    poll_groups_of,
)
from gateway.batch import Batch, Quality
from gateway.config.models import BACNET_COMMANDABLE, BacnetConnection, Device, Profile

if TYPE_CHECKING:
    from drivers.bacnet.network import BacnetNetwork

log = structlog.get_logger(__name__)

BAD_REQUEST = "bad_request"
WRITE_FAILED = "write_failed"
VERIFY_FAILED = "verify_failed"
DEFAULT_MAX_APDU = 480  # what a device that will not say is assumed to take
SEGMENTED_FACTOR = 4  # segments an answer may span when the device can send them
TOO_BIG = ("segmentation-not-supported", "apdu-too-long", "buffer-overflow")
RPM_UNSUPPORTED = ("unrecognized-service", "service-request-denied", "optional-functionality-not-supported")


@dataclass(frozen=True, slots=True)
class Failed:
    """A property that produced no value, and why."""

    quality: str
    why: str


NOT_IN_ANSWER = Failed(Quality.DEVICE_EXCEPTION, "not in the answer")  # shared: Failed is frozen


class BacnetDriver(Driver):
    """One BACnet/IP device, addressed by IP:port or network:mac, on a shared network."""

    def __init__(self, device: Device, profile: Profile, network: BacnetNetwork) -> None:
        super().__init__(device, profile)
        if not isinstance(device.connection, BacnetConnection):
            raise ValueError(f"device {device.id}: not a bacnet_ip connection")
        self.connection: BacnetConnection = device.connection
        self.network = network
        self.address = device_address(self.connection.address)
        router = router_address(self.connection.address)
        if router is not None:
            network.add_route(self.address.addrNet, router)
        self.plans: dict[str, ReadPlan] = compile_plans(device, profile)
        self._refs: dict[str, PointRead] = {
            read.name: read for plan in self.plans.values() for read in plan.point_reads
        }
        self._points = tuple(name for name in profile.points if name in self._refs)
        self._rpm: bool | None = self.connection.rpm  # None until the device shows which
        self._budget: int | None = None  # answer bytes per request, once learned
        self._max_apdu: int | None = None
        self._segmented: bool | None = None
        self._learn_lock = asyncio.Lock()
        self._answering: bool | None = None
        self._stats = RequestStats()
        self._cov: CovSubscriptions | None = None
        self._log = log.bind(device=device.id, address=self.connection.address)

    @property
    def points(self) -> tuple[str, ...]:
        return self._points

    @property
    def poll_groups(self) -> dict[str, PollGroup]:
        """The groups `read()` takes, with their intervals and points (batch order)."""
        return poll_groups_of(self.plans)

    def stats(self) -> dict[str, Any]:
        """Request statistics for the CLI and the periodic device status."""
        return {
            **self._stats.snapshot(),
            "rpm": self._rpm,
            "apdu_budget": self._budget,
            "max_apdu": self._max_apdu,
            "segmentation": self._segmented,
            "cov": self._cov.snapshot() if self._cov is not None else {},
        }

    async def start(self, emit: Emit) -> None:
        """Bind the shared network and subscribe COV points; a device that is down
        does not make this raise (its subscriptions are retried)."""
        await self.network.start()
        cov_points = [read for read in self._refs.values() if read.point.cov]
        if cov_points and self._cov is None:
            self._cov = CovSubscriptions(
                device_id=self.device.id, address=self.address, points=cov_points,
                lifetime=self.connection.cov_lifetime, confirmed=self.connection.cov_confirmed,
                send=lambda apdu: self._call(lambda: self.network.app.request(apdu), self.device.retries),
                write_increment=self._write_cov_increment,
                register=self.network.on_cov, next_process_id=self.network.next_process_id,
            )
            await self._cov.start(emit)

    async def stop(self) -> None:
        if self._cov is not None:
            await self._cov.stop()
            self._cov = None

    # --- reading ---------------------------------------------------------------------

    async def read(self, group: str = DEFAULT_GROUP) -> Batch:
        """Run one poll group's plan: one batch, each point good or carrying why not.
        Raise DriverError(comm_failure) when the device answers nothing."""
        plan = plan_for(self.device.id, self.plans, group)
        await self.network.start()
        probe_retries = self.device.retries if self._answering else 0
        try:
            await self._learn_limits(probe_retries)
            results = await self._read_all(plan.reads, probe_retries)
        except NoAnswer as exc:
            self._set_answering(False, str(exc))
            raise DriverError(f"{self.device.id} at {self.connection.address}: {exc}", Quality.COMM_FAILURE) from None
        self._set_answering(True)
        now = time.time()
        self._stats.last_good_read = now
        return _batch(self.device.id, now, plan, results)

    async def _read_all(self, reads: tuple[PropertyRead, ...], probe_retries: int) -> dict[Any, Any]:
        results: dict[Any, Any] = {}
        pending = list(reads)
        first = True
        while pending:
            retries = probe_retries if first else self.device.retries
            if self._rpm is False:
                await self._read_each(pending, results, retries)
                break
            request = pack(pending, self._budget or DEFAULT_MAX_APDU)[0]
            try:
                answer = await self._call(
                    lambda request=request: self.network.app.read_property_multiple(
                        self.address, rpm_parameters(request)
                    ),
                    retries,
                )
            except NoAnswer:
                if first:
                    raise
                _fail(pending, results, Quality.COMM_FAILURE, "stopped answering mid-poll")
                break
            except ErrorRejectAbortNack as exc:
                reason = _reason(exc)
                if reason in RPM_UNSUPPORTED and isinstance(exc, RejectPDU | ErrorPDU) and self._rpm is None:
                    self._rpm = False
                    self._log.warning("device rejects ReadPropertyMultiple; reading each property", reason=reason)
                    continue
                if reason in TOO_BIG and len(request) > 1:
                    self._shrink(request, reason)
                    continue
                # the device refused the whole request: ask property by property this time
                await self._read_each(list(request), results, self.device.retries)
            else:
                if self._rpm is None:
                    self._rpm = True
                for object_id, prop, index, value in answer:
                    key = (f"{object_id[0]},{object_id[1]}", str(prop), index)
                    results[key] = Failed(Quality.DEVICE_EXCEPTION, error_text(value)) if is_error(value) else value
            pending = pending[len(request):]
            first = False
        return results

    async def _read_each(self, reads: list[PropertyRead], results: dict[Any, Any], retries: int) -> None:
        """ReadProperty per property: for devices without RPM, or a request it refused."""
        for number, read in enumerate(reads):
            try:
                results[read.key] = await self._call(
                    lambda read=read: self.network.app.read_property(
                        self.address, read.object_id, read.reference.propertyIdentifier,
                        read.reference.propertyArrayIndex,
                    ),
                    retries,
                )
            except NoAnswer:
                if number == 0 and not results:
                    raise
                _fail(reads[number:], results, Quality.COMM_FAILURE, "stopped answering mid-poll")
                return
            except ErrorRejectAbortNack as exc:
                results[read.key] = Failed(Quality.DEVICE_EXCEPTION, error_text(exc))
            retries = self.device.retries

    def _shrink(self, request: tuple[PropertyRead, ...], reason: str) -> None:
        before = self._budget
        self._budget = max(50, answer_size(request) // 2)
        self._log.warning(
            "device refused a request as too big; smaller requests from now on",
            reason=reason, properties=len(request), apdu_budget=self._budget, was=before,
        )

    async def _learn_limits(self, retries: int) -> None:
        """The device's max APDU and segmentation: config, its I-Am, or its device object."""
        if self._budget is not None:
            return
        async with self._learn_lock:
            if self._budget is not None:
                return
            conn = self.connection
            max_apdu, segmented = conn.max_apdu, conn.segmentation
            info = await self.network.app.device_info_cache.get_device_info(self.address)
            if info is not None:
                max_apdu = max_apdu or info.max_apdu_length_accepted
                if segmented is None:
                    segmented = _can_send_segments(info.segmentation_supported)
            device = ObjectIdentifier(("device", conn.device_instance))
            if max_apdu is None:
                max_apdu = await self._device_property(device, "max-apdu-length-accepted", retries)
                retries = self.device.retries
            if segmented is None:
                segmentation = await self._device_property(device, "segmentation-supported", retries)
                segmented = _can_send_segments(segmentation) if segmentation is not None else False
            self._max_apdu = int(max_apdu or DEFAULT_MAX_APDU)
            self._segmented = bool(segmented)
            ours = self.network.local.max_apdu
            budget = min(self._max_apdu, ours)
            self._budget = budget * SEGMENTED_FACTOR if self._segmented else budget
            self._log.info(
                "bacnet device limits", max_apdu=self._max_apdu, segmentation=self._segmented,
                apdu_budget=self._budget,
            )

    async def _device_property(self, device: ObjectIdentifier, prop: str, retries: int) -> Any:
        try:
            return await self._call(
                lambda: self.network.app.read_property(self.address, device, prop), retries
            )
        except ErrorRejectAbortNack:
            return None  # it answers but will not say: assume the safe default

    async def _call(self, make: Callable[[], Awaitable[Any]], retries: int) -> Any:
        """One confirmed request with the device's timeout and `retries` more attempts.

        Raises NoAnswer after the last timeout, the Error/Reject/Abort PDU when refused.
        """
        loop = asyncio.get_running_loop()
        for attempt in range(retries + 1):
            self._stats.requests += 1
            started = loop.time()
            try:
                result = await asyncio.wait_for(make(), self.connection.timeout)
                if isinstance(result, ErrorRejectAbortNack):
                    raise result
            except TimeoutError:
                self._stats.error("timeout")
            except AbortPDU as exc:
                if _reason(exc) == "no-response":  # the stack's own timer ran out
                    self._stats.error("timeout")
                else:
                    self._stats.answer(loop.time() - started)
                    self._stats.error(f"abort_{_reason(exc)}")
                    raise
            except ErrorRejectAbortNack as exc:
                if str(getattr(exc, "errorClass", "")) == "communication":
                    # made up by our own stack (no route to the device's network, network
                    # down) to look like the device's answer: the device never heard us
                    self._stats.error(f"error_{_reason(exc)}")
                    if attempt == retries:
                        raise NoAnswer(f"not reachable: {_reason(exc)}") from None
                    continue
                self._stats.answer(loop.time() - started)
                kind = "reject" if isinstance(exc, RejectPDU) else "error"
                self._stats.error(f"{kind}_{_reason(exc)}")
                raise
            except (OSError, RuntimeError) as exc:
                self._stats.error("network")
                if attempt == retries:
                    raise NoAnswer(f"network error: {exc}") from exc
                continue
            else:
                self._stats.answer(loop.time() - started)
                return result
            if attempt == retries:
                tries = f" ({retries + 1} tries)" if retries else ""
                raise NoAnswer(f"no answer within {self.connection.timeout:g}s{tries}")
        raise NoAnswer("no attempt made")  # unreachable: the loop returns or raises

    def _set_answering(self, answering: bool, error: str | None = None) -> None:
        """Log the device's state changes only; re-subscribe COV when it comes back."""
        if answering == self._answering:
            return
        was = self._answering
        self._answering = answering
        if answering:
            self._log.info("bacnet device answering")
            if was is False and self._cov is not None:
                self._cov.resubscribe()
        else:
            self._log.warning("bacnet device not answering", error=error)
            if self._cov is not None:
                self._cov.device_lost()

    # --- writing ---------------------------------------------------------------------

    async def write(self, point: str, value: Any, priority: int | None = None) -> None:
        """Write a writable point at its priority (default the point's, usually 8), then
        read it back: the priority-array slot for commandable objects, the property
        otherwise.

        Raises DriverError: bad_request (no such point, read-only, value out of range or
        of the wrong type, priority not 1-16), write_failed (the device refused),
        comm_failure (no answer; the write may or may not have landed), verify_failed.
        """
        ref, slot = self._writable(point, priority)
        try:
            encoded = value_to_write(ref.point, ref.kind, value)
        except ValueError as exc:
            raise DriverError(f"cannot write {value!r} to {point} of {self.device.id}: {exc}", BAD_REQUEST) from exc
        await self._write(ref, encoded, slot, f"writing {value!r} to {point}")
        back = await self._read_back(ref, slot)
        if not same_value(encoded, back):
            raise DriverError(
                f"{point} of {self.device.id} reads back {python_value(back)!r} after writing {value!r}"
                + (f" at priority {slot}" if slot else ""),
                VERIFY_FAILED,
            )
        self._log.info("point written", point=point, value=value, priority=slot)

    async def relinquish(self, point: str, priority: int | None = None) -> None:
        """Write NULL at the point's priority (default the point's): hand control back
        to lower priorities or the relinquish-default."""
        ref, slot = self._writable(point, priority)
        if slot is None:
            raise DriverError(
                f"{point} of {self.device.id} is not a commandable present-value; "
                "only those have priorities to relinquish",
                BAD_REQUEST,
            )
        await self._write(ref, Null(()), slot, f"relinquishing {point}")
        back = await self._read_back(ref, slot)
        if getattr(back, "null", None) is None:
            raise DriverError(
                f"{point} of {self.device.id} still holds {python_value(back)!r} at priority {slot} after relinquish",
                VERIFY_FAILED,
            )
        self._log.info("point relinquished", point=point, priority=slot)

    def _writable(self, point: str, priority: int | None) -> tuple[PointRead, int | None]:
        ref = self._refs.get(point)
        if ref is None:
            raise DriverError(f"{self.device.id} has no point {point!r}", BAD_REQUEST)
        if not ref.point.writable:
            raise DriverError(
                f"point {point} of {self.device.id} is not writable "
                f"(profile {self.profile.id} does not mark it writable: true)",
                BAD_REQUEST,
            )
        slot = ref.point.priority if priority is None else priority
        if isinstance(slot, bool) or not isinstance(slot, int) or not 1 <= slot <= 16:
            raise DriverError(f"priority {priority!r} is not 1-16", BAD_REQUEST)
        commandable = ref.point.property == "present-value" and ref.kind in BACNET_COMMANDABLE
        return ref, slot if commandable else None

    async def _write(self, ref: PointRead, value: Any, slot: int | None, what: str) -> None:
        object_id, prop, index = ref.key
        try:
            await self._call(
                lambda: self.network.app.write_property(
                    self.address, ObjectIdentifier(object_id), prop, value, index, slot
                ),
                self.device.retries,
            )
        except NoAnswer as exc:
            raise DriverError(f"{what} of {self.device.id}: {exc}", Quality.COMM_FAILURE) from None
        except ErrorRejectAbortNack as exc:
            raise DriverError(f"{self.device.id} refused {what}: {error_text(exc)}", WRITE_FAILED) from None

    async def _read_back(self, ref: PointRead, slot: int | None) -> Any:
        object_id, prop, index = ref.key
        read = property_read(object_id, "priority-array", slot) if slot else property_read(object_id, prop, index)
        try:
            value = await self._call(
                lambda: self.network.app.read_property(
                    self.address, read.object_id, read.reference.propertyIdentifier,
                    read.reference.propertyArrayIndex,
                ),
                self.device.retries,
            )
        except (NoAnswer, ErrorRejectAbortNack) as exc:
            why = str(exc) if isinstance(exc, NoAnswer) else error_text(exc)
            raise DriverError(f"{ref.name} of {self.device.id} was written but not read back: {why}", VERIFY_FAILED) from None
        if slot is not None and getattr(value, "null", None) is None:
            value = getattr(value, value._choice)  # PriorityValue: the written value
        return value

    async def _write_cov_increment(self, ref: PointRead, increment: float) -> None:
        """Honour the point's cov_increment (engineering units) on the device's object."""
        raw = increment / ref.point.scale if ref.point.scale else increment
        try:
            await self._call(
                lambda: self.network.app.write_property(
                    self.address, ObjectIdentifier(ref.key[0]), "cov-increment", float(raw)
                ),
                self.device.retries,
            )
        except (NoAnswer, ErrorRejectAbortNack) as exc:
            why = str(exc) if isinstance(exc, NoAnswer) else error_text(exc)
            self._log.warning("cov-increment not written", point=ref.name, increment=increment, error=why)


def _batch(device: str, ts: float, plan: ReadPlan, results: dict[Any, Any]) -> Batch:
    values: list[Any] = [None] * len(plan.points)
    quality: list[str] | None = None
    for read in plan.point_reads:
        raw = results.get(read.key, NOT_IN_ANSWER)
        if isinstance(raw, Failed):
            value, problem = None, raw.quality
        else:
            value, problem = engineering_value(read.point, raw)
            if problem is None and read.status is not None:
                problem = status_quality(*(_unless_failed(results.get(key)) for key in read.status))
        if problem is not None:
            quality = quality or [Quality.GOOD] * len(values)
            quality[read.index] = problem
            value = None
        values[read.index] = value
    return Batch(device, ts, plan.points, values, quality)


def _fail(reads: list[PropertyRead], results: dict[Any, Any], quality: str, why: str) -> None:
    for read in reads:
        results.setdefault(read.key, Failed(quality, why))


def _unless_failed(value: Any) -> Any:
    return None if isinstance(value, Failed) else value


def _reason(exc: BaseException) -> str:
    """'segmentation-not-supported', 'unrecognized-service', 'unknown-object' ..."""
    reason = getattr(exc, "apduAbortRejectReason", None)
    if reason is None:
        reason = getattr(exc, "errorCode", None)
    return str(reason)  # bacpypes3 enumerations print hyphenated, as the standard names them


def _can_send_segments(segmentation: Any) -> bool:
    return str(segmentation) in ("segmented-both", "segmented-transmit")
