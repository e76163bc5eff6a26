"""Per-device statistics and the online/offline state the status events report."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from gateway.batch import Event

OFFLINE_AFTER = 3  # consecutive failed polls before a device is reported offline


@dataclass(slots=True)
class DeviceHealth:
    device: str
    online: bool | None = None  # None until the first poll settles it
    polls: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    errors: dict[str, int] = field(default_factory=dict)  # failure kind -> count
    last_good: float | None = None
    last_error: str | None = None
    last_latency: float | None = None

    def good(self, latency: float, now: float | None = None) -> Event | None:
        """Record a successful poll; returns a status event when the device came (back) online."""
        self.polls += 1
        self.consecutive_failures = 0
        self.last_latency = latency
        self.last_good = now or time.time()
        if self.online is not True:
            self.online = True
            return self._status_event(self.last_good)
        return None

    def failed(self, kind: str, error: str, now: float | None = None) -> Event | None:
        """Record a failed poll; returns a status event when the device just went offline."""
        self.polls += 1
        self.failures += 1
        self.consecutive_failures += 1
        self.errors[kind] = self.errors.get(kind, 0) + 1
        self.last_error = error
        if self.online is not False and self.consecutive_failures >= OFFLINE_AFTER:
            self.online = False
            return self._status_event(now or time.time())
        return None

    def _status_event(self, ts: float) -> Event:
        return Event("device_status", ts, self.device, self.snapshot())

    def snapshot(self) -> dict[str, object]:
        return {
            "online": self.online,
            "polls": self.polls,
            "failures": self.failures,
            "errors": dict(self.errors),
            "last_good": self.last_good,
            "last_error": self.last_error,
            "latency_ms": round(self.last_latency * 1000, 1) if self.last_latency else None,
        }
