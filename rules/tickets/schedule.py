"""Maintenance plans: preventive tickets by the calendar and by usage.

A calendar entry is due every `every_days` or `every_months` from its anchor (the
national elevator rule: every 15 days, quarterly, half-yearly, yearly); a usage entry is
due when a counter (run hours, starts) crosses its next threshold. A due that finds the
previous ticket for the same device and task still active is absorbed by it rather than
opening a second one; several dues missed while the gateway was down raise one ticket.
"""

from __future__ import annotations

import calendar
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from rules.tickets.model import Kind, TicketRequest
from rules.tickets.sla import DAY


@dataclass(frozen=True, slots=True)
class ScheduleEntry:
    """One task of a maintenance plan for one device.

    Exactly one of `every_days`, `every_months` (calendar) or `counter` with `every`
    (usage) is set. `start` anchors a calendar entry (its first due); without it the
    first due is one cycle after the schedule first sees the entry.
    """

    task: str  # e.g. "elevator_half_monthly"; with the device, the ticket's fault key
    device: str
    category: str = "general"
    title: str = ""
    every_days: float | None = None
    every_months: int | None = None
    start: float | None = None
    counter: str | None = None  # e.g. "run_hours", "starts"
    every: float | None = None
    complete_within: float | None = None  # seconds to do the work, if the plan says
    # The calendar cycles follow: "every 6 months from 1 December" means 1 June on the
    # site's clock, which UTC months can miss by a day. None: UTC.
    timezone: str | None = None

    def __post_init__(self) -> None:
        kinds = [self.every_days is not None, self.every_months is not None, self.counter is not None]
        if sum(kinds) != 1:
            raise ValueError(
                f"schedule entry {self.task} for {self.device}: give exactly one of"
                " every_days, every_months, or counter with every"
            )
        if self.counter is not None and not (self.every and self.every > 0):
            raise ValueError(f"schedule entry {self.task} for {self.device}: counter needs every > 0")

    @property
    def key(self) -> str:
        return f"{self.device}/{self.task}"

    def next_after(self, due: float) -> float:
        """The calendar due after `due`, counted on the calendar of `timezone`."""
        if self.every_days is not None:
            if self.timezone is None:
                return due + self.every_days * DAY
            local = datetime.fromtimestamp(due, ZoneInfo(self.timezone))
            return (local + timedelta(days=self.every_days)).timestamp()  # wall-clock days
        assert self.every_months is not None
        return add_months(due, self.every_months, self.timezone)

    def request(self, now: float, reason: dict[str, Any]) -> TicketRequest:
        return TicketRequest(
            device=self.device, fault=self.task, category=self.category,
            kind=Kind.PREVENTIVE, title=self.title or f"{self.device} {self.task}",
            complete_within=self.complete_within,
            source={"schedule": self.task, **reason},
        )


# Defaults from ../shared/domain.md, per device; a site's plan names its own devices.
def elevator_plan(device: str, start: float | None = None) -> list[ScheduleEntry]:
    """TSG T5002-2017: half-monthly, quarterly, half-yearly and yearly maintenance."""
    return [
        ScheduleEntry("elevator_half_monthly", device, "elevator", "半月维保", every_days=15, start=start),
        ScheduleEntry("elevator_quarterly", device, "elevator", "季度维保", every_months=3, start=start),
        ScheduleEntry("elevator_half_yearly", device, "elevator", "半年维保", every_months=6, start=start),
        ScheduleEntry("elevator_yearly", device, "elevator", "年度维保", every_months=12, start=start),
    ]


def water_tank_cleaning(device: str, start: float | None = None) -> ScheduleEntry:
    return ScheduleEntry("tank_cleaning", device, "water", "二次供水水箱清洗", every_months=6, start=start)


def septic_tank_check(device: str, start: float | None = None) -> ScheduleEntry:
    return ScheduleEntry("septic_check", device, "sewage", "化粪池检查", every_months=3, start=start)


def lightning_protection_test(device: str, start: float | None = None) -> ScheduleEntry:
    return ScheduleEntry("lightning_test", device, "lightning", "防雷检测", every_months=12, start=start)


class Schedule:
    """The plan's entries and, per entry, when it is next due (the state the store keeps)."""

    def __init__(self, entries: Iterable[ScheduleEntry]) -> None:
        self.entries = {e.key: e for e in entries}
        # calendar: {"next": ts}; usage: {"next": threshold, "last": last counter value}
        self.state: dict[str, dict[str, float]] = {}

    def due(
        self,
        now: float,
        counters: Mapping[str, Mapping[str, float]] | None = None,
        active: Container[tuple[str, str]] = (),
    ) -> list[TicketRequest]:
        """Preventive ticket requests due by `now`.

        `counters` maps device → counter → value (missing: the usage entry waits);
        `active` holds (device, task) of active tickets (`TicketBook.active_keys()`),
        whose due is absorbed by the ticket already there.
        """
        counters = counters or {}
        out: list[TicketRequest] = []
        for key, entry in self.entries.items():
            if entry.counter is None:
                reason = self._calendar_due(key, entry, now)
            else:
                value = counters.get(entry.device, {}).get(entry.counter)
                reason = None if value is None else self._usage_due(key, entry, value)
            if reason is not None and (entry.device, entry.task) not in active:
                out.append(entry.request(now, reason))
        return out

    def _calendar_due(self, key: str, entry: ScheduleEntry, now: float) -> dict[str, Any] | None:
        state = self.state.get(key)
        if state is None:
            first = entry.start if entry.start is not None else entry.next_after(now)
            state = self.state[key] = {"next": first}
        due = state["next"]
        if now < due:
            return None
        nxt = entry.next_after(due)
        while nxt <= now:  # catch up on cycles missed while down: one ticket, not several
            due, nxt = nxt, entry.next_after(nxt)
        state["next"] = nxt
        return {"due": due}

    def _usage_due(self, key: str, entry: ScheduleEntry, value: float) -> dict[str, Any] | None:
        assert entry.every is not None
        state = self.state.get(key)
        if state is None or value < state["last"]:  # first seen, or the counter was reset
            self.state[key] = {"next": (value // entry.every + 1) * entry.every, "last": value}
            return None
        state["last"] = value
        threshold = state["next"]
        if value < threshold:
            return None
        state["next"] = (value // entry.every + 1) * entry.every
        return {"counter": entry.counter, "value": value, "threshold": threshold}

    def load(self, state: Mapping[str, Mapping[str, float]]) -> None:
        """State as the store kept it; entries no longer in the plan are dropped."""
        self.state = {k: dict(v) for k, v in state.items() if k in self.entries}


def add_months(ts: float, months: int, timezone: str | None = None) -> float:
    """`ts` plus calendar months (in `timezone`, default UTC), the day clamped to the month's
    end (31 Jan + 1 = 28/29 Feb)."""
    dt = datetime.fromtimestamp(ts, ZoneInfo(timezone) if timezone else UTC)
    month0 = dt.month - 1 + months
    year, month = dt.year + month0 // 12, month0 % 12 + 1
    day = min(dt.day, calendar.monthrange(year, month)[1])
    return dt.replace(year=year, month=month, day=day).timestamp()
