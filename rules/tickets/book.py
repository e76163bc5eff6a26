"""The ticket book: every ticket of the site, one active ticket per device and fault.

The engine calls `open` when a rule asks for a ticket, the step methods when the
platform (or the CLI) moves a ticket on, and `tick` on a timer for the SLA clocks.
Every call returns the events it caused; `changed()` hands the store what to save.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from rules.tickets.model import (
    FINAL,
    STEP_EVENTS,
    Grade,
    Kind,
    Priority,
    Step,
    Ticket,
    TicketError,
    TicketEvent,
    TicketRequest,
)
from rules.tickets.sla import Clock, SlaPolicy

SYSTEM = "gateway"  # who did a step nobody in particular did (a rule opening a ticket)


class TicketBook:
    """Tickets by id, with an index of the active ones by (device, fault)."""

    def __init__(self, policy: SlaPolicy | None = None) -> None:
        self.policy = policy or SlaPolicy()
        self._tickets: dict[str, Ticket] = {}
        self._active: dict[tuple[str, str], str] = {}
        self._changed: set[str] = set()
        # Ids read T-<UTC day>-<n>, n counting up within the day (the upstream schema's form).
        self.id_day = ""
        self.id_seq = 0

    # -- reading ---------------------------------------------------------------------

    def get(self, ticket_id: str) -> Ticket:
        try:
            return self._tickets[ticket_id]
        except KeyError:
            raise TicketError(f"no ticket {ticket_id!r}") from None

    def find(self, device: str, fault: str) -> Ticket | None:
        """The active ticket for this device and fault, if any."""
        ticket_id = self._active.get((device, fault))
        return self._tickets[ticket_id] if ticket_id else None

    def tickets(self) -> list[Ticket]:
        return list(self._tickets.values())

    def active_keys(self) -> set[tuple[str, str]]:
        """(device, fault) of every active ticket; a schedule skips these."""
        return set(self._active)

    def changed(self) -> list[Ticket]:
        """Tickets changed since the last call, for the store to save in one transaction."""
        if not self._changed:  # nearly always: asked after every batch
            return []
        out = [self._tickets[i] for i in sorted(self._changed)]
        self._changed.clear()
        return out

    # -- opening ---------------------------------------------------------------------

    def open(self, request: TicketRequest, now: float) -> tuple[Ticket, list[TicketEvent]]:
        """A new ticket, or the active one for the same device and fault with its count raised."""
        existing = self.find(request.device, request.fault)
        if existing is not None:
            existing.count += 1
            existing.last_seen = now
            self._changed.add(existing.id)
            return existing, [self._event(existing, "recurred", now, count=existing.count)]
        ticket = self._new(request, now)
        self._tickets[ticket.id] = ticket
        self._active[ticket.key] = ticket.id
        self._changed.add(ticket.id)
        body: dict[str, Any] = {"state": ticket.to_state()}
        if ticket.emergency_plan:
            body["emergency_plan"] = True
        return ticket, [self._event(ticket, "opened", now, **body)]

    def _new(self, request: TicketRequest, now: float) -> Ticket:
        policy = self.policy
        # urgent repairs are faults in water, power and gas; planned work never is
        urgent = request.kind is Kind.CORRECTIVE and (
            request.trapped or request.category in policy.urgent_categories)
        priority = request.priority or (Priority.URGENT if urgent else Priority.NORMAL)
        ticket = Ticket(
            id=self._next_id(now), kind=request.kind, device=request.device,
            fault=request.fault, category=request.category, priority=priority,
            grade=request.grade, title=request.title or f"{request.device} {request.fault}",
            opened_at=now, trapped=request.trapped, owner=request.owner,
            backup=request.backup, last_seen=now,
            emergency_plan=request.grade is Grade.MAJOR, source=dict(request.source),
            history=[Step("open", now, SYSTEM)],
        )
        if request.kind is Kind.CORRECTIVE:
            within = policy.arrival_within(priority is Priority.URGENT, request.trapped)
            ticket.clocks["arrival"] = Clock("arrival", now, now + within)
        repair = request.complete_within or policy.repair_within.get(request.category)
        if repair is not None:
            ticket.clocks["repair"] = Clock("repair", now, now + repair)
        else:  # no deadline for the work: the owner reports progress instead
            ticket.clocks["progress"] = Clock("progress", now, now + policy.progress_every)
        return ticket

    def _next_id(self, now: float) -> str:
        day = datetime.fromtimestamp(now, UTC).strftime("%Y%m%d")
        if day != self.id_day:
            self.id_day, self.id_seq = day, 0
        self.id_seq += 1
        ticket_id = f"T-{day}-{self.id_seq:04d}"
        while ticket_id in self._tickets:  # a clock set back: never reuse an id
            self.id_seq += 1
            ticket_id = f"T-{day}-{self.id_seq:04d}"
        return ticket_id

    # -- steps -----------------------------------------------------------------------

    def dispatch(
        self, ticket_id: str, now: float, by: str, owner: str | None = None,
        backup: str | None = None, note: str = "",
    ) -> list[TicketEvent]:
        """Someone accepted the ticket; it names its owner (首问负责制) and a backup."""
        ticket = self.get(ticket_id)
        now = _not_before(ticket, now)
        ticket.check_step("dispatch")
        ticket.owner = owner or ticket.owner
        ticket.backup = backup or ticket.backup
        if not ticket.owner:
            raise TicketError(f"ticket {ticket_id} needs a named owner to be dispatched")
        return self._step(ticket, "dispatch", now, by, note, owner=ticket.owner, backup=ticket.backup)

    def arrive(self, ticket_id: str, now: float, by: str, note: str = "") -> list[TicketEvent]:
        ticket = self.get(ticket_id)
        now = _not_before(ticket, now)
        events = self._step(ticket, "arrive", now, by, note)
        self._finish(ticket, "arrival", now)
        return events

    def resolve(self, ticket_id: str, now: float, by: str, note: str = "") -> list[TicketEvent]:
        ticket = self.get(ticket_id)
        now = _not_before(ticket, now)
        events = self._step(ticket, "resolve", now, by, note)
        self._finish(ticket, "repair", now)
        self._finish(ticket, "progress", now)
        self._active.pop(ticket.key, None)
        if ticket.kind is Kind.CORRECTIVE:  # 回访: every repair is followed up with the owner
            ticket.clocks["follow_up"] = Clock("follow_up", now, now + self.policy.follow_up_within)
        return events

    def follow_up(self, ticket_id: str, now: float, by: str, note: str = "") -> list[TicketEvent]:
        ticket = self.get(ticket_id)
        now = _not_before(ticket, now)
        events = self._step(ticket, "follow_up", now, by, note)
        self._finish(ticket, "follow_up", now)
        return events

    def close(self, ticket_id: str, now: float, by: str, note: str = "") -> list[TicketEvent]:
        ticket = self.get(ticket_id)
        return self._step(ticket, "close", _not_before(ticket, now), by, note)

    def cancel(self, ticket_id: str, now: float, by: str, note: str = "") -> list[TicketEvent]:
        ticket = self.get(ticket_id)
        now = _not_before(ticket, now)
        events = self._step(ticket, "cancel", now, by, note)
        for clock in ticket.clocks.values():
            if clock.running:
                clock.stopped = True
        self._active.pop(ticket.key, None)
        return events

    def report_progress(
        self, ticket_id: str, now: float, by: str, note: str = ""
    ) -> list[TicketEvent]:
        """A progress report meets the running progress clock and starts the next one."""
        ticket = self.get(ticket_id)
        if not ticket.active:
            raise TicketError(f"ticket {ticket_id} is {ticket.status.value}; no progress to report")
        ticket.history.append(Step("progress", now, by, note))
        if "progress" in ticket.clocks:
            ticket.clocks["progress"] = Clock("progress", now, now + self.policy.progress_every)
        self._changed.add(ticket.id)
        return [self._event(ticket, "progress", now, by=by, note=note)]

    def add_note(self, ticket_id: str, now: float, by: str, note: str) -> None:
        ticket = self.get(ticket_id)
        ticket.history.append(Step("note", now, by, note))
        self._changed.add(ticket.id)

    def _step(
        self, ticket: Ticket, step: str, now: float, by: str, note: str, **body: Any
    ) -> list[TicketEvent]:
        ticket.status = ticket.check_step(step)
        ticket.history.append(Step(step, now, by, note))
        self._changed.add(ticket.id)
        return [self._event(ticket, STEP_EVENTS[step], now, by=by, note=note, **body)]

    @staticmethod
    def _finish(ticket: Ticket, clock: str, now: float) -> None:
        if clock in ticket.clocks:
            ticket.clocks[clock].finish(now)

    # -- clocks ----------------------------------------------------------------------

    def tick(self, now: float) -> list[TicketEvent]:
        """Warnings, breaches and escalations due by `now`, each emitted once."""
        events: list[TicketEvent] = []
        for ticket in self._tickets.values():
            if ticket.status in FINAL:
                continue

            def recipient(role: str, t: Ticket = ticket) -> str | None:
                if role == "owner":
                    return t.owner or t.backup
                if role == "backup":
                    return t.backup
                return self.policy.contacts.get(role, role)

            for clock in ticket.clocks.values():
                for kind, body in clock.advance(now, self.policy, recipient):
                    events.append(self._event(ticket, kind, now, **body))
                    self._changed.add(ticket.id)
        return events

    # -- persistence -----------------------------------------------------------------

    def load(self, tickets: Iterable[Ticket], id_day: str = "", id_seq: int = 0) -> None:
        """Tickets as the store kept them; the clocks carry on from where they were."""
        for ticket in tickets:
            self._tickets[ticket.id] = ticket
            if ticket.active:
                self._active[ticket.key] = ticket.id
        self.id_day, self.id_seq = id_day, id_seq

    def forget(self, ticket_ids: Iterable[str]) -> None:
        """Drop closed and cancelled tickets from memory (the store keeps their history)."""
        for ticket_id in ticket_ids:
            ticket = self._tickets.get(ticket_id)
            if ticket is not None and ticket.status in FINAL:
                del self._tickets[ticket_id]

    @staticmethod
    def _event(ticket: Ticket, kind: str, now: float, **body: Any) -> TicketEvent:
        return TicketEvent(kind, now, ticket.id, ticket.device, body)


__all__ = ["TicketBook", "SYSTEM"]


def _not_before(ticket: Ticket, now: float) -> float:
    """A step is never dated before the one it follows: after the wall clock is set back,
    a time to arrive or to resolve must not come out negative."""
    last = ticket.history[-1].at if ticket.history else ticket.opened_at
    return max(now, last)
