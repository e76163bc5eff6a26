"""Warranty notices: a device whose warranty ends within `kpi.warranty_notice` (30 days
by default) gets a `warranty_ending` entry, one whose warranty has ended a
`warranty_ended` entry; each once per warranty end date (a new date, after an extension,
is noticed again).

The warranty covers its last day: it ends at local midnight after `asset.warranty_end`.
"""

from __future__ import annotations

from collections.abc import Container
from datetime import timedelta
from typing import Any

from gateway.energy.periods import Calendar
from gateway.equipment.ledger import WARRANTY_ENDED, WARRANTY_ENDING
from gateway.equipment.store import Entry

DAY = 86400.0


def warranty_notices(config: Any, calendar: Calendar, now: float,
                     known: Container[tuple[str, str, str]]) -> list[Entry]:
    """Entries for warranties ending soon or ended, leaving out (device, kind, date) in `known`."""
    notice = config.kpi.warranty_notice
    out = []
    for device in config.devices:
        end_day = device.asset.warranty_end
        if end_day is None or not device.enabled:
            continue
        ends = calendar.at(end_day + timedelta(days=1))
        left = ends - now
        if left <= 0:
            kind = WARRANTY_ENDED
        elif left <= notice:
            kind = WARRANTY_ENDING
        else:
            continue
        ref = end_day.isoformat()
        if (device.id, kind, ref) in known:
            continue
        body = {"warranty_end": ref, "days_left": max(0, int(left // DAY)),
                "vendor": device.asset.vendor, "serial": device.asset.serial}
        out.append(Entry(now, device.id, kind, ref, {k: v for k, v in body.items() if v is not None}))
    return out
