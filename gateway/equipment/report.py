"""The site's monthly report: everything it says, gathered from the data dir.

Every figure comes from a store the gateway keeps, through the same functions the
daily KPIs use, so the report can be traced back to them:

- equipment KPIs, outages, failures: `equipment.db` (the ledger) via `site_kpis`;
- alarms by category (the device's system) and severity, alarms per day: the ledger's
  `alarm_raised` entries;
- service KPIs and the ticket list: `tickets.db` via `service.service_kpis`;
- patrol compliance: `patrol.db` via `gateway.patrol.store.read_compliance`, when the
  gateway has patrols;
- energy and water: `energy.db` via the monthly meters ledger (`gateway ledger`);
- warranties: the configuration's `asset:` blocks.

`build_report` gathers; `html.py`, `xlsx.py` and `pdf.py` render a `Report`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from gateway.energy.ledger import month_bounds
from gateway.energy.periods import Calendar
from gateway.equipment.kpi import Kpi, device_kpi, pooled
from gateway.equipment.ledger import ALARM_RAISED
from gateway.equipment.service import ServiceKpis, read_tickets, service_kpis
from gateway.equipment.site_kpis import (
    SiteKpis,
    Subject,
    groups,
    site_kpis,
    subjects,
    timelines,
)
from gateway.equipment.store import FILE, Entry, ReadOnlyLedger
from gateway.equipment.warranty import warranty_notices
from rules.tickets.model import Ticket

log = structlog.get_logger(__name__)

SEVERITIES = ("critical", "major", "minor", "warning")


@dataclass(slots=True)
class Day:
    """One day of the month as the charts show it."""

    label: str  # 10-05
    start: float
    end: float
    site: Kpi
    groups: dict[str, float | None]  # group → intact rate
    alarms: dict[str, int]  # severity → alarms raised


@dataclass(slots=True)
class Report:
    site_id: str
    site_name: str
    month: str
    timezone: str
    start: float
    end: float
    generated: float
    horizon: float  # min(end, generated): the report covers [start, horizon)
    subjects: dict[str, Subject]
    kpis: SiteKpis
    days: list[Day]
    alarms: dict[str, dict[str, int]]  # category → severity → raised
    alarm_entries: list[Entry]
    service: ServiceKpis
    patrol: list[dict[str, Any]] | None  # None: the gateway has no patrol module
    energy: Any | None  # gateway.energy.ledger.Ledger, None without energy.db
    warranties: list[Entry]
    entries: list[Entry] = field(default_factory=list)  # the month's ledger entries

    @property
    def complete(self) -> bool:
        return self.horizon >= self.end


def build_report(config: Any, data_dir: Path, month: str, now: float) -> Report:
    """The report of the local `month` (2026-10) as of `now`.

    FileNotFoundError when the data dir has no equipment ledger; ValueError for a month
    that is not one, or one that has not begun.
    """
    zone = config.site.timezone
    start, end = month_bounds(month, zone)
    if start >= now:
        raise ValueError(f"{month} has not begun")
    horizon = min(end, now)
    calendar = Calendar(zone)
    subjects_ = subjects(config)
    groups_ = groups(config)
    severities = tuple(config.kpi.fault_severities)
    with ReadOnlyLedger(Path(data_dir) / FILE) as reader:
        lines = timelines(reader, subjects_, start, horizon, severities)
        entries = reader.entries(start=start, end=horizon)
    kpis = site_kpis(subjects_, groups_, lines, start, horizon, config.kpi.worst_devices)
    alarm_entries = [e for e in entries if e.kind == ALARM_RAISED]
    days = []
    day = start
    while day < horizon:
        following = min(calendar.next(day, "day"), horizon)
        per_device = {d: device_kpi(t, day, following) for d, t in lines.items()}
        raised = Counter(e.body.get("severity", "") for e in alarm_entries if day <= e.ts < following)
        days.append(Day(calendar.local(day).strftime("%m-%d"), day, following,
                        pooled("site", per_device.values()),
                        {g.id: pooled(g.id, [per_device[m] for m in g.members if m in per_device]).availability
                         for g in groups_},
                        {s: raised.get(s, 0) for s in SEVERITIES}))
        day = following
    tickets: list[Ticket] = read_tickets(data_dir)
    # as of the report's end: ended, or ending within kpi.warranty_notice
    warranties = warranty_notices(config, calendar, horizon, ())
    return Report(
        site_id=config.site.id, site_name=config.site.name, month=month, timezone=zone,
        start=start, end=end, generated=now, horizon=horizon, subjects=subjects_, kpis=kpis,
        days=days, alarms=_alarms_by_category(alarm_entries, subjects_, config),
        alarm_entries=alarm_entries, service=service_kpis(tickets, start, horizon, now),
        patrol=_patrol(data_dir, start, horizon), energy=_energy(config, data_dir, month),
        warranties=warranties,
        entries=entries,
    )


def category_of(device: str, subjects_: dict[str, Subject], config: Any) -> str:
    """An alarm's category: its device's system; an energy group's alarm is `energy`, an
    intact-rate group's `kpi`; anything else `other`."""
    if device in subjects_:
        return subjects_[device].system or "other"
    if any(g.id == device for g in config.energy.groups):
        return "energy"
    if any(g.id == device for g in config.kpi.groups):
        return "kpi"
    return "other"


def _alarms_by_category(entries: list[Entry], subjects_: dict[str, Subject],
                        config: Any) -> dict[str, dict[str, int]]:
    table: dict[str, dict[str, int]] = {}
    for e in entries:
        row = table.setdefault(category_of(e.device, subjects_, config), dict.fromkeys(SEVERITIES, 0))
        severity = e.body.get("severity", "")
        if severity in row:
            row[severity] += 1
    return dict(sorted(table.items()))


def _patrol(data_dir: Path, start: float, end: float) -> list[dict[str, Any]] | None:
    try:
        from gateway.patrol.store import read_compliance
    except ImportError:  # a gateway without patrols
        return None
    try:
        return read_compliance(data_dir, start, end)
    except Exception as exc:  # its file unreadable: the rest of the report still stands
        log.warning("patrol compliance not readable", error=repr(exc))
        return []


def _energy(config: Any, data_dir: Path, month: str) -> Any | None:
    from gateway.energy.ledger import build_ledger
    from gateway.energy.reader import EnergyReader

    try:
        reader = EnergyReader(Path(data_dir) / "energy.db")
    except FileNotFoundError:
        return None
    with reader:
        return build_ledger(config, reader, month)
