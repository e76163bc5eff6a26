"""The energy stage's SQLite file, `<data_dir>/energy.db`: the write side.

What the monthly ledger (台账) and a restart need, nothing more:

- `readings`: counter readings with their tracked total, where they came from (`poll`,
  `manual`, `replacement`), who entered them and their flags (rollover, reset, jump,
  resumed, replaced). Polls are thinned (one kept per counter every `KEEP_EVERY`
  seconds, plus every reading that flagged something, closed a period or the one just
  before it); manual readings and replacements are always kept. Removed after
  `energy.keep_days`.
- `trackers`: each counter's state (tracker, open periods, night window), saved with the
  readings it belongs to, so a restart continues the totals.
- `replacements`, `rollups` (per meter and period: consumption, estimated, opening and
  closing totals and raw readings), `group_rollups`, `snapshots` (handover readings of
  a household), `events` (reset, jump, replaced). Kept for good: they are the ledger.

Each stage call writes in one transaction. Synchronous NORMAL: a power cut may roll back
the last commits, which costs nothing that matters since a counter is cumulative (the
next reading counts from the state that survived). Reading: `gateway.energy.reader`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway import sqlite
from gateway.energy.periods import Calendar
from gateway.energy.reader import EnergyReader  # noqa: F401  (the read side, re-exported)

FILE = "energy.db"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS readings (
    device TEXT NOT NULL, point TEXT NOT NULL, ts REAL NOT NULL, raw REAL NOT NULL,
    total REAL NOT NULL, source TEXT NOT NULL, entered_by TEXT, flags TEXT
);
CREATE INDEX IF NOT EXISTS readings_series ON readings (device, point, ts);
CREATE INDEX IF NOT EXISTS readings_ts ON readings (ts);
CREATE TABLE IF NOT EXISTS trackers (
    device TEXT NOT NULL, point TEXT NOT NULL, body TEXT NOT NULL, PRIMARY KEY (device, point)
);
CREATE TABLE IF NOT EXISTS replacements (
    device TEXT NOT NULL, point TEXT NOT NULL, ts REAL NOT NULL, old_final REAL NOT NULL,
    new_initial REAL NOT NULL, previous REAL, credited REAL NOT NULL, entered_by TEXT
);
CREATE TABLE IF NOT EXISTS rollups (
    device TEXT NOT NULL, point TEXT NOT NULL, period TEXT NOT NULL,
    start REAL NOT NULL, start_local TEXT NOT NULL, end REAL NOT NULL, end_local TEXT NOT NULL,
    consumption REAL NOT NULL, estimated INTEGER NOT NULL,
    opening_total REAL NOT NULL, closing_total REAL NOT NULL,
    opening_raw REAL, closing_raw REAL,
    PRIMARY KEY (device, point, period, start)
);
CREATE INDEX IF NOT EXISTS rollups_period ON rollups (period, start);
CREATE TABLE IF NOT EXISTS group_rollups (
    group_id TEXT NOT NULL, period TEXT NOT NULL,
    start REAL NOT NULL, start_local TEXT NOT NULL, end REAL NOT NULL, end_local TEXT NOT NULL,
    consumption REAL, members REAL, loss REAL, loss_rate REAL,
    estimated INTEGER NOT NULL, missing TEXT NOT NULL,
    PRIMARY KEY (group_id, period, start)
);
CREATE TABLE IF NOT EXISTS snapshots (
    household TEXT NOT NULL, ts REAL NOT NULL, ts_local TEXT NOT NULL, entered_by TEXT,
    device TEXT NOT NULL, point TEXT NOT NULL, raw REAL, total REAL, unit TEXT, reading_ts REAL
);
CREATE INDEX IF NOT EXISTS snapshots_household ON snapshots (household, ts);
CREATE TABLE IF NOT EXISTS events (
    ts REAL NOT NULL, device TEXT NOT NULL, point TEXT, kind TEXT NOT NULL, body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_ts ON events (ts);
"""

KEEP_EVERY = 900.0  # seconds between two kept poll readings of one counter

Key = tuple[str, str]


def _json(body: Any) -> str:
    return json.dumps(body, ensure_ascii=False)


