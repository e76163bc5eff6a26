"""What the equipment stage sends: `equipment_event` per ledger entry, and per closed day
(and month) one `kpi` event and the KPI readings for InfluxDB.

Bodies are in the upstream contract's words (docs/upstream.md, docs/asyncapi.yaml):
times ISO-8601 UTC, durations in hours (minutes for ticket response times), rates as
fractions. Readings are stamped at the period's start, like the energy rollups, so a day's
figures sit on that day in a dashboard; a figure that has no value (no failure: no MTTR)
is left out, never sent as null.
"""

from __future__ import annotations

from typing import Any

from gateway.batch import Batch, Event
from gateway.equipment.kpi import Kpi
from gateway.equipment.service import ServiceKpis
from gateway.equipment.site_kpis import SiteKpis
from gateway.equipment.store import Entry
from gateway.sinks.contract import iso_utc

EQUIPMENT_EVENT = "equipment_event"
KPI_EVENT = "kpi"
OWN_EVENTS = (EQUIPMENT_EVENT, KPI_EVENT)


def equipment_event(entry: Entry) -> Event:
    """One ledger entry upstream (`…/events/equipment_event`); `entry` is its sequence
    number in the gateway's ledger, `hash` links it to the one before."""
    return Event(EQUIPMENT_EVENT, entry.ts, entry.device,
                 {"entry": entry.seq, "kind": entry.kind, "ref": entry.ref,
                  "details": entry.body, "hash": entry.hash})


def kpi_event(period: str, label: str, timezone: str, kpis: SiteKpis, service: ServiceKpis,
              names: dict[str, str]) -> Event:
    """The KPIs of one closed day or month (`…/events/kpi`), stamped at the period's end."""
    body: dict[str, Any] = {
        "period": period,
        "label": label,
        "timezone": timezone,
        "start": iso_utc(kpis.start),
        "end": iso_utc(kpis.end),
        "overall": {"devices": kpis.site.devices, **kpis.site.summary()},
        "devices": {d: k.summary() for d, k in kpis.devices.items()},
        "systems": {s: {"devices": k.devices, **k.summary()} for s, k in sorted(kpis.systems.items())},
        "buildings": {b: {"devices": k.devices, **k.summary()} for b, k in sorted(kpis.buildings.items())},
        "groups": [{"group": g.group.id, "name": g.group.name, "target": g.group.target,
                    "rate": None if g.rate is None else round(g.rate, 6), "below": g.below,
                    "devices": len(g.group.members)} for g in kpis.groups],
        "worst": [{"device": k.name, "name": names.get(k.name, k.name), "failures": len(k.failures),
                   "fault_h": round(k.seconds["fault"] / 3600.0, 4),
                   "down_h": round(k.down / 3600.0, 4)} for k in kpis.worst],
        "service": service.summary(),
    }
    return Event(KPI_EVENT, kpis.end, None, body)


def _points(kpi: Kpi, period: str) -> dict[str, float | int]:
    values: dict[str, float | int | None] = {
        f"availability_{period}": kpi.availability,
        f"downtime_{period}": round(kpi.down / 3600.0, 6),
        f"failures_{period}": len(kpi.failures),
        f"mttr_{period}": None if kpi.mttr is None else round(kpi.mttr / 3600.0, 6),
        f"mtbf_{period}": None if kpi.mtbf is None else round(kpi.mtbf / 3600.0, 6),
    }
    if kpi.observed <= 0:  # nothing seen: no downtime or failure count to speak of
        values = {f"availability_{period}": None}
    return {k: v for k, v in values.items() if v is not None}


def kpi_batches(site_id: str, period: str, kpis: SiteKpis, service: ServiceKpis) -> list[Batch]:
    """Readings of one closed period: per device, per intact-rate group (device = the
    group id) and for the site (device = the site id)."""
    out = []

    def batch(device: str, values: dict[str, float | int]) -> None:
        if values:
            out.append(Batch(device, kpis.start, tuple(values), list(values.values())))

    for device, k in kpis.devices.items():
        batch(device, _points(k, period))
    for g in kpis.groups:
        values: dict[str, float | int] = {f"intact_target_{period}": g.group.target}
        if g.rate is not None:
            values[f"intact_rate_{period}"] = g.rate
        batch(g.group.id, values)
    site = _points(kpis.site, period)
    rates = {"arrival_sla_rate": service.arrival_all.rate, "follow_up_rate": service.follow_up.rate,
             "planned_on_time_rate": service.planned.rate}
    site.update({f"{k}_{period}": v for k, v in rates.items() if v is not None})
    site[f"tickets_{period}"] = len(service.corrective)
    batch(site_id, site)
    return out
