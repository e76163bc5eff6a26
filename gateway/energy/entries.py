"""What operators enter: manual readings, meter replacements, handover snapshots.

Commands and the CLI call these (they audit who did what); each checks its input first
and raises ValueError with a reason an operator can act on (did-you-mean for a meter id,
the last reading for a value that goes backwards), so nothing half-done is stored.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from typing import Any

import structlog

from gateway.batch import Batch, Event
from gateway.energy.call import Call, Output
from gateway.energy.counters import JUMP, RESET, as_reading
from gateway.energy.meters import Counter
from gateway.energy.periods import Calendar

log = structlog.get_logger(__name__)

FUTURE_TOLERANCE = 60.0  # seconds: a laptop's clock a little ahead is not "the future"


def _hint(word: str, choices: Iterable[str], what: str) -> str:
    choices = sorted(choices)
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if close:
        return f"; did you mean {close[0]}?"
    if not choices:
        return f"; the site has no {what}"
    shown = ", ".join(choices[:12]) + (", ..." if len(choices) > 12 else "")
    return f"; {what}: {shown}"


class Entries:
    """Operators' entries on the energy stage (mixed into EnergyStage)."""

    # provided by EnergyStage, with _stepped, _finish, _last, _store_open and _count
    counters: dict[str, dict[str, Counter]]
    all: list[Counter]
    clock: Callable[[], float]
    calendar: Calendar
    _backlog: Output


    def manual_reading(self, meter: str, value: float, by: str, *, point: str | None = None,
                       at: float | None = None) -> Output:
        """A reading entered by hand: stored with source `manual` and `by`, tracked like a
        poll, and returned as a reading of the meter for InfluxDB and upstream."""
        c = self._resolve(meter, point)
        value = self._number(value, "the reading")
        by = self._who(by)
        at = self._when(at)
        t = c.tracker
        if t.last_ts is not None and at <= t.last_ts:
            raise ValueError(f"{c.device}.{c.point} already has a reading at or after that time "
                             f"({t.last_raw} at {self.calendar.iso(t.last_ts)}); readings are "
                             "entered in order")
        step = t.assess(at, value)
        assert step is not None
        if step.flag == RESET:
            raise ValueError(
                f"{value} is below the last reading of {c.device}.{c.point} ({t.last_raw} at "
                f"{self.calendar.iso(t.last_ts or at)}): check the reading, or if the meter "
                "was replaced record the replacement first")
        if step.flag == JUMP:
            raise ValueError(
                f"{value} would mean {step.rate:.4g} {c.unit or 'units'}/h since the last "
                f"reading ({t.last_raw} at {self.calendar.iso(t.last_ts or at)}), above this "
                f"meter's limit of {t.max_rate:.4g}/h: check the reading")
        previous = self._last(c)
        t.commit(step)
        call = Call(at, self.calendar)
        call.readings.append(Batch(c.device, at, (c.point,), [value]))
        self._stepped(call, c, step, previous, source="manual", by=by)
        self._count("manual_readings")
        log.info("manual reading", device=c.device, point=c.point, value=value, by=by)
        return self._finish(call)

    def replace_meter(self, meter: str, old_final: float, new_initial: float, by: str, *,
                      point: str | None = None, at: float | None = None) -> list[Event]:
        """A meter swapped: the old meter counted to `old_final`, the new one continues from
        `new_initial`, and the totals stay continuous (also when the swap was already seen
        as a reset or jump). Periods the swap's time closes are sent with the next call."""
        c = self._resolve(meter, point)
        old_final = self._number(old_final, "the old meter's final reading")
        new_initial = self._number(new_initial, "the new meter's initial reading")
        by = self._who(by)
        at = self._when(at)
        previous = self._last(c)
        last_raw = c.tracker.last_raw
        step = c.tracker.replace(at, old_final, new_initial)  # raises before changing anything
        call = Call(step.ts, self.calendar)
        body = {"point": c.point, "kind": "replaced", "raw": new_initial, "previous": last_raw,
                "ts": step.ts, "old_final": old_final, "new_initial": new_initial,
                "credited": step.consumption, "total": c.tracker.total, "unit": c.unit,
                "by": by, "message": f"meter replaced: old final {old_final}, new initial "
                                     f"{new_initial}; {step.consumption:.6g} counted"}
        call.event(step.ts, c.device, body)
        call.writes.replacement(c.device, c.point, step.ts, old_final, new_initial, last_raw,
                                step.consumption, by)
        self._stepped(call, c, step, previous, source="replacement", by=by)
        c.last_flag, c.last_flag_ts = "replaced", step.ts
        log.info("meter replaced", device=c.device, point=c.point, old_final=old_final,
                 new_initial=new_initial, credited=step.consumption, by=by)
        out = self._finish(call, backlog=False)
        self._backlog.extend(item for item in out if isinstance(item, Batch))
        return [item for item in out if isinstance(item, Event)]

    def snapshot(self, household: str, by: str, at: float | None = None) -> dict[str, Any]:
        """The handover (move-in) record of a household: every meter serving it with its
        latest reading (at or before `at`), stored and returned."""
        members = [c for c in self.all if c.household == household]
        if not members:
            households = {c.household for c in self.all if c.household}
            raise ValueError(f"no meter serves household {household!r}"
                             + _hint(household, households, "households"))
        by = self._who(by)
        at = self._when(at)
        call = Call(at, self.calendar)
        meters = []
        for c in members:
            t = c.tracker
            if t.last_ts is not None and t.last_ts <= at:
                raw, total, read_at = t.last_raw, t.total, t.last_ts
            else:
                row = self._store_open().reading_at_or_before(c.device, c.point, at)
                read_at, raw, total = row if row is not None else (None, None, None)
            call.writes.snapshot(household, at, by, c.device, c.point, raw, total, c.unit,
                                 read_at)
            meters.append({"meter": c.device, "point": c.point, "reading": raw,
                           "unit": c.unit, "at": read_at})
        self._finish(call, backlog=False)
        self._count("snapshots")
        log.info("handover snapshot", household=household, by=by, meters=len(meters),
                 unread=sum(m["reading"] is None for m in meters))
        return {"household": household, "ts": at, "by": by, "meters": meters}

    def meters(self) -> list[dict[str, Any]]:
        """Every counter: device, point, commodity, unit, latest raw/total/ts, last flag."""
        return [c.describe() for c in self.all]

    # -- checks ----------------------------------------------------------------------------

    def _resolve(self, meter: str, point: str | None) -> Counter:
        points = self.counters.get(meter)
        if points is None:
            raise ValueError(f"no meter {meter!r}" + _hint(meter, self.counters, "meters"))
        if point is None:
            if len(points) == 1:
                return next(iter(points.values()))
            raise ValueError(f"{meter} has several counters ({', '.join(points)}); "
                             "say which with point")
        counter = points.get(point)
        if counter is None:
            raise ValueError(f"{meter} has no counter {point!r}"
                             + _hint(point, points, "its counters"))
        return counter

    @staticmethod
    def _number(value: Any, what: str) -> float:
        number = as_reading(value)
        if number is None and isinstance(value, str):
            try:
                number = as_reading(float(value.strip()))
            except ValueError:
                number = None
        if number is None:
            raise ValueError(f"{what} {value!r} is not a number")
        if number < 0:
            raise ValueError(f"{what} {number} is negative; a meter does not read below 0")
        return number

    @staticmethod
    def _who(by: str) -> str:
        if not isinstance(by, str) or not by.strip():
            raise ValueError("say who entered it (by)")
        return by.strip()

    def _when(self, at: float | None) -> float:
        now = self.clock()
        if at is None:
            return now
        when = as_reading(at)
        if when is None:
            raise ValueError(f"the time {at!r} is not a time (seconds since the epoch)")
        if when > now + FUTURE_TOLERANCE:
            raise ValueError(f"the time given ({self.calendar.iso(when)}) is in the future "
                             f"(now {self.calendar.iso(now)})")
        return when
