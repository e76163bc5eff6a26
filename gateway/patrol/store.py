"""`<data_dir>/patrol.db`: visits, judged rounds, and what the stage needs after a restart.

- `visit`: every visit, once (a message delivered twice, same checkpoint, time and card,
  is one visit);
- `round`: each judged round with what was expected, visited and missed: the ledger
  compliance is computed from, so a monthly report needs no running gateway
  (`read_compliance`);
- `state`: per plan since when it runs (rounds before that are not expected) and up to
  where it is judged; the last state of IO inputs read for rises.

Opened through gateway/sqlite.py (WAL); each call is one transaction.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from gateway import sqlite
from gateway.patrol.judge import RoundResult
from gateway.patrol.visits import Visit

FILE = "patrol.db"
PLAN = "plan"
INPUT = "input"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS visit (
    checkpoint TEXT NOT NULL,
    ts REAL NOT NULL,
    card TEXT NOT NULL,          -- '' when the checkpoint cannot tell who visited
    device TEXT NOT NULL,
    PRIMARY KEY (checkpoint, ts, card)
);
CREATE TABLE IF NOT EXISTS round (
    plan TEXT NOT NULL,
    start REAL NOT NULL,
    end REAL NOT NULL,
    window TEXT NOT NULL,
    day TEXT NOT NULL,           -- the local date the window starts on
    number INTEGER NOT NULL,
    rounds INTEGER NOT NULL,
    expected TEXT NOT NULL,      -- JSON list of checkpoint ids
    visited TEXT NOT NULL,       -- JSON {checkpoint: {ts, guard}}
    missed TEXT NOT NULL,        -- JSON list
    out_of_order TEXT NOT NULL,  -- JSON list
    n_expected INTEGER NOT NULL, -- len(expected), len(missed): rates without parsing JSON
    n_missed INTEGER NOT NULL,
    judged REAL NOT NULL,
    amended INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (plan, start)
);
CREATE TABLE IF NOT EXISTS state (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (kind, key)
);
"""


class PatrolStore:
    """The patrol ledger of one data dir."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db = sqlite.connect(self.path, schema=_SCHEMA)

    # -- visits --------------------------------------------------------------------------

    def add_visits(self, visits: Sequence[Visit], inputs: dict[str, bool]) -> list[Visit]:
        """Store visits and input states in one transaction; the visits that were new."""
        new: list[Visit] = []
        with sqlite.transaction(self._db, immediate=True):
            for v in visits:
                cursor = self._db.execute(
                    "INSERT OR IGNORE INTO visit (checkpoint, ts, card, device) VALUES (?, ?, ?, ?)",
                    (v.checkpoint, v.ts, v.card or "", v.device))
                if cursor.rowcount:
                    new.append(v)
            self._put(INPUT, inputs)
        return new

    def visits(self, checkpoints: Iterable[str], start: float, end: float) -> list[tuple[str, float, str | None]]:
        """(checkpoint, ts, card) of the visits to these checkpoints in [start, end), by time."""
        names = list(checkpoints)
        marks = ",".join("?" * len(names))
        rows = self._db.execute(
            f"SELECT checkpoint, ts, card FROM visit WHERE checkpoint IN ({marks}) "
            "AND ts >= ? AND ts < ? ORDER BY ts", (*names, start, end))
        return [(c, ts, card or None) for c, ts, card in rows]

    # -- rounds --------------------------------------------------------------------------

    def save_rounds(self, results: Sequence[RoundResult], judged: float, *, amended: bool = False,
                    plan_states: dict[str, dict[str, Any]] | None = None) -> None:
        """Rounds' judgements (replacing earlier ones) and the plans' states, in one transaction."""
        rows = []
        for result in results:
            r = result.round
            visited = {c: {"ts": v.ts, "guard": v.guard} for c, v in result.visited.items()}
            rows.append((r.plan, r.start, r.end, r.window, r.day.isoformat(), r.number, r.rounds,
                         _json(list(result.expected)), _json(visited), _json(list(result.missed)),
                         _json(list(result.out_of_order)), len(result.expected), len(result.missed),
                         judged, int(amended)))
        with sqlite.transaction(self._db, immediate=True):
            self._db.executemany(
                "INSERT OR REPLACE INTO round (plan, start, end, window, day, number, rounds, "
                "expected, visited, missed, out_of_order, n_expected, n_missed, judged, amended) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            if plan_states:
                self._put(PLAN, plan_states)

    def round_missed(self, plan: str, start: float) -> list[str] | None:
        """The checkpoints a judged round missed, or None when it is not judged."""
        row = self._db.execute("SELECT missed FROM round WHERE plan = ? AND start = ?",
                               (plan, start)).fetchone()
        return None if row is None else json.loads(row[0])

    def compliance(self, start: float, end: float) -> list[dict[str, Any]]:
        return compliance_of(self._db, start, end)

    def rate(self, plan: str, start: float, end: float) -> float | None:
        """Checkpoints visited / expected of the plan's rounds that started in [start, end)."""
        expected, missed = self._db.execute(
            "SELECT SUM(n_expected), SUM(n_missed) FROM round WHERE plan = ? AND start >= ? "
            "AND start < ?", (plan, start, end)).fetchone()
        return (expected - missed) / expected if expected else None

    # -- state ---------------------------------------------------------------------------

    def states(self, kind: str) -> dict[str, Any]:
        rows = self._db.execute("SELECT key, body FROM state WHERE kind = ?", (kind,))
        return {key: json.loads(body) for key, body in rows}

    def save_states(self, kind: str, rows: dict[str, Any]) -> None:
        with sqlite.transaction(self._db, immediate=True):
            self._put(kind, rows)

    def _put(self, kind: str, rows: dict[str, Any]) -> None:
        self._db.executemany(
            "INSERT INTO state (kind, key, body) VALUES (?, ?, ?) "
            "ON CONFLICT(kind, key) DO UPDATE SET body = excluded.body",
            [(kind, key, _json(body)) for key, body in rows.items()])

    def prune(self, before: float) -> int:
        """Drop visits and rounds older than `before`; how many rows went."""
        with sqlite.transaction(self._db, immediate=True):
            gone = self._db.execute("DELETE FROM visit WHERE ts < ?", (before,)).rowcount
            gone += self._db.execute("DELETE FROM round WHERE end < ?", (before,)).rowcount
        return gone

    def close(self) -> None:
        self._db.close()


