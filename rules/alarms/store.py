"""Alarm state that survives a restart: one SQLite row per alarm, its snapshot as JSON.

A batch of changes is written in one transaction, so a crash leaves either the states
before the batch or after it, never half of one. The alarms are few (one per rule and
device) and change rarely, so the store is synchronous; the engine may call it from an
executor.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from gateway import sqlite
from rules.alarms.lifecycle import Alarm

_SCHEMA = """
CREATE TABLE IF NOT EXISTS alarms (
    id TEXT PRIMARY KEY NOT NULL,
    state TEXT NOT NULL
)
"""


class AlarmStore:
    """The saved snapshots of all alarms, keyed by alarm id."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db = sqlite.connect(self.path, schema=_SCHEMA)

    def save(self, alarms: Iterable[Alarm]) -> None:
        """Write these alarms' states in one transaction (the others are left as they are)."""
        rows = [(a.id, json.dumps(a.snapshot(), ensure_ascii=False, default=str)) for a in alarms]
        if not rows:
            return
        with sqlite.transaction(self._db, immediate=True):
            self._db.executemany(
                "INSERT INTO alarms (id, state) VALUES (?, ?) "
                "ON CONFLICT(id) DO UPDATE SET state = excluded.state",
                rows,
            )

    def load(self) -> dict[str, dict[str, Any]]:
        """Every saved snapshot by alarm id, for `Alarm.restore`."""
        return {id_: json.loads(state) for id_, state in self._db.execute("SELECT id, state FROM alarms")}

    def forget(self, alarm_ids: Iterable[str]) -> None:
        """Drop the saved state of alarms whose rule is gone from the configuration."""
        with sqlite.transaction(self._db, immediate=True):
            self._db.executemany("DELETE FROM alarms WHERE id = ?", [(i,) for i in alarm_ids])

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> AlarmStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
