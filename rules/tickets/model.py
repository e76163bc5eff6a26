"""What a maintenance ticket is: its fields, its life cycle and the events it emits.

Pure data and transition rules; the SLA clocks live in `sla.py` and the collection that
enforces one open ticket per device and fault lives in `book.py`. Times are seconds since
the epoch (UTC), always passed in, so every behaviour is testable with a fixed clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from rules.tickets.sla import Clock, iso


class Kind(StrEnum):
    CORRECTIVE = "corrective"  # a fault to repair, raised by a rule or an alarm
    PREVENTIVE = "preventive"  # planned maintenance, raised by a schedule


class Priority(StrEnum):
    URGENT = "urgent"
    NORMAL = "normal"


class Grade(StrEnum):
    GENERAL = "general"  # goes to the repair team
    MAJOR = "major"  # goes to the emergency group and starts the emergency plan


class Status(StrEnum):
    OPEN = "open"
    DISPATCHED = "dispatched"
    ON_SITE = "on_site"
    RESOLVED = "resolved"
    FOLLOWED_UP = "followed_up"
    CLOSED = "closed"
    CANCELLED = "cancelled"


# Which step leads from which status to which. Arrival straight from open is allowed:
# the property's own staff often reach the fault before anyone dispatches them.
STEPS: dict[str, tuple[frozenset[Status], Status]] = {
    "dispatch": (frozenset({Status.OPEN}), Status.DISPATCHED),
    "arrive": (frozenset({Status.OPEN, Status.DISPATCHED}), Status.ON_SITE),
    "resolve": (frozenset({Status.ON_SITE}), Status.RESOLVED),
    "follow_up": (frozenset({Status.RESOLVED}), Status.FOLLOWED_UP),
    "close": (frozenset({Status.FOLLOWED_UP}), Status.CLOSED),
    "cancel": (frozenset({Status.OPEN, Status.DISPATCHED, Status.ON_SITE}), Status.CANCELLED),
}
# The event each step emits.
STEP_EVENTS = {
    "dispatch": "dispatched",
    "arrive": "arrived",
    "resolve": "resolved",
    "follow_up": "followed_up",
    "close": "closed",
    "cancel": "cancelled",
}
# Before resolution the fault is still being worked on: a repeat of it is the same job.
# After resolution a repeat is a new fault that needs its own dispatch and clocks.
ACTIVE = frozenset({Status.OPEN, Status.DISPATCHED, Status.ON_SITE})
FINAL = frozenset({Status.CLOSED, Status.CANCELLED})


class TicketError(ValueError):
    """A step the ticket's life cycle does not allow, said in words an operator reads."""


@dataclass(slots=True)
class TicketRequest:
    """What a rule or a schedule asks for; the book turns it into a ticket (or a recurrence)."""

    device: str
    fault: str  # with the device, the key: one active ticket per device and fault
    category: str = "general"
    kind: Kind = Kind.CORRECTIVE
    title: str = ""
    priority: Priority | None = None  # None: urgent for the policy's urgent categories
    grade: Grade = Grade.GENERAL
    trapped: bool = False  # passengers trapped in an elevator: the rescue clock applies
    owner: str | None = None
    backup: str | None = None
    complete_within: float | None = None  # seconds; a deadline for resolution, if any
    source: dict[str, Any] = field(default_factory=dict)  # rule, alarm or schedule entry


@dataclass(slots=True)
class Step:
    """One step of the history: who did what, when (the audit trail the ledgers need)."""

    step: str
    at: float
    by: str
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "at": self.at, "by": self.by, "note": self.note}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Step:
        return cls(d["step"], d["at"], d["by"], d.get("note", ""))