def compliance_of(db: sqlite3.Connection, start: float, end: float) -> list[dict[str, Any]]:
    """Per plan, the judged rounds that started in [start, end): rounds expected and done
    (every checkpoint visited), checkpoint visits expected and made, the misses, and
    `rate` = checkpoints visited / checkpoints expected (None without a round)."""
    rows = db.execute(
        "SELECT plan, start, end, expected, missed FROM round WHERE start >= ? AND start < ? "
        "ORDER BY plan, start", (start, end))
    plans: dict[str, dict[str, Any]] = {}
    for plan, r_start, r_end, expected_json, missed_json in rows:
        expected, missed = json.loads(expected_json), json.loads(missed_json)
        entry = plans.setdefault(plan, {
            "plan": plan, "rounds_expected": 0, "rounds_done": 0, "checkpoints_expected": 0,
            "checkpoints_visited": 0, "missed": [], "rate": None})
        entry["rounds_expected"] += 1
        entry["rounds_done"] += not missed
        entry["checkpoints_expected"] += len(expected)
        entry["checkpoints_visited"] += len(expected) - len(missed)
        entry["missed"] += [{"checkpoint": c, "window_start": r_start, "window_end": r_end}
                            for c in missed]
    for entry in plans.values():
        if entry["checkpoints_expected"]:
            entry["rate"] = entry["checkpoints_visited"] / entry["checkpoints_expected"]
    return list(plans.values())


def read_compliance(data_dir: str | Path, start: float, end: float) -> list[dict[str, Any]]:
    """Patrol compliance from `<data_dir>/patrol.db`, without a running gateway (monthly
    reports): one dict per plan with judged rounds starting in [start, end), keys plan,
    rounds_expected, rounds_done, checkpoints_expected, checkpoints_visited, missed (a
    list of {checkpoint, window_start, window_end}, epoch seconds) and rate. [] when the
    gateway has judged no round there (or has no patrol.db)."""
    path = Path(data_dir) / FILE
    if not path.exists():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return compliance_of(db, start, end)
    finally:
        db.close()


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
