"""Hourly, daily and monthly consumption of one counter, from its totals at the boundaries.

A period's consumption is `total(end) - total(start)`, where the total at a boundary is
interpolated linearly between the two readings that straddle it. Nothing is summed
reading by reading, so a period is right however many polls failed inside it: after an
outage the first reading closes every period that ended meanwhile, the interpolation
spreading the outage's consumption over them, and their sum is exactly the counter's
difference.

A period is flagged estimated, never silently, when:
- a boundary total was interpolated between readings more than `gap` seconds apart;
- no reading fell inside the period (its ends included);
- tracking began inside it (the first period of a meter: consumption since then).

`total` comes from `CounterTracker`: what a reset or jump dropped is in no period.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.energy.periods import Calendar
from gateway.energy.points import PERIODS

Reading = tuple[float, float, float]  # (ts, total, raw)


@dataclass(slots=True)
class OpenPeriod:
    """The period a counter is in: where it started and what the counter read there."""

    start: float
    end: float
    total: float
    raw: float
    estimated: bool
    saw: bool  # a reading fell inside

    def snapshot(self) -> list[Any]:
        return [self.start, self.end, self.total, self.raw, self.estimated, self.saw]


@dataclass(slots=True)
class Closed:
    """A period that ended: its consumption and the readings at its ends."""

    period: str
    start: float
    end: float
    consumption: float
    estimated: bool
    opening_total: float
    closing_total: float
    opening_raw: float
    closing_raw: float


class Rollups:
    """The open hour, day and month of one counter."""

    def __init__(self, calendar: Calendar, gap: float, rollover: float | None = None) -> None:
        self.calendar = calendar
        self.gap = gap
        self.rollover = rollover
        self.open: dict[str, OpenPeriod] = {}

    def begin(self, reading: Reading) -> None:
        """The first reading of a counter: open its periods (partial unless it fell right on
        a period's start). Periods already open are kept."""
        ts, total, raw = reading
        for period in PERIODS:
            if period in self.open:
                continue
            start = self.calendar.start(ts, period)
            end = self.calendar.next(start, period)
            self.open[period] = OpenPeriod(start, end, total, raw, ts != start, True)

    def advance(self, previous: Reading, reading: Reading) -> list[Closed]:
        """A reading after `previous`: close every period whose end it passed."""
        ts = reading[0]
        closed: list[Closed] = []
        for period, current in self.open.items():
            while ts >= current.end:
                b = current.end
                total, raw, estimated = self._at(b, previous, reading)
                closed.append(Closed(
                    period, current.start, b, round(total - current.total, 9),
                    current.estimated or estimated or not (current.saw or ts == b),
                    current.total, total, current.raw, raw))
                current = OpenPeriod(b, self.calendar.next(b, period), total, raw, estimated, False)
                self.open[period] = current
            current.saw = True
        if len(self.open) < len(PERIODS):
            self.begin(reading)
        return closed

    def _at(self, b: float, previous: Reading, reading: Reading) -> tuple[float, float, bool]:
        """Total and raw at boundary `b` (previous ts < b <= reading ts), and whether that was
        an interpolation across a long gap."""
        t1, total1, raw1 = previous
        t2, total2, raw2 = reading
        if b >= t2 or t2 <= t1:
            return total2, raw2, False
        total = total1 + (total2 - total1) * (b - t1) / (t2 - t1)
        raw = raw1 + (total - total1)
        if self.rollover is not None and raw >= self.rollover:
            raw -= self.rollover
        return total, raw, (t2 - t1) > self.gap

    def snapshot(self) -> dict[str, list[Any]]:
        return {p: o.snapshot() for p, o in self.open.items()}

    def restore(self, body: dict[str, list[Any]]) -> None:
        """Open periods as saved; a period saved in another time zone (the site's changed)
        is dropped and opens again at the next reading's boundary."""
        self.open = {}
        for period, row in body.items():
            if period not in PERIODS:
                continue
            start, end, total, raw, estimated, saw = row
            if self.calendar.start(start, period) != start:
                continue
            self.open[period] = OpenPeriod(start, end, total, raw, bool(estimated), bool(saw))
