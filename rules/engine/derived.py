"""Derived points: values computed from other points, and counters kept across restarts.

A derived point is a reading like any other (stored, sent, read by rules), so the
engine hands it back as a `Batch`: one per device per call, never one per point. A
value that cannot be known is still in the batch, with a quality that says so, so a
chart shows a gap rather than the last value carried on.

Counters (`accumulate:`) turn a condition into equipment usage: `hours` adds the time
between two evaluations while the condition held at the first (run hours from
`running == 1`); `rises` adds one for each false → true (starts). Maintenance by usage
(every 500 run hours) reads them, so they must survive restarts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.batch import Batch, Quality

HOUR = 3600.0


@dataclass(slots=True)
class Counter:
    """One accumulating derived point.

    Unknown (a dead sensor) adds nothing: an hour with no news of the pump is not a run
    hour. For starts, unknown is skipped, so off → unknown → on is still one start.
    """

    of: str  # "hours" or "rises"
    value: float = 0.0
    last_ts: float | None = None  # when the condition was last evaluated (hours)
    last_held: bool | None = None  # its truth then (hours)
    last_known: bool | None = None  # the last known truth (rises)

    def observe(self, ts: float, truth: bool | None) -> float | int:
        """Count one evaluation of the condition at `ts`; the counter's value after it."""
        if self.of == "hours":
            if self.last_ts is None or ts >= self.last_ts:
                if self.last_ts is not None and self.last_held:
                    self.value += (ts - self.last_ts) / HOUR
                self.last_ts, self.last_held = ts, truth
        elif truth is not None:
            if truth and self.last_known is False:
                self.value += 1
            self.last_known = truth
        return self.current

    @property
    def current(self) -> float | int:
        return int(self.value) if self.of == "rises" else self.value

    def snapshot(self) -> dict[str, Any]:
        return {"of": self.of, "value": self.value, "last_known": self.last_known}

    @classmethod
    def restore(cls, of: str, body: dict[str, Any]) -> Counter:
        """The counter as saved. The downtime is not counted as run time: nobody knows
        whether the pump ran while the gateway was down, so hours restart from the first
        evaluation after the restart."""
        counter = cls(of, float(body.get("value", 0.0)))
        if body.get("of") == of:
            counter.last_known = body.get("last_known")
        else:  # the rule changed from hours to rises or back: the value means something else
            counter.value = 0.0
        return counter


class DerivedBatches:
    """The derived values of one call, grouped into one batch per device."""

    def __init__(self) -> None:
        self._devices: dict[str, tuple[float, list[str], list[Any], list[str]]] = {}

    def add(self, device: str, point: str, ts: float, value: Any) -> None:
        """A value of `device.point`; None is unknown (quality `decode_error`)."""
        entry = self._devices.get(device)
        if entry is None:
            entry = self._devices[device] = (ts, [], [], [])
        entry[1].append(point)
        entry[2].append(value)
        entry[3].append(Quality.GOOD.value if value is not None else Quality.DECODE_ERROR.value)

    def __bool__(self) -> bool:
        return bool(self._devices)

    def batches(self) -> list[Batch]:
        out = []
        for device, (ts, points, values, quality) in self._devices.items():
            good = all(q == Quality.GOOD for q in quality)
            out.append(Batch(device, ts, tuple(points), values, None if good else quality))
        self._devices.clear()
        return out
