"""The driver interface: devices, points and batches, nothing of alarms, topics or sinks."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from gateway.batch import Batch
from gateway.config.models import Device, Profile

Emit = Callable[[Batch], None]
DEFAULT_GROUP = "default"


@dataclass(frozen=True, slots=True)
class PollGroup:
    """Points polled together on their own timer (a meter's energy every 60 s, power every 5 s)."""

    interval: float
    points: tuple[str, ...]


class DriverError(Exception):
    """A device could not be read or written; `quality` says how it failed."""

    def __init__(self, message: str, quality: str) -> None:
        super().__init__(message)
        self.quality = quality


class GroupPlan(Protocol):
    """What a polled driver's compiled plan for one poll group exposes."""

    @property
    def interval(self) -> float: ...

    @property
    def points(self) -> tuple[str, ...]: ...


P = TypeVar("P", bound=GroupPlan)


def poll_groups_of(plans: Mapping[str, GroupPlan]) -> dict[str, PollGroup]:
    """A polled driver's `poll_groups`, from its compiled plans (batch order kept)."""
    return {name: PollGroup(plan.interval, plan.points) for name, plan in plans.items()}


def plan_for(device_id: str, plans: Mapping[str, P], group: str) -> P:
    """The plan of poll group `group`; DriverError(bad_request) when the device has none."""
    plan = plans.get(group)
    if plan is None:
        raise DriverError(
            f"{device_id} has no poll group {group!r} (it has: {', '.join(plans)})",
            "bad_request",
        )
    return plan


@dataclass(slots=True)
class RequestStats:
    """One device's requests: how many, how they failed, how long the answered ones took."""

    requests: int = 0
    errors: dict[str, int] = field(default_factory=dict)  # failure kind -> requests
    answered: int = 0
    last_latency: float | None = None  # seconds, answered requests only
    mean_latency: float | None = None
    last_good_read: float | None = None  # epoch seconds of the last poll the device answered

    def answer(self, latency: float) -> None:
        self.answered += 1
        self.last_latency = latency
        mean = self.mean_latency or 0.0
        self.mean_latency = mean + (latency - mean) / self.answered

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": dict(self.errors),
            "latency_ms": _ms(self.last_latency),
            "mean_latency_ms": _ms(self.mean_latency),
            "last_good_read": self.last_good_read,
        }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


class Driver(ABC):
    """One device behind one protocol.

    `read(group)` runs one poll group's compiled plan once and returns one batch; the
    poller calls it on that group's timer. Push protocols (MQTT, BACnet COV) override
    `start()` to subscribe and call `emit` themselves.
    """

    def __init__(self, device: Device, profile: Profile) -> None:
        self.device = device
        self.profile = profile

    @property
    @abstractmethod
    def points(self) -> tuple[str, ...]:
        """The names of the points a read returns, in batch order."""

    @property
    def poll_groups(self) -> dict[str, PollGroup]:
        """The groups `read()` takes; by default every point at the device's poll_interval."""
        return {DEFAULT_GROUP: PollGroup(self.device.poll_interval, self.points)}

    def stats(self) -> dict[str, Any]:
        """Request statistics for the CLI and the periodic device status."""
        return {}

    async def start(self, emit: Emit) -> None:  # noqa: B027 - optional hook
        """Connect or subscribe; a device that is down must not make this raise."""

    @abstractmethod
    async def read(self, group: str = DEFAULT_GROUP) -> Batch:
        """Poll one group of the device once; raise DriverError when nothing could be read."""

    async def write(self, point: str, value: Any) -> None:
        raise DriverError(f"{type(self).__name__} cannot write", "bad_request")

    async def stop(self) -> None:  # noqa: B027 - optional hook
        """Close connections; must return promptly."""
