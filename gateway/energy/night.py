"""Night-time minimum flow of a water counter: the leak indicator (跑冒滴漏).

At night almost nobody draws water, so a household's meter stands still for long
stretches and a building's main drops to its baseline. A leak never stops: every
stretch of the night shows some flow. So the indicator is the minimum, over the
night window, of the flow measured across sub-intervals of at least `STEP` seconds
(10 minutes): one quiet poll between two pulses must not read as zero flow, and one
flush must not read as a leak, since the minimum ignores the stretches that had one.

Flows come from differences of the tracked total (rollovers, resets and swaps already
handled), in units per hour. The result is emitted once per night, when the window ends
(on the first reading or tick after its end), and only if at least one sub-interval was
measured. Resolution limits it: a pulse meter of 10 L a pulse cannot show a flow below
0.06 m³/h in 10 minutes, so on such meters set thresholds well above that.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from gateway.config.energy_models import window_minutes
from gateway.energy.periods import Calendar

STEP = 600.0  # seconds: the shortest sub-interval a flow is measured over


class NightWindow:
    """The configured window ("02:00-04:00", local; may cross midnight) as epoch spans."""

    def __init__(self, window: str, calendar: Calendar) -> None:
        self.calendar = calendar
        self.begin, self.finish = window_minutes(window)
        self._cached: tuple[float, float] | None = None

    def span(self, day: date) -> tuple[float, float]:
        """The window that starts on local `day`."""
        start = self.calendar.at(day, self.begin)
        end_day = day if self.finish > self.begin else day + timedelta(days=1)
        return start, self.calendar.at(end_day, self.finish)

    def containing(self, ts: float) -> tuple[float, float] | None:
        """The window `ts` falls in (start <= ts < end), or None."""
        cached = self._cached
        if cached is not None and cached[0] <= ts < cached[1]:
            return cached
        today = self.calendar.local(ts).date()
        for day in (today, today - timedelta(days=1)):
            start, end = self.span(day)
            if start <= ts < end:
                self._cached = (start, end)
                return self._cached
        return None


@dataclass(slots=True)
class NightResult:
    window_start: float
    window_end: float
    min_flow: float
    intervals: int


class NightFlow:
    """One water counter's current night: the anchor reading and the minimum so far."""

    def __init__(self, window: NightWindow) -> None:
        self.window = window
        self.start: float | None = None
        self.end: float | None = None
        self.anchor: tuple[float, float] | None = None  # (ts, total)
        self.min_flow: float | None = None
        self.intervals = 0
        self.done: float | None = None  # start of the last window emitted (or given up)

    def feed(self, ts: float, total: float) -> NightResult | None:
        """A reading; returns the result of a window it shows has ended."""
        result = self.finish(ts) if self.end is not None and ts >= self.end else None
        span = self.window.containing(ts)
        if span is None or span[0] == self.done:
            return result
        if span[0] != self.start:
            self.start, self.end = span
            self.anchor, self.min_flow, self.intervals = (ts, total), None, 0
            return result
        assert self.anchor is not None
        anchor_ts, anchor_total = self.anchor
        if ts - anchor_ts >= STEP:
            flow = max(total - anchor_total, 0.0) / (ts - anchor_ts) * 3600.0
            self.min_flow = flow if self.min_flow is None else min(self.min_flow, flow)
            self.intervals += 1
            self.anchor = (ts, total)
        return result

    def finish(self, now: float) -> NightResult | None:
        """The window's result once it has ended (None before, or with nothing measured)."""
        if self.start is None or self.end is None or now < self.end:
            return None
        result = None
        if self.min_flow is not None:
            result = NightResult(self.start, self.end, self.min_flow, self.intervals)
        self.done = self.start
        self.start = self.end = self.anchor = self.min_flow = None
        self.intervals = 0
        return result

    def snapshot(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "anchor": self.anchor,
                "min_flow": self.min_flow, "intervals": self.intervals, "done": self.done}

    def restore(self, body: dict[str, Any]) -> None:
        self.start, self.end = body.get("start"), body.get("end")
        anchor = body.get("anchor")
        self.anchor = (anchor[0], anchor[1]) if anchor else None
        self.min_flow = body.get("min_flow")
        self.intervals = int(body.get("intervals") or 0)
        self.done = body.get("done")