@dataclass(slots=True)
class Ticket:
    id: str
    kind: Kind
    device: str
    fault: str
    category: str
    priority: Priority
    grade: Grade
    title: str
    opened_at: float
    trapped: bool = False
    owner: str | None = None
    backup: str | None = None
    status: Status = Status.OPEN
    count: int = 1  # occurrences of the fault while this ticket was active
    last_seen: float = 0.0
    emergency_plan: bool = False
    clocks: dict[str, Clock] = field(default_factory=dict)
    history: list[Step] = field(default_factory=list)
    source: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str]:
        return (self.device, self.fault)

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    def step_time(self, step: str) -> float | None:
        """When `step` last happened, or None."""
        for s in reversed(self.history):
            if s.step == step:
                return s.at
        return None

    def check_step(self, step: str) -> Status:
        """The status `step` leads to, or a TicketError naming what is allowed instead."""
        sources, target = STEPS[step]
        if self.kind is Kind.PREVENTIVE and step == "close" and self.status is Status.RESOLVED:
            return target  # planned maintenance has no owner to follow up with
        if self.status not in sources:
            allowed = sorted(s for s, (src, _) in STEPS.items() if self.status in src)
            if self.kind is Kind.PREVENTIVE and self.status is Status.RESOLVED:
                allowed.append("close")
            raise TicketError(
                f"ticket {self.id} is {self.status.value}; cannot {step} it"
                f" (allowed: {', '.join(allowed) or 'nothing, it is ' + self.status.value})"
            )
        return target

    def to_state(self) -> dict[str, Any]:
        """The current state as the upstream `tickets/<id>` message carries it."""
        running = [c for c in self.clocks.values() if c.running]
        due = min((c.deadline for c in running), default=None)
        state = {
            "type": "ticket_state",
            "ticket": self.id,
            "device": self.device,
            "fault": self.fault,
            "kind": self.kind.value,
            "category": self.category,
            "state": self.status.value,
            "priority": self.priority.value,
            "grade": self.grade.value,
            "emergency_plan": self.emergency_plan,
            "trapped": self.trapped,
            "title": self.title,
            "owner": self.owner,
            "backup": self.backup,
            "count": self.count,
            "opened": iso(self.opened_at),
            "sla": {name: c.to_state() for name, c in self.clocks.items()},
            "history": [
                {"step": s.step, "at": iso(s.at), "by": s.by, "note": s.note}
                for s in self.history
            ],
        }
        if due is not None:  # the nearest running deadline; none once all steps are done
            state["due"] = iso(due)
        return state

    def to_dict(self) -> dict[str, Any]:
        """Everything, JSON-serialisable, for the store."""
        return {
            "id": self.id, "kind": self.kind.value, "device": self.device,
            "fault": self.fault, "category": self.category,
            "priority": self.priority.value, "grade": self.grade.value, "title": self.title,
            "opened_at": self.opened_at, "trapped": self.trapped, "owner": self.owner,
            "backup": self.backup, "status": self.status.value, "count": self.count,
            "last_seen": self.last_seen, "emergency_plan": self.emergency_plan,
            "clocks": {n: c.to_dict() for n, c in self.clocks.items()},
            "history": [s.to_dict() for s in self.history], "source": self.source,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Ticket:
        return cls(
            id=d["id"], kind=Kind(d["kind"]), device=d["device"], fault=d["fault"],
            category=d["category"], priority=Priority(d["priority"]), grade=Grade(d["grade"]),
            title=d["title"], opened_at=d["opened_at"], trapped=d["trapped"],
            owner=d["owner"], backup=d["backup"], status=Status(d["status"]),
            count=d["count"], last_seen=d["last_seen"], emergency_plan=d["emergency_plan"],
            clocks={n: Clock.from_dict(c) for n, c in d["clocks"].items()},
            history=[Step.from_dict(s) for s in d["history"]], source=d.get("source", {}),
        )


@dataclass(slots=True, frozen=True)
class TicketEvent:
    """Something that happened to a ticket; the engine puts it in the outbox."""

    type: str  # opened, recurred, dispatched, ..., sla_warning, sla_breached, escalated
    ts: float
    ticket: str
    device: str
    body: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "ticket_event", "event": self.type, "ts": self.ts,
            "ticket": self.ticket, "device": self.device, **self.body,
        }

