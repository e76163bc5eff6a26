"""Per-device poll statistics and the online/offline state the status events report.

These count polls (one batch each); a driver may count its requests on top, e.g. the
Modbus driver's `stats()`, which the periodic device status carries alongside.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from gateway.batch import Event

OFFLINE_AFTER = 3  # consecutive failed polls before a device is reported offline


@dataclass(slots=True)
class DeviceHealth:
    device: str
    offline_after: int = OFFLINE_AFTER  # consecutive failed polls before offline
    online: bool | None = None  # None until the first poll settles it
    polls: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    errors: dict[str, int] = field(default_factory=dict)  # failure kind -> count
    last_good: float | None = None
    last_error: str | None = None
    last_latency: float | None = None
    mean_latency: float | None = None  # of good polls
    maintenance_until: float | None = None  # in maintenance mode until then (alarms suppressed)

    def good(self, latency: float, now: float | None = None) -> Event | None:
        """Record a successful poll; returns a status event when the device came (back) online."""
        self.polls += 1
        self.consecutive_failures = 0
        self.last_latency = latency
        good = self.polls - self.failures
        mean = self.mean_latency or 0.0
        self.mean_latency = mean + (latency - mean) / good
        self.last_good = now or time.time()
        if self.online is not True:
            self.online = True
            return self.status_event(self.last_good)
        return None

    def failed(self, kind: str, error: str, now: float | None = None) -> Event | None:
        """Record a failed poll; returns a status event when the device just went offline."""
        self.polls += 1
        self.failures += 1
        self.consecutive_failures += 1
        self.errors[kind] = self.errors.get(kind, 0) + 1
        self.last_error = error
        if self.online is not False and self.consecutive_failures >= self.offline_after:
            self.online = False
            return self.status_event(now)
        return None

    @property
    def failures_while_offline(self) -> int:
        """Failed polls since the device went offline, counting the one that took it there."""
        if self.online is not False:
            return 0
        return self.consecutive_failures - self.offline_after + 1

    def status_event(self, ts: float | None = None, **extra: object) -> Event:
        """A device_status event with the snapshot and `extra` fields (e.g. driver stats)."""
        return Event("device_status", ts or time.time(), self.device, {**self.snapshot(), **extra})

    def snapshot(self) -> dict[str, object]:
        return {
            "online": self.online,
            "polls": self.polls,
            "failures": self.failures,
            "errors": dict(self.errors),
            "last_good": self.last_good,
            "last_error": self.last_error,
            "latency_ms": _ms(self.last_latency),
            "mean_latency_ms": _ms(self.mean_latency),
            "maintenance_until": self.maintenance_until,
        }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)
