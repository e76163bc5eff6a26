"""Where the engine's state goes between calls: alarms.db, tickets.db, rules_state.db.

Each engine call collects what it changed and hands it over here once, so a batch that
moves ten alarms is one transaction, not ten. A write that fails (a full disk, a locked
file) is logged and kept for the next call: the engine carries on in memory, and the
state reaches the disk as soon as the disk takes it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import structlog

from rules.alarms import Alarm, AlarmStore
from rules.engine.state_store import DEBOUNCER, RuleStateStore
from rules.tickets import Schedule, Ticket, TicketBook, TicketStore

log = structlog.get_logger(__name__)


class EngineStores:
    """The three stores and what is waiting to be written to each."""

    def __init__(self, data_dir: Path) -> None:
        self.alarms = AlarmStore(data_dir / "alarms.db")
        self.tickets = TicketStore(data_dir / "tickets.db")
        self.state = RuleStateStore(data_dir / "rules_state.db")
        self._alarms: dict[str, Alarm] = {}
        self._forget: set[str] = set()
        self._debouncers: dict[str, Alarm] = {}
        self._tickets: dict[str, Ticket] = {}
        self._schedule_due = False
        self._saved_marks: dict[str, float | None] = {}
        self._rows: dict[str, dict[str, Any]] = {}  # kind → rows to upsert
        self._replace: dict[str, dict[str, Any]] = {}  # kind → the whole set

    # -- what changed ------------------------------------------------------------------

    def alarm(self, alarm: Alarm, *, hidden: bool = False) -> None:
        (self._debouncers if hidden else self._alarms)[alarm.id] = alarm
        self._forget.discard(alarm.id)

    def forget(self, alarm_ids: Iterable[str]) -> None:
        for alarm_id in alarm_ids:
            self._alarms.pop(alarm_id, None)
            self._forget.add(alarm_id)

    def tickets_changed(self, tickets: Iterable[Ticket]) -> None:
        for ticket in tickets:
            self._tickets[ticket.id] = ticket

    def schedule(self, schedule: Schedule) -> None:
        """Save the schedule when a due moved (a counter's last value alone is not worth a
        write per poll: after a restart it is read again)."""
        marks = {key: state.get("next") for key, state in schedule.state.items()}
        if marks != self._saved_marks:
            self._schedule_due = True

    def rows(self, kind: str, rows: Mapping[str, Any]) -> None:
        self._rows.setdefault(kind, {}).update(rows)

    def replace(self, kind: str, rows: Mapping[str, Any]) -> None:
        self._replace[kind] = dict(rows)

    # -- writing -----------------------------------------------------------------------

    def flush(self, book: TicketBook, schedule: Schedule) -> None:
        """Write everything pending; what fails stays pending."""
        if self._alarms or self._forget:
            with _logged("alarms"):
                self.alarms.save(self._alarms.values())
                if self._forget:
                    self.alarms.forget(self._forget)
                self._alarms, self._forget = {}, set()
        if self._tickets or self._schedule_due:
            with _logged("tickets"):
                self.tickets.save(self._tickets.values(), schedule.state, book)
                self._saved_marks = {k: s.get("next") for k, s in schedule.state.items()}
                self._tickets, self._schedule_due = {}, False
        if self._debouncers:
            self.rows(DEBOUNCER, {a.id: a.snapshot() for a in self._debouncers.values()})
            self._debouncers = {}
        for kind in list(self._rows):
            with _logged(kind):
                self.state.save(kind, self._rows[kind])
                del self._rows[kind]
        for kind in list(self._replace):
            with _logged(kind):
                self.state.replace(kind, self._replace[kind])
                del self._replace[kind]

    def loaded_schedule(self, schedule: Schedule) -> None:
        """The schedule as just loaded: nothing to write until a due moves."""
        self._saved_marks = {k: s.get("next") for k, s in schedule.state.items()}

    def close(self) -> None:
        for store in (self.alarms, self.tickets, self.state):
            store.close()


class _logged:
    """Log a failed write and go on; the caller's pending state is left in place."""

    def __init__(self, what: str) -> None:
        self.what = what

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: object) -> bool:
        if isinstance(exc, sqlite3.Error):
            log.error("rule state not saved; will retry", store=self.what, error=str(exc))
            return True
        return False
