"""The driver interface: devices, points and batches, nothing of alarms, topics or sinks."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from gateway.batch import Batch
from gateway.config.models import Device, Profile

Emit = Callable[[Batch], None]


class DriverError(Exception):
    """A device could not be read or written; `quality` says how it failed."""

    def __init__(self, message: str, quality: str) -> None:
        super().__init__(message)
        self.quality = quality


class Driver(ABC):
    """One device behind one protocol.

    `read()` runs the device's compiled plan once and returns one batch; the pipeline's
    poller calls it on the device's schedule. Push protocols (MQTT, BACnet COV) override
    `start()` to subscribe and call `emit` themselves.
    """

    def __init__(self, device: Device, profile: Profile) -> None:
        self.device = device
        self.profile = profile

    @property
    @abstractmethod
    def points(self) -> tuple[str, ...]:
        """The names of the points a read returns, in batch order."""

    async def start(self, emit: Emit) -> None:  # noqa: B027 - optional hook
        """Connect or subscribe; a device that is down must not make this raise."""

    @abstractmethod
    async def read(self) -> Batch:
        """Poll the device once; raise DriverError when nothing could be read."""

    async def write(self, point: str, value: Any) -> None:
        raise DriverError(f"{type(self).__name__} cannot write", "bad_request")

    async def stop(self) -> None:  # noqa: B027 - optional hook
        """Close connections; must return promptly."""
