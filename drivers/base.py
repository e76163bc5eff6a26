"""The driver interface: devices, points and batches, nothing of alarms, topics or sinks."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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
