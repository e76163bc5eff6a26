"""The configuration's SLA block and maintenance plans in the words `rules/tickets` uses.

A plan's `start:` is a date as a site engineer writes it, meaning midnight on the site
(Asia/Shanghai unless site.yaml says otherwise), not midnight UTC, which would be 08:00
on site.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from gateway.config.rule_models import SlaConfig
from rules.compile import PlannedTask
from rules.engine.derived import Counter
from rules.tickets import Schedule, ScheduleEntry, SlaPolicy


def sla_policy(config: SlaConfig) -> SlaPolicy:
    """The ticket book's policy from site.yaml `sla:` (durations already in seconds)."""
    return SlaPolicy(
        arrival_urgent=config.arrival_urgent,
        arrival_normal=config.arrival_normal,
        trapped_area=config.trapped_area,
        trapped_arrival=dict(config.trapped_arrival),
        follow_up_within=config.follow_up_within,
        progress_every=config.progress_every,
        repair_within=dict(config.repair_within),
        urgent_categories=frozenset(config.urgent_categories),
        warn_at=config.warn_at,
        escalation_chain=tuple(config.escalation_chain),
        escalation_step=config.escalation_step,
        contacts=dict(config.contacts),
    )


def local_midnight(day: date, timezone: str) -> float:
    """Seconds since the epoch at the start of `day` on the site's clock."""
    return datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(timezone)).timestamp()


def schedule_entry(plan: PlannedTask, timezone: str) -> ScheduleEntry:
    """One compiled maintenance task as the schedule's entry."""
    task = plan.task
    return ScheduleEntry(
        task=task.task,
        device=plan.device,
        category=task.category,
        title=task.title or task.task,
        every_days=task.every_days,
        every_months=task.every_months,
        start=local_midnight(task.start, timezone) if task.start is not None else None,
        counter=task.counter,
        every=task.every,
        complete_within=task.complete_within,
        timezone=timezone,
    )


def usage_counters(schedule: Schedule, latest_good: Callable[[str], Any],
                   counters: Mapping[str, Counter]) -> dict[str, dict[str, float]]:
    """Each usage plan's counter (device → counter → value): the latest good reading of
    the point, else the saved counter of a derived point not evaluated since a restart."""
    usage: dict[str, dict[str, float]] = {}
    for entry in schedule.entries.values():
        if entry.counter is None:
            continue
        point = f"{entry.device}.{entry.counter}"
        value = latest_good(point)
        if value is None and point in counters:
            value = counters[point].current
        if isinstance(value, int | float) and not isinstance(value, bool):
            usage.setdefault(entry.device, {})[entry.counter] = value
    return usage
