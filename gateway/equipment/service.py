"""Service KPIs from tickets: SLA compliance, response times, escalations, planned work.

Tickets come from the rule engine's `tickets.db`, which keeps every ticket ever opened
with its steps and SLA clocks (the repair ledger). A ticket belongs to the period it was
opened in. The definitions (docs/equipment.md):

- arrival within SLA, by priority: of the corrective tickets whose arrival clock has a
  verdict, the share met (on site by the deadline). A verdict: arrived (met if by the
  deadline), or not arrived and the deadline passed (late), or cancelled after a breach
  (late). Still running before its deadline, or cancelled in time: no verdict yet;
- follow-up within 48 h (回访): the same over the follow-up clocks of resolved tickets;
- times from opening to accepted (dispatched, else arrived: arriving accepts it), to
  arrival and to resolution: mean and p90 (nearest rank: the ⌈0.9·n⌉-th smallest);
- escalations: tickets escalated at least once, and escalation levels in all;
- planned work (preventive tickets): done on time (resolved by the repair deadline, or
  resolved when the plan set none), done late, overdue (not resolved, deadline passed),
  open (not resolved, not yet due), cancelled; on-time rate = on time / (on time + late
  + overdue).
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from rules.tickets.model import Kind, Ticket

log = structlog.get_logger(__name__)

TICKETS_FILE = "tickets.db"
MET, LATE, PENDING = "met", "late", "pending"


def read_tickets(data_dir: Path) -> list[Ticket]:
    """Every ticket in `<data_dir>/tickets.db`, read-only (safe while the daemon writes);
    none when there is no such file. A row that does not parse is skipped and logged."""
    path = Path(data_dir) / TICKETS_FILE
    if not path.exists():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        db.execute("PRAGMA busy_timeout=5000")
        rows = db.execute("SELECT id, body FROM tickets").fetchall()
    except sqlite3.Error as exc:
        log.warning("tickets not readable; no service KPIs", path=str(path), error=str(exc))
        return []
    finally:
        db.close()
    out = []
    for ticket_id, body in rows:
        try:
            out.append(Ticket.from_dict(json.loads(body)))
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ticket row skipped", ticket=ticket_id, error=str(exc))
    return out


def verdict(ticket: Ticket, clock: str, now: float) -> str | None:
    """met, late, pending, or None when the ticket has no such clock."""
    c = ticket.clocks.get(clock)
    if c is None:
        return None
    if c.done_at is not None:
        return MET if c.done_at <= c.deadline else LATE
    if c.breached or (not c.stopped and now > c.deadline):
        return LATE
    return PENDING


def percentile(values: list[float], q: float) -> float | None:
    """Nearest rank: the ⌈q·n⌉-th smallest (q in (0, 1]); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


@dataclass(slots=True)
class Compliance:
    met: int = 0
    late: int = 0
    pending: int = 0

    def add(self, v: str | None) -> None:
        if v == MET:
            self.met += 1
        elif v == LATE:
            self.late += 1
        elif v == PENDING:
            self.pending += 1

    @property
    def rate(self) -> float | None:
        judged = self.met + self.late
        return self.met / judged if judged else None

    def summary(self) -> dict[str, Any]:
        rate = self.rate
        return {"met": self.met, "late": self.late, "pending": self.pending,
                "rate": None if rate is None else round(rate, 6)}


@dataclass(slots=True)
class Durations:
    values: list[float] = field(default_factory=list)

    @property
    def mean(self) -> float | None:
        return sum(self.values) / len(self.values) if self.values else None

    @property
    def p90(self) -> float | None:
        return percentile(self.values, 0.9)

    def summary(self) -> dict[str, Any]:
        minutes = lambda s: None if s is None else round(s / 60.0, 2)  # noqa: E731
        return {"n": len(self.values), "mean_min": minutes(self.mean), "p90_min": minutes(self.p90)}


