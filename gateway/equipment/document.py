"""The report as a document: key figures, then sections of charts and tables, in one
language. The HTML, PDF and xlsx renderers all draw this one document, so the three
formats say the same thing in the same order.

A table's cells keep their numbers (the xlsx keeps them as numbers); each column has a
kind (`pct`, `hours`, `minutes`, `int`, `time`, `text`) that says how it is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gateway.equipment import charts
from gateway.equipment.kpi import Kpi
from gateway.equipment.report import SEVERITIES, Report
from gateway.equipment.service import accepted_at, verdict
from gateway.equipment.timeline import DOWN_STATES, FAULT, UNKNOWN
from gateway.equipment.words import Words

H = 3600.0


@dataclass(slots=True)
class Table:
    id: str  # the xlsx sheet's stem
    title: str
    columns: list[tuple[str, str]]  # (key, kind)
    headers: list[str]
    rows: list[list[Any]]
    empty: str = ""  # said instead of an empty table
    html_limit: int | None = None  # the page shows this many rows; the xlsx all


@dataclass(slots=True)
class Section:
    id: str
    title: str
    figures: list[charts.Figure] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    note: str = ""


@dataclass(slots=True)
class Card:
    label: str
    value: str
    note: str = ""
    alert: bool = False


@dataclass(slots=True)
class Document:
    lang: str
    title: str
    subtitle: str
    meta: list[str]
    cards: list[Card]
    sections: list[Section]
    sources: list[str]
    words: Words


def _table(w: Words, id_: str, title: str, columns: list[tuple[str, str]], rows: list[list[Any]],
           empty: str = "", html_limit: int | None = None) -> Table:
    return Table(id_, title, columns, [w(k) for k, _ in columns], rows, empty, html_limit)


def _h(seconds: float | None) -> float | None:
    return None if seconds is None else seconds / H


def _kpi_row(k: Kpi) -> list[Any]:
    s = k.seconds
    return [k.devices, k.availability, _h(k.observed), _h(k.up), _h(s["maintenance"]), _h(s[FAULT]),
            _h(s["offline"]), _h(s[UNKNOWN]), len(k.failures), _h(k.mtbf), _h(k.mttr)]


_KPI_COLUMNS = [("devices", "int"), ("availability", "pct"), ("observed_h", "hours"), ("up_h", "hours"),
                ("maintenance_h", "hours"), ("fault_h", "hours"), ("offline_h", "hours"),
                ("unknown_h", "hours"), ("failures", "int"), ("mtbf", "hours"), ("mttr", "hours")]


def build_document(report: Report, lang: str = "en") -> Document:
    w = Words(lang, report.timezone)
    k = report.kpis
    subtitle = f"{report.site_name} — {report.month}"
    meta = [f"{w('generated')}: {w.time(report.generated)}", f"{w('timezone')}: {report.timezone}"]
    if not report.complete:
        meta.append(w("open_month", until=w.time(report.horizon)))
    service = report.service
    patrol_rate = _patrol_rate(report.patrol)
    below = [g for g in k.groups if g.below]
    cards = [
        Card(w("site_availability"), w.text("pct", k.site.availability)),
        Card(w("failures"), str(len(k.site.failures)), f"MTBF {w.text('hours', _h(k.site.mtbf))} h · "
             f"MTTR {w.text('hours', _h(k.site.mttr))} h"),
        Card(w("arrival_sla"), w.text("pct", service.arrival_all.rate),
             f"{service.arrival_all.met}/{service.arrival_all.met + service.arrival_all.late}",
             alert=service.arrival_all.late > 0),
        Card(w("follow_up_48h"), w.text("pct", service.follow_up.rate),
             f"{service.follow_up.met}/{service.follow_up.met + service.follow_up.late}",
             alert=service.follow_up.late > 0),
        Card(w("planned_on_time"), w.text("pct", service.planned.rate),
             f"{w('overdue')}: {service.planned.overdue}", alert=service.planned.overdue > 0),
        Card(w("patrol_rate"), w.text("pct", patrol_rate) if report.patrol else "–"),
        Card(w("alarms_raised"), str(len(report.alarm_entries))),
        Card(w("groups_below"), f"{len(below)}/{len(k.groups)}", ", ".join(g.group.name for g in below),
             alert=bool(below)),
    ]
    sections = [_equipment(report, w), _alarms(report, w), _service(report, w), _patrol(report, w),
                _energy(report, w), _warranty(report, w)]
    first = report.entries[0].seq if report.entries else None
    last = report.entries[-1].seq if report.entries else None
    sources = [
        f"equipment.db: {len(report.entries)} ledger entries" + (f" (#{first}–#{last})" if first else ""),
        f"tickets.db: {len(service.corrective)} + {len(service.preventive)} tickets",
        "patrol.db" if report.patrol is not None else "patrol: —",
        "energy.db" if report.energy is not None else "energy.db: —",
        w("definitions"),
    ]
    return Document(lang, w("report"), subtitle, meta, cards, sections, sources, w)


def _patrol_rate(patrol: list[dict[str, Any]] | None) -> float | None:
    if not patrol:
        return None
    expected = sum(p.get("checkpoints_expected") or 0 for p in patrol)
    visited = sum(p.get("checkpoints_visited") or 0 for p in patrol)
    return visited / expected if expected else None


def _equipment(report: Report, w: Words) -> Section:
    k = report.kpis
    days = [d.label for d in report.days]
    section = Section("equipment", w("equipment"))
    section.figures.append(charts.lines(w("daily_availability"), days,
                                        [charts.Series(w("site"), [d.site.availability for d in report.days],
                                                       charts.PALETTE[0])]))
    systems = sorted(k.systems)
    section.figures.append(charts.bars(
        w("downtime_by_system"), [w.system(s) for s in systems],
        [charts.Series(w(state), [k.systems[s].seconds[state] / H for s in systems], colour)
         for state, colour in zip(DOWN_STATES, ("#7e57c2", "#e53935", "#90a4ae"), strict=True)],
        fmt=lambda v: f"{v:g}"))
    if k.groups:
        target = min(g.group.target for g in k.groups)
        section.figures.append(charts.lines(
            w("daily_intact"), days,
            [charts.Series(g.group.name, [d.groups.get(g.group.id) for d in report.days],
                           charts.PALETTE[(i + 1) % len(charts.PALETTE)]) for i, g in enumerate(k.groups)],
            target=(f"{w('target')} {target:.0%}", target)))
    section.tables.append(_table(w, "systems", w("by_system"), [("system", "text"), *_KPI_COLUMNS],
                                 [[w.system(s), *_kpi_row(k.systems[s])] for s in systems]
                                 + [[w("site"), *_kpi_row(k.site)]]))
    section.tables.append(_table(w, "buildings", w("by_building"), [("building", "text"), *_KPI_COLUMNS],
                                 [[b, *_kpi_row(kpi)] for b, kpi in sorted(k.buildings.items())]))
    days_below = {g.group.id: sum(1 for d in report.days if d.groups.get(g.group.id) is not None
                                  and d.groups[g.group.id] < g.group.target) for g in k.groups}
    section.tables.append(_table(
        w, "groups", w("groups"),
        [("group", "text"), ("name", "text"), ("devices", "int"), ("target", "pct"), ("rate", "pct"),
         ("days_below", "int"), ("state_now", "text")],
        [[g.group.id, g.group.name, len(g.group.members), g.group.target, g.rate,
          days_below[g.group.id], w("below") if g.below else w("met_target")] for g in k.groups],
        w("no_groups")))
    section.tables.append(_table(
        w, "worst", w("worst"),
        [("device", "text"), ("name", "text"), ("system", "text"), ("failures", "int"),
         ("fault_h", "hours"), ("down_h", "hours"), ("availability", "pct")],
        [[d.name, report.subjects[d.name].name, w.system(report.subjects[d.name].system),
          len(d.failures), _h(d.seconds[FAULT]), _h(d.down), d.availability] for d in k.worst],
        w("no_failures")))
    section.tables.append(_table(
        w, "devices", w("devices_table"),
        [("device", "text"), ("name", "text"), ("system", "text"), ("building", "text"),
         *_KPI_COLUMNS[1:]],
        [[d, report.subjects[d].name, w.system(report.subjects[d].system),
          report.subjects[d].building or "", *_kpi_row(kpi)[1:]] for d, kpi in k.devices.items()]))
    section.tables.append(_table(
        w, "outages", w("outages"),
        [("device", "text"), ("name", "text"), ("start", "time"), ("end", "time"),
         ("duration_h", "hours"), ("reasons", "text"), ("alarm_names", "text")],
        [[o.device, report.subjects[o.device].name, o.start, o.end, _h(o.duration),
          ", ".join(w(r) for r in o.reasons), ", ".join(o.alarms)] for o in k.site.outages],
        w("no_outages"), html_limit=60))
    section.tables.append(_table(
        w, "failures", w("failure_list"),
        [("device", "text"), ("name", "text"), ("start", "time"), ("end", "time"),
         ("duration_h", "hours"), ("alarm_names", "text")],
        [[f.device, report.subjects[f.device].name, f.start, f.end, _h(f.duration), ", ".join(f.alarms)]
         for f in k.site.failures], w("no_failures"), html_limit=60))
    return section


def _alarms(report: Report, w: Words) -> Section:
    section = Section("alarms", w("alarms"))
    section.figures.append(charts.bars(
        w("alarms_per_day"), [d.label for d in report.days],
        [charts.Series(w(s), [d.alarms[s] for d in report.days], charts.SEVERITY_COLOURS[s])
         for s in SEVERITIES]))
    rows = [[w.system(c), *(row[s] for s in SEVERITIES), sum(row.values())]
            for c, row in report.alarms.items()]
    if rows:
        rows.append([w("total"), *(sum(r[i + 1] for r in rows) for i in range(len(SEVERITIES))),
                     sum(r[-1] for r in rows)])
    section.tables.append(_table(w, "alarms", w("alarms_by_category"),
                                 [("category", "text"), *((s, "int") for s in SEVERITIES), ("total", "int")],
                                 rows, w("no_alarms")))
    return section


def _service(report: Report, w: Words) -> Section:
    s = report.service
    section = Section("service", w("service"))
    compliance = [("priority", "text"), ("judged", "int"), ("met", "int"), ("late", "int"),
                  ("pending", "int"), ("rate", "pct")]
    rows = [[w(p), c.met + c.late, c.met, c.late, c.pending, c.rate] for p, c in sorted(s.arrival.items())]
    a = s.arrival_all
    rows.append([w("all"), a.met + a.late, a.met, a.late, a.pending, a.rate])
    section.tables.append(_table(w, "arrival", w("arrival_by_priority"), compliance, rows))
    f = s.follow_up
    section.tables.append(_table(w, "follow_up", w("follow_up"), compliance,
                                 [[w("all"), f.met + f.late, f.met, f.late, f.pending, f.rate]]))
    section.tables.append(_table(
        w, "response", w("response_times"),
        [("measure", "text"), ("n", "int"), ("mean_min", "minutes"), ("p90_min", "minutes")],
        [[w(name), len(d.values), None if d.mean is None else d.mean / 60,
          None if d.p90 is None else d.p90 / 60]
         for name, d in (("accept", s.accept), ("arrive", s.arrive), ("resolve", s.resolve))]))
    section.tables.append(_table(
        w, "escalations", w("escalations"),
        [("measure", "text"), ("n", "int")],
        [[w("escalated_tickets"), s.escalated_tickets], [w("escalation_levels"), s.escalations],
         [w("breached_tickets"), s.breached_tickets]]))
    p = s.planned
    section.tables.append(_table(
        w, "planned", w("planned"),
        [("n", "int"), ("on_time", "int"), ("late", "int"), ("overdue", "int"), ("open", "int"),
         ("cancelled", "int"), ("rate", "pct")],
        [[len(s.preventive), p.on_time, p.late, p.overdue, p.open, p.cancelled, p.rate]]))
    now = report.generated
    tickets = sorted(s.corrective + s.preventive, key=lambda t: t.opened_at)
    section.tables.append(_table(
        w, "tickets", w("tickets"),
        [("ticket", "text"), ("device", "text"), ("kind", "text"), ("priority", "text"),
         ("title", "text"), ("opened", "time"), ("accepted", "time"), ("arrived", "time"),
         ("resolved", "time"), ("followed_up", "time"), ("closed", "time"), ("status", "text"),
         ("arrival", "text")],
        [[t.id, t.device, w(t.kind.value), w(t.priority.value), t.title, t.opened_at, accepted_at(t),
          t.step_time("arrive"), t.step_time("resolve"), t.step_time("follow_up"),
          t.step_time("close") or t.step_time("cancel"), w(t.status.value),
          w(verdict(t, "arrival", now) or "") if "arrival" in t.clocks else ""] for t in tickets],
        w("no_tickets"), html_limit=80))
    return section


def _patrol(report: Report, w: Words) -> Section:
    section = Section("patrol", w("patrol"))
    plans = report.patrol or []
    section.tables.append(_table(
        w, "patrol", w("patrol_plans"),
        [("plan", "text"), ("rounds_expected", "int"), ("rounds_done", "int"),
         ("checkpoints_expected", "int"), ("checkpoints_visited", "int"), ("missed", "int"),
         ("rate", "pct")],
        [[p.get("plan"), p.get("rounds_expected"), p.get("rounds_done"), p.get("checkpoints_expected"),
          p.get("checkpoints_visited"), len(p.get("missed") or []), p.get("rate")] for p in plans],
        w("no_patrol")))
    missed = [[p.get("plan"), m.get("checkpoint"), m.get("window_start"), m.get("window_end")]
              for p in plans for m in p.get("missed") or []]
    if missed:
        section.tables.append(_table(w, "patrol_missed", w("missed"),
                                     [("plan", "text"), ("ref", "text"), ("start", "time"), ("end", "time")],
                                     missed, html_limit=40))
    return section


def _energy(report: Report, w: Words) -> Section:
    section = Section("energy", w("energy"))
    ledger = report.energy
    if ledger is None:
        section.note = w("no_energy")
        return section
    section.tables.append(_table(
        w, "meters", w("meters"),
        [("meter", "text"), ("counter", "text"), ("name", "text"), ("commodity", "text"), ("unit", "text"),
         ("consumption", "number"), ("estimated_share", "pct"), ("flags", "text")],
        [[m.meter, m.counter, m.name or "", w.system(m.commodity or ""), m.unit or "", m.consumption,
          m.estimated_share, ", ".join(f"{k} {v}" for k, v in m.flags.items())] for m in ledger.meters],
        w("no_energy")))
    section.tables.append(_table(
        w, "meter_groups", w("meter_groups"),
        [("group", "text"), ("name", "text"), ("commodity", "text"), ("master_total", "number"),
         ("members_total", "number"), ("loss", "number"), ("loss_rate", "pct")],
        [[g.group, g.name or "", w.system(g.commodity), g.master_total, g.members_total, g.loss,
          g.loss_rate] for g in ledger.groups]))
    return section


def _warranty(report: Report, w: Words) -> Section:
    section = Section("warranty", w("warranty"))
    rows = []
    for e in report.warranties:
        state = w("ended") if e.kind == "warranty_ended" else w("ends_in", days=e.body.get("days_left"))
        rows.append([e.device, report.subjects[e.device].name if e.device in report.subjects else e.device,
                     e.body.get("vendor", ""), e.body.get("serial", ""), e.ref, state])
    section.tables.append(_table(
        w, "warranty", w("warranty"),
        [("device", "text"), ("name", "text"), ("vendor", "text"), ("serial", "text"),
         ("warranty_end", "text"), ("warranty_state", "text")], rows, w("no_warranty")))
    return section
