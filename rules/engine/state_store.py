"""The engine's own state in SQLite (`rules_state.db`): what alarms.db and tickets.db
do not hold, kept so a restart changes nothing an operator or a ledger can see.

- `counter`: accumulated run hours and starts of derived points (a restart must not
  reset a pump's run hours, or a usage plan would never come due);
- `maintenance`: devices in maintenance mode and until when;
- `debouncer`: the hidden delays of rules that open tickets without an alarm;
- `sla_alarm`: which ticket and clock each SLA alarm watches (its alarm state is in
  alarms.db like any other alarm's).

One table of JSON rows keyed by (kind, key); each save is one transaction.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from gateway import sqlite

_SCHEMA = """
CREATE TABLE IF NOT EXISTS state (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (kind, key)
)
"""

COUNTER = "counter"
MAINTENANCE = "maintenance"
DEBOUNCER = "debouncer"
SLA_ALARM = "sla_alarm"


class RuleStateStore:
    """Rows of engine state by kind and key."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db = sqlite.connect(self.path, schema=_SCHEMA)

    def save(self, kind: str, rows: Mapping[str, Any], *, forget: Iterable[str] = ()) -> None:
        """Write these rows of one kind and drop `forget`, in one transaction."""
        gone = [(kind, key) for key in forget]
        if not rows and not gone:
            return
        values = [(kind, key, json.dumps(body, ensure_ascii=False)) for key, body in rows.items()]
        with sqlite.transaction(self._db, immediate=True):
            self._db.executemany(
                "INSERT INTO state (kind, key, body) VALUES (?, ?, ?) "
                "ON CONFLICT(kind, key) DO UPDATE SET body = excluded.body",
                values,
            )
            self._db.executemany("DELETE FROM state WHERE kind = ? AND key = ?", gone)

    def replace(self, kind: str, rows: Mapping[str, Any]) -> None:
        """Make the rows of one kind exactly `rows` (a set that shrinks as well as grows)."""
        values = [(kind, key, json.dumps(body, ensure_ascii=False)) for key, body in rows.items()]
        with sqlite.transaction(self._db, immediate=True):
            self._db.execute("DELETE FROM state WHERE kind = ?", (kind,))
            self._db.executemany("INSERT INTO state (kind, key, body) VALUES (?, ?, ?)", values)

    def load(self, kind: str) -> dict[str, Any]:
        rows = self._db.execute("SELECT key, body FROM state WHERE kind = ?", (kind,))
        return {key: json.loads(body) for key, body in rows}

    def close(self) -> None:
        self._db.close()