@dataclass(slots=True)
class Planned:
    on_time: int = 0
    late: int = 0
    overdue: int = 0
    open: int = 0
    cancelled: int = 0

    @property
    def rate(self) -> float | None:
        judged = self.on_time + self.late + self.overdue
        return self.on_time / judged if judged else None

    def summary(self) -> dict[str, Any]:
        rate = self.rate
        return {"on_time": self.on_time, "late": self.late, "overdue": self.overdue,
                "open": self.open, "cancelled": self.cancelled,
                "rate": None if rate is None else round(rate, 6)}


@dataclass(slots=True)
class ServiceKpis:
    start: float
    end: float
    corrective: list[Ticket] = field(default_factory=list)
    preventive: list[Ticket] = field(default_factory=list)
    arrival: dict[str, Compliance] = field(default_factory=dict)  # priority → compliance
    follow_up: Compliance = field(default_factory=Compliance)
    accept: Durations = field(default_factory=Durations)
    arrive: Durations = field(default_factory=Durations)
    resolve: Durations = field(default_factory=Durations)
    escalated_tickets: int = 0
    escalations: int = 0
    breached_tickets: int = 0
    planned: Planned = field(default_factory=Planned)

    @property
    def arrival_all(self) -> Compliance:
        total = Compliance()
        for c in self.arrival.values():
            total.met, total.late, total.pending = (total.met + c.met, total.late + c.late,
                                                    total.pending + c.pending)
        return total

    def summary(self) -> dict[str, Any]:
        """The figures as the kpi event carries them."""
        return {
            "tickets": len(self.corrective),
            "arrival": {p: c.summary() for p, c in sorted(self.arrival.items())}
            | {"all": self.arrival_all.summary()},
            "follow_up": self.follow_up.summary(),
            "accept": self.accept.summary(),
            "arrive": self.arrive.summary(),
            "resolve": self.resolve.summary(),
            "escalated_tickets": self.escalated_tickets,
            "escalations": self.escalations,
            "breached_tickets": self.breached_tickets,
            "planned": self.planned.summary() | {"tickets": len(self.preventive)},
        }


def accepted_at(ticket: Ticket) -> float | None:
    """When someone took the ticket on: its dispatch, else its arrival."""
    return ticket.step_time("dispatch") or ticket.step_time("arrive")


def service_kpis(tickets: Iterable[Ticket], start: float, end: float, now: float) -> ServiceKpis:
    """The service KPIs of the tickets opened in [start, end), judged as of `now`."""
    out = ServiceKpis(start, end)
    for t in sorted(tickets, key=lambda t: t.opened_at):
        if not start <= t.opened_at < end:
            continue
        if t.kind is Kind.PREVENTIVE:
            out.preventive.append(t)
            _planned(out.planned, t, now)
            continue
        out.corrective.append(t)
        out.arrival.setdefault(t.priority.value, Compliance()).add(verdict(t, "arrival", now))
        out.follow_up.add(verdict(t, "follow_up", now))
        for durations, at in ((out.accept, accepted_at(t)), (out.arrive, t.step_time("arrive")),
                              (out.resolve, t.step_time("resolve"))):
            if at is not None:
                durations.values.append(at - t.opened_at)
        levels = sum(c.escalations for c in t.clocks.values())
        out.escalations += levels
        out.escalated_tickets += levels > 0
        out.breached_tickets += any(verdict(t, name, now) == LATE for name in t.clocks
                                    if name != "progress")
    return out


def _planned(planned: Planned, t: Ticket, now: float) -> None:
    resolved = t.step_time("resolve")
    repair = t.clocks.get("repair")
    if t.status.value == "cancelled" and resolved is None:
        planned.cancelled += 1
    elif resolved is not None:
        if repair is None or resolved <= repair.deadline:
            planned.on_time += 1
        else:
            planned.late += 1
    elif repair is not None and now > repair.deadline:
        planned.overdue += 1
    else:
        planned.open += 1
