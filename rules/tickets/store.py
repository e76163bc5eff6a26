"""Tickets and schedule state in SQLite, so both survive a restart.

Each ticket is one JSON row keyed by its id, written whole: tickets change a few times
an hour, so the simplicity beats a normalised schema. A batch of changes is one
transaction. The SLA clocks are deadlines in absolute time, so they keep running while
the gateway is down: the first `tick` after a restart reports what ran out meanwhile.
Closed and cancelled tickets stay in the table (the repair ledger); only active ones
and the ones awaiting follow-up are loaded.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

from gateway import sqlite
from rules.tickets.book import TicketBook
from rules.tickets.model import FINAL, Ticket
from rules.tickets.schedule import Schedule

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tickets (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS tickets_status ON tickets (status);
CREATE TABLE IF NOT EXISTS schedule (key TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
_FINAL = tuple(s.value for s in FINAL)


class TicketStore:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._db = sqlite.connect(self.path, schema=_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def save(
        self,
        tickets: Iterable[Ticket] = (),
        schedule: Mapping[str, Mapping[str, float]] | None = None,
        book: TicketBook | None = None,
    ) -> None:
        """One transaction: the changed tickets, the schedule state, the book's id counter."""
        db = self._db
        with sqlite.transaction(db, immediate=True):
            db.executemany(
                "INSERT OR REPLACE INTO tickets (id, status, body) VALUES (?, ?, ?)",
                [(t.id, t.status.value, json.dumps(t.to_dict(), ensure_ascii=False)) for t in tickets],
            )
            if schedule is not None:
                db.execute("DELETE FROM schedule")
                db.executemany(
                    "INSERT INTO schedule (key, body) VALUES (?, ?)",
                    [(k, json.dumps(v)) for k, v in schedule.items()],
                )
            if book is not None:
                db.executemany(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                    [("id_day", book.id_day), ("id_seq", str(book.id_seq))],
                )

    def commit(self, book: TicketBook, schedule: Schedule | None = None) -> None:
        """Save what changed in the book (and the schedule's state) in one transaction."""
        self.save(book.changed(), schedule.state if schedule is not None else None, book)

    def load_into(self, book: TicketBook, schedule: Schedule | None = None) -> None:
        """Fill a fresh book (and schedule) with what was saved before the restart."""
        marks = ",".join("?" * len(_FINAL))
        rows = self._db.execute(
            f"SELECT body FROM tickets WHERE status NOT IN ({marks})", _FINAL
        ).fetchall()
        meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        book.load(
            (Ticket.from_dict(json.loads(body)) for (body,) in rows),
            meta.get("id_day", ""),
            int(meta.get("id_seq", "0")),
        )
        if schedule is not None:
            rows = self._db.execute("SELECT key, body FROM schedule").fetchall()
            schedule.load({k: json.loads(body) for k, body in rows})

    def ticket(self, ticket_id: str) -> Ticket | None:
        """Any ticket ever saved, closed ones included (the ledger)."""
        row = self._db.execute("SELECT body FROM tickets WHERE id = ?", (ticket_id,)).fetchone()
        return Ticket.from_dict(json.loads(row[0])) if row else None