@dataclass(slots=True)
class Writes:
    """Everything one stage call writes; committed in one transaction."""

    calendar: Calendar
    readings: list[tuple] = field(default_factory=list)
    states: dict[Key, dict[str, Any]] = field(default_factory=dict)
    rollups: list[tuple] = field(default_factory=list)
    group_rollups: list[tuple] = field(default_factory=list)
    replacements: list[tuple] = field(default_factory=list)
    snapshots: list[tuple] = field(default_factory=list)
    events: list[tuple] = field(default_factory=list)
    prune_before: float | None = None  # retention: remove readings older than this

    def __bool__(self) -> bool:
        return any((self.readings, self.states, self.rollups, self.group_rollups,
                    self.replacements, self.snapshots, self.events)) or \
            self.prune_before is not None

    def then(self, later: Writes) -> Writes:
        """These writes followed by `later`'s, as one (in place): a call whose commit failed
        is written with the next call's (a counter's newer state replaces its older one)."""
        self.readings += later.readings
        self.states.update(later.states)
        self.rollups += later.rollups
        self.group_rollups += later.group_rollups
        self.replacements += later.replacements
        self.snapshots += later.snapshots
        self.events += later.events
        prune = [p for p in (self.prune_before, later.prune_before) if p is not None]
        self.prune_before = max(prune, default=None)
        return self

    def reading(self, device: str, point: str, ts: float, raw: float, total: float, *,
                source: str = "poll", by: str | None = None, flags: Iterable[str] = ()) -> None:
        self.readings.append((device, point, ts, raw, total, source, by,
                              ",".join(flags) or None))

    def rollup(self, device: str, point: str, closed: Any) -> None:
        """A closed period (`rollup.Closed`)."""
        cal = self.calendar
        self.rollups.append((
            device, point, closed.period, closed.start, cal.iso(closed.start), closed.end,
            cal.iso(closed.end), closed.consumption, int(closed.estimated),
            closed.opening_total, closed.closing_total, closed.opening_raw, closed.closing_raw))

    def group_rollup(self, r: Any) -> None:
        """A closed group period (`groups.GroupRollup`)."""
        cal = self.calendar
        self.group_rollups.append((
            r.group, r.period, r.start, cal.iso(r.start), r.end, cal.iso(r.end), r.consumption,
            r.members, r.loss, r.loss_rate, int(r.estimated), _json(r.missing)))

    def replacement(self, device: str, point: str, ts: float, old_final: float,
                    new_initial: float, previous: float | None, credited: float,
                    by: str | None) -> None:
        self.replacements.append((device, point, ts, old_final, new_initial, previous,
                                  credited, by))

    def snapshot(self, household: str, ts: float, by: str | None, device: str, point: str,
                 raw: float | None, total: float | None, unit: str | None,
                 reading_ts: float | None) -> None:
        self.snapshots.append((household, ts, self.calendar.iso(ts), by, device, point, raw,
                               total, unit, reading_ts))

    def event(self, ts: float, device: str, point: str | None, kind: str,
              body: dict[str, Any]) -> None:
        self.events.append((ts, device, point, kind, _json(body)))


class EnergyStore:
    """The write side of energy.db, owned by the stage (one thread at a time)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db = sqlite.connect(self.path, schema=_SCHEMA, synchronous="NORMAL",
                                  busy_timeout_ms=5000)

    def commit(self, w: Writes) -> int:
        """Write one call's changes in one transaction (nothing when there are none);
        returns how many readings the retention removed."""
        if not w:
            return 0
        db = self._db
        pruned = 0
        with sqlite.transaction(db, immediate=True):
            db.executemany("INSERT INTO readings VALUES (?, ?, ?, ?, ?, ?, ?, ?)", w.readings)
            db.executemany(
                "INSERT INTO trackers (device, point, body) VALUES (?, ?, ?) "
                "ON CONFLICT(device, point) DO UPDATE SET body = excluded.body",
                [(d, p, _json(body)) for (d, p), body in w.states.items()])
            db.executemany("INSERT OR REPLACE INTO rollups VALUES "
                           "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", w.rollups)
            db.executemany("INSERT OR REPLACE INTO group_rollups VALUES "
                           "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", w.group_rollups)
            db.executemany("INSERT INTO replacements VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                           w.replacements)
            db.executemany("INSERT INTO snapshots VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           w.snapshots)
            db.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?)", w.events)
            if w.prune_before is not None:
                pruned = db.execute("DELETE FROM readings WHERE ts < ?",
                                    (w.prune_before,)).rowcount
        return pruned

    def states(self) -> dict[Key, dict[str, Any]]:
        """Every counter's saved state."""
        rows = self._db.execute("SELECT device, point, body FROM trackers")
        return {(d, p): json.loads(body) for d, p, body in rows}

    def reading_at_or_before(self, device: str, point: str,
                             ts: float) -> tuple[float, float, float] | None:
        """(ts, raw, total) of the last kept reading at or before `ts`."""
        row = self._db.execute(
            "SELECT ts, raw, total FROM readings WHERE device = ? AND point = ? AND ts <= ? "
            "ORDER BY ts DESC LIMIT 1", (device, point, ts)).fetchone()
        return None if row is None else (row[0], row[1], row[2])

    def group_closed_upto(self, group: str, period: str) -> float | None:
        """The start of the group's latest stored period."""
        row = self._db.execute("SELECT MAX(start) FROM group_rollups WHERE group_id = ? "
                               "AND period = ?", (group, period)).fetchone()
        return row[0]

    def meter_rollups_after(self, keys: Iterable[Key], period: str,
                            after: float) -> list[tuple[str, str, float, float, float, bool]]:
        """(device, point, start, end, consumption, estimated) of these counters' periods
        starting after `after`, oldest first: a group's periods to finish after a restart."""
        out = []
        for device, point in keys:
            rows = self._db.execute(
                "SELECT device, point, start, end, consumption, estimated FROM rollups "
                "WHERE device = ? AND point = ? AND period = ? AND start > ? ORDER BY start",
                (device, point, period, after))
            out.extend((d, p, s, e, c, bool(est)) for d, p, s, e, c, est in rows)
        out.sort(key=lambda r: r[2])
        return out

    def close(self) -> None:
        self._db.close()
