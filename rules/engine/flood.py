"""Alarm flood detection (ISA-18.2: more than 10 alarms in 10 minutes for one operator).

In a flood the monitoring centre cannot read every alarm, so the gateway says so once
when it starts and once when it is over, instead of leaving people to guess from the
rate of messages.
"""

from __future__ import annotations

from collections import deque

from gateway.batch import Event
from rules.engine import events


class FloodWatch:
    """Raises across all alarms within a sliding window, and whether that is a flood."""

    def __init__(self, window: float, threshold: int) -> None:
        self.window = window
        self.threshold = threshold
        self.in_flood = False
        self._raises: deque[float] = deque()

    def raised(self, ts: float) -> None:
        self._raises.append(ts)

    def count(self, now: float) -> int:
        """Raises within (now - window, now]."""
        if not self._raises:  # nearly always: checked after every batch
            return 0
        horizon = now - self.window
        while self._raises and self._raises[0] <= horizon:
            self._raises.popleft()
        return sum(1 for ts in self._raises if ts <= now)

    def check(self, now: float) -> Event | None:
        """The `alarm_flood` event when a flood starts or ends at `now`, else None."""
        raises = self.count(now)
        flood = raises > self.threshold
        if flood == self.in_flood:
            return None
        self.in_flood = flood
        return events.alarm_flood(now, flood, raises, self.window)
