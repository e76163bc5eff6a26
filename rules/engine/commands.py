"""What operators do to alarms, tickets and devices: the platform over MQTT and the local
CLI call these methods of the engine.

Each command first lets time catch up with the alarm it touches (a delay or a shelve
that ran out is applied at the command's time, so the operator acts on what a tick
would have shown), returns the events it caused and saves them. A refusal is a
ValueError whose text is for the operator: `AlarmError` or `TicketError` when the state
does not allow the step, `RuleCommandError` for an id nobody knows. What a refused
command had already caused (an expired shelve) comes out with the next call.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from gateway.batch import Event
from rules.alarms import Alarm
from rules.engine import events
from rules.engine.call import Call
from rules.engine.errors import RuleCommandError, unknown
from rules.tickets import TicketEvent

if TYPE_CHECKING:
    from rules.engine.engine import RuleEngine

TICKET_STEPS = ("dispatch", "arrive", "progress", "resolve", "follow_up", "close", "cancel", "note")


class Commands:
    """The command methods of `RuleEngine`."""

    def acknowledge(self: RuleEngine, alarm_id: str, by: str, comment: str | None = None,
                    now: float | None = None) -> list[Event]:
        """The operator has seen the alarm."""
        alarm = self._visible_alarm(alarm_id)
        with self._command(now) as out:
            self._alarm_command(out, alarm, lambda: alarm.acknowledge(out.now, by, comment))
        return self._events(out)

    def shelve(self: RuleEngine, alarm_id: str, by: str, *, until: float,
               reason: str | None = None, now: float | None = None) -> list[Event]:
        """Hide the alarm until `until` (a second shelve moves the end)."""
        alarm = self._visible_alarm(alarm_id)
        with self._command(now) as out:
            self._alarm_command(out, alarm, lambda: alarm.shelve(out.now, until, by, reason))
        return self._events(out)

    def unshelve(self: RuleEngine, alarm_id: str, by: str, now: float | None = None) -> list[Event]:
        alarm = self._visible_alarm(alarm_id)
        with self._command(now) as out:
            self._alarm_command(out, alarm, lambda: alarm.unshelve(out.now, by))
        return self._events(out)

    def set_in_service(self: RuleEngine, alarm_id: str, in_service: bool, by: str,
                       comment: str | None = None, now: float | None = None) -> list[Event]:
        """Take the alarm out of service (a sensor being replaced) or put it back."""
        alarm = self._visible_alarm(alarm_id)
        with self._command(now) as out:
            self._alarm_command(
                out, alarm, lambda: alarm.out_of_service(out.now, not in_service, by, comment))
        return self._events(out)

    def update_ticket(self: RuleEngine, ticket_id: str, step: str, by: str, *, note: str = "",
                      owner: str | None = None, backup: str | None = None,
                      now: float | None = None) -> list[Event]:
        """Move a ticket on: dispatch, arrive, progress, resolve, follow_up, close, cancel,
        or add a note."""
        if step not in TICKET_STEPS:
            raise unknown("ticket step", step, TICKET_STEPS)
        self._known_ticket(ticket_id)
        book = self.book
        with self._command(now) as out:
            happened: list[TicketEvent] = []
            if step == "dispatch":
                happened = book.dispatch(ticket_id, out.now, by, owner=owner, backup=backup,
                                         note=note)
            elif step == "progress":
                happened = book.report_progress(ticket_id, out.now, by, note)
            elif step == "note":
                if not note.strip():
                    raise RuleCommandError("a note needs some text")
                book.add_note(ticket_id, out.now, by, note)
            else:
                happened = getattr(book, step)(ticket_id, out.now, by, note)
            self._ticket_events(out, happened)
            self._refresh_sla(out)
        return self._events(out)

    def set_maintenance(self: RuleEngine, device: str, on: bool, by: str, *,
                        duration: float | None = None, reason: str | None = None,
                        now: float | None = None) -> list[Event]:
        """Put a device in maintenance mode (its alarms suppressed) until now + duration
        (default `rules.maintenance_default`), or take it out."""
        known = {d.id for d in self.config.devices} | self.alarm_set.devices()
        if device not in known:
            raise unknown("device", device, known)
        if duration is not None and duration <= 0:
            raise RuleCommandError(f"maintenance of {device}: the duration must be positive")
        with self._command(now) as out:
            if on:
                until = out.now + (duration or self.config.rules.maintenance_default)
                self.maintenance.enter(device, out.now, until, by, reason)
                out.maintenance = True
                out.events.append(events.maintenance(device, True, until, out.now, by=by,
                                                     reason=reason))
                for alarm in list(self.alarm_set.of_device(device)):
                    self._step(out, alarm, lambda a=alarm: a.suppress(out.now, True))
            elif device not in self.maintenance:
                raise RuleCommandError(f"device {device} is not in maintenance mode")
            else:
                self._leave_maintenance(out, device, by=by, reason=reason)
        return self._events(out)

    # -- helpers -------------------------------------------------------------------------

    @contextmanager
    def _command(self: RuleEngine, now: float | None) -> Iterator[Call]:
        """One command's call; on a refusal, what it had already caused waits in the backlog."""
        self._stores_open()
        out = Call(self.clock() if now is None else now)
        try:
            yield out
        except BaseException:
            self._backlog = self._finish(out)
            raise

    def _alarm_command(self: RuleEngine, out: Call, alarm: Alarm, command) -> None:
        self._step(out, alarm, lambda: alarm.tick(out.now))
        self._step(out, alarm, command)
        self._check_flood(out)

    def _events(self: RuleEngine, out: Call) -> list[Event]:
        return [item for item in self._finish(out) if isinstance(item, Event)]

    def _visible_alarm(self: RuleEngine, alarm_id: str) -> Alarm:
        alarm = self.alarm_set.alarms.get(alarm_id)
        if alarm is None:
            raise unknown("alarm", alarm_id, self.alarm_set.alarms)
        return alarm

    def _known_ticket(self: RuleEngine, ticket_id: str) -> None:
        known = {t.id for t in self.book.tickets()}
        if ticket_id in known:
            return
        stores = self._stores_open()
        done = stores.tickets.ticket(ticket_id)
        if done is not None:  # closed or cancelled, kept in the ledger
            raise RuleCommandError(f"ticket {ticket_id} is {done.status.value}; it can no "
                                   "longer be changed")
        raise unknown("ticket", ticket_id, known)
