"""Hours, days and months in the site's time zone.

A day in Shanghai starts at 16:00 UTC, and a month's ledger is the local month, so
every boundary is computed on aware local datetimes (zoneinfo) and turned back into
epoch seconds: correct across DST changes where a site has them (a day of 23 or 25
hours), and never the UTC day.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from gateway.energy.points import PERIODS

NOMINAL = {"hour": 3600.0, "day": 86400.0, "month": 31 * 86400.0}  # for look-backs only


class Calendar:
    """Period boundaries of one time zone, as epoch seconds."""

    def __init__(self, timezone: str) -> None:
        self.name = timezone
        self.tz = ZoneInfo(timezone)

    def local(self, ts: float) -> datetime:
        return datetime.fromtimestamp(ts, self.tz)

    def iso(self, ts: float) -> str:
        """Local time with its offset, to the second: `2026-11-01T00:00:00+08:00`."""
        return self.local(ts).isoformat(timespec="seconds")

    def month(self, ts: float) -> str:
        """The local month, `2026-11`: the ledger's key."""
        return self.local(ts).strftime("%Y-%m")

    def at(self, day: date, minutes: int = 0) -> float:
        """Epoch seconds of a local wall-clock time (a time a DST change skips maps to
        the instant of the change)."""
        return datetime(day.year, day.month, day.day, minutes // 60, minutes % 60,
                        tzinfo=self.tz).timestamp()

    def start(self, ts: float, period: str) -> float:
        """The start of the period that contains `ts`."""
        dt = self.local(ts)
        if period == "hour":
            return dt.replace(minute=0, second=0, microsecond=0).timestamp()
        if period == "day":
            return self.at(dt.date())
        if period == "month":
            return self.at(dt.date().replace(day=1))
        raise ValueError(f"unknown period {period!r}; one of {', '.join(PERIODS)}")

    def next(self, start: float, period: str) -> float:
        """The start of the period after the one starting at (or containing) `start`."""
        if period == "hour":
            following = self.start(start + 3600.0, "hour")
            return following if following > start else start + 3600.0
        day = self.local(self.start(start, period)).date()
        if period == "day":
            return self.at(day + timedelta(days=1))
        if period == "month":
            return self.at(date(day.year + day.month // 12, day.month % 12 + 1, 1))
        raise ValueError(f"unknown period {period!r}; one of {', '.join(PERIODS)}")

    def boundaries(self, after: float, upto: float, period: str) -> Iterator[float]:
        """Every period start `b` with `after < b <= upto`, in order."""
        b = self.next(after, period)
        while b <= upto:
            yield b
            b = self.next(b, period)
