"""Rounds: the time slices of a patrol plan in which every checkpoint must be visited.

A plan's window (day 08:00-20:00, night 20:00-08:00) is fixed in local wall-clock time
in the site's time zone; its `rounds` cut the window's real duration into equal slices:
08:00-20:00 with 3 rounds is 08:00-12:00, 12:00-16:00, 16:00-20:00 in Shanghai. Where a
site has daylight saving time the night the clocks change is an hour shorter or longer,
and its rounds with it (each a quarter of 11 or 13 hours): the window still starts and
ends at the written local times. Bounds are computed on aware local datetimes
(zoneinfo), never by adding 86400 to the previous day.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from gateway.config.patrol_models import PatrolPlan, PatrolWindow


@dataclass(frozen=True, slots=True)
class Round:
    """One round of one plan: [start, end) in epoch seconds.

    `window` is the window's id, `day` the local date the window starts on, `number`
    1-based within the window's `rounds`.
    """

    plan: str
    window: str
    day: date
    number: int
    rounds: int
    start: float
    end: float

    def holds(self, ts: float) -> bool:
        return self.start <= ts < self.end


class PlanSchedule:
    """The rounds of one plan in one time zone."""

    def __init__(self, plan: PatrolPlan, timezone: str) -> None:
        self.plan = plan
        self.tz = ZoneInfo(timezone)

    def _at(self, day: date, minutes: int) -> float:
        """Epoch seconds of a local wall-clock time `minutes` after `day`'s midnight (may
        be past 24 h: the next day)."""
        day = day + timedelta(days=minutes // 1440)
        minutes %= 1440
        return datetime(day.year, day.month, day.day, minutes // 60, minutes % 60,
                        tzinfo=self.tz).timestamp()

    def _window_rounds(self, window: PatrolWindow, day: date) -> list[Round]:
        first, last = window.minutes()
        start, end = self._at(day, first), self._at(day, last)
        step = (end - start) / window.rounds
        bounds = [start + i * step for i in range(window.rounds)] + [end]
        return [Round(self.plan.id, window.id, day, i + 1, window.rounds, bounds[i], bounds[i + 1])
                for i in range(window.rounds)]

    def _days(self, after: float, upto: float) -> Iterator[date]:
        """Local dates whose windows may hold a round ending in (after, upto]: a window
        starting the day before `after` may still be running."""
        day = datetime.fromtimestamp(after, self.tz).date() - timedelta(days=1)
        last = datetime.fromtimestamp(upto, self.tz).date()
        while day <= last:
            yield day
            day += timedelta(days=1)

    def ending(self, after: float, upto: float) -> list[Round]:
        """Every round with `after < end <= upto`, by end."""
        found = [r for day in self._days(after, upto) for w in self.plan.windows
                 for r in self._window_rounds(w, day) if after < r.end <= upto]
        return sorted(found, key=lambda r: r.end)

    def at(self, ts: float) -> Round | None:
        """The round `ts` falls in, or None between windows."""
        for day in self._days(ts, ts):
            for window in self.plan.windows:
                for candidate in self._window_rounds(window, day):
                    if candidate.holds(ts):
                        return candidate
        return None

    def next_end(self, after: float) -> float:
        """The end of the first round ending after `after`."""
        horizon = after + 3 * 86400.0  # windows repeat daily: one ends within two days
        return min(r.end for r in self.ending(after, horizon))
