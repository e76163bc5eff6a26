"""The read side of `<data_dir>/energy.db`, for the ledger, the CLI and reports.

`EnergyReader(path)` opens the file read-only (it works while the daemon writes: WAL)
and answers in plain rows (NamedTuples; `._asdict()` for JSON). Times are epoch seconds;
`*_local` columns are the site's local time with its offset, as the stage wrote them.
Intervals are half-open, `start <= x < end`; None leaves that side open.

- `readings_between(start, end, device=, point=)` → [Reading]: kept counter readings,
  oldest first (polls thinned to one per 15 minutes per counter; every manual reading,
  replacement and flagged reading).
- `reading_at_or_before(device, point, ts)` → Reading | None: the opening or closing
  reading of a period when no rollup has it.
- `latest(device=)` → [Reading]: the newest kept reading of each counter.
- `rollups(period, start, end, device=, point=)` → [Rollup]: "hour" | "day" | "month"
  periods whose start is in [start, end): consumption, estimated, opening and closing
  totals and raw readings. A month's ledger line is `rollups("month", m0, m1)`.
- `group_rollups(period, start, end, group=)` → [GroupRollupRow]: consumption, members,
  loss, loss_rate (None where not computable), estimated, missing meters.
- `snapshots(month=, household=)` → [Snapshot]: handover readings; `month` "2026-11"
  (local), all rows of one snapshot share `ts`.
- `replacements(start, end, device=)` → [Replacement]: old final and new initial
  readings, the consumption credited, who recorded it.
- `events(start, end, device=, kind=)` → [MeterEvent]: reset, jump, replaced.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any, NamedTuple


class Reading(NamedTuple):
    device: str
    point: str
    ts: float
    raw: float
    total: float
    source: str  # poll | manual | replacement
    by: str | None
    flags: tuple[str, ...]


class Rollup(NamedTuple):
    device: str
    point: str
    period: str
    start: float
    start_local: str
    end: float
    end_local: str
    consumption: float
    estimated: bool
    opening_total: float
    closing_total: float
    opening_raw: float | None
    closing_raw: float | None


class GroupRollupRow(NamedTuple):
    group: str
    period: str
    start: float
    start_local: str
    end: float
    end_local: str
    consumption: float | None
    members: float | None
    loss: float | None
    loss_rate: float | None
    estimated: bool
    missing: list[str]


class Snapshot(NamedTuple):
    household: str
    ts: float
    ts_local: str
    by: str | None
    device: str
    point: str
    reading: float | None  # the raw reading, as on the dial
    total: float | None
    unit: str | None
    reading_ts: float | None  # when that reading was taken


class Replacement(NamedTuple):
    device: str
    point: str
    ts: float
    old_final: float
    new_initial: float
    previous: float | None  # the old meter's last reading seen
    credited: float
    by: str | None


class MeterEvent(NamedTuple):
    ts: float
    device: str
    point: str | None
    kind: str
    body: dict[str, Any]


def _where(conditions: list[tuple[str, Any]]) -> tuple[str, list[Any]]:
    used = [(sql, value) for sql, value in conditions if value is not None]
    if not used:
        return "", []
    return " WHERE " + " AND ".join(sql for sql, _ in used), [value for _, value in used]


def _reading(row: tuple) -> Reading:
    device, point, ts, raw, total, source, by, flags = row
    return Reading(device, point, ts, raw, total, source, by,
                   tuple(flags.split(",")) if flags else ())


_READING = "SELECT device, point, ts, raw, total, source, entered_by, flags FROM readings"


class EnergyReader:
    """Read-only queries on energy.db (see the module docstring for the API)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            self.path = self.path / "energy.db"
        if not self.path.exists():
            raise FileNotFoundError(f"no energy database at {self.path}")
        self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True,
                                   check_same_thread=False)
        self._db.execute("PRAGMA busy_timeout=5000")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> EnergyReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def readings_between(self, start: float | None, end: float | None, *,
                         device: str | None = None, point: str | None = None) -> list[Reading]:
        where, args = _where([("device = ?", device), ("point = ?", point),
                              ("ts >= ?", start), ("ts < ?", end)])
        return [_reading(r) for r in self._db.execute(f"{_READING}{where} ORDER BY ts", args)]

    def reading_at_or_before(self, device: str, point: str, ts: float) -> Reading | None:
        row = self._db.execute(
            f"{_READING} WHERE device = ? AND point = ? AND ts <= ? ORDER BY ts DESC LIMIT 1",
            (device, point, ts)).fetchone()
        return None if row is None else _reading(row)

    def latest(self, device: str | None = None) -> list[Reading]:
        where, args = _where([("r.device = ?", device)])
        sql = (f"{_READING} r WHERE r.ts = (SELECT MAX(ts) FROM readings m WHERE "
               f"m.device = r.device AND m.point = r.point)")
        if where:
            sql += " AND" + where.removeprefix(" WHERE")
        return [_reading(r) for r in self._db.execute(sql + " ORDER BY device, point", args)]

    def rollups(self, period: str, start: float | None = None, end: float | None = None, *,
                device: str | None = None, point: str | None = None) -> list[Rollup]:
        where, args = _where([("period = ?", period), ("device = ?", device),
                              ("point = ?", point), ("start >= ?", start), ("start < ?", end)])
        rows = self._db.execute(
            "SELECT device, point, period, start, start_local, end, end_local, consumption, "
            f"estimated, opening_total, closing_total, opening_raw, closing_raw FROM rollups"
            f"{where} ORDER BY start, device, point", args)
        return [Rollup(*r[:8], bool(r[8]), *r[9:]) for r in rows]

    def group_rollups(self, period: str, start: float | None = None, end: float | None = None,
                      *, group: str | None = None) -> list[GroupRollupRow]:
        where, args = _where([("period = ?", period), ("group_id = ?", group),
                              ("start >= ?", start), ("start < ?", end)])
        rows = self._db.execute(
            "SELECT group_id, period, start, start_local, end, end_local, consumption, members, "
            f"loss, loss_rate, estimated, missing FROM group_rollups{where} "
            "ORDER BY start, group_id", args)
        return [GroupRollupRow(*r[:10], bool(r[10]), json.loads(r[11])) for r in rows]

    def snapshots(self, month: str | None = None, *,
                  household: str | None = None) -> list[Snapshot]:
        where, args = _where([("ts_local LIKE ?", f"{month}-%" if month else None),
                              ("household = ?", household)])
        rows = self._db.execute(
            "SELECT household, ts, ts_local, entered_by, device, point, raw, total, unit, "
            f"reading_ts FROM snapshots{where} ORDER BY ts, household, device, point", args)
        return [Snapshot(*r) for r in rows]

    def replacements(self, start: float | None = None, end: float | None = None, *,
                     device: str | None = None) -> list[Replacement]:
        where, args = _where([("device = ?", device), ("ts >= ?", start), ("ts < ?", end)])
        rows = self._db.execute(
            "SELECT device, point, ts, old_final, new_initial, previous, credited, entered_by "
            f"FROM replacements{where} ORDER BY ts", args)
        return [Replacement(*r) for r in rows]

    def events(self, start: float | None = None, end: float | None = None, *,
               device: str | None = None, kind: str | None = None) -> list[MeterEvent]:
        where, args = _where([("device = ?", device), ("kind = ?", kind), ("ts >= ?", start),
                              ("ts < ?", end)])
        rows = self._db.execute(
            f"SELECT ts, device, point, kind, body FROM events{where} ORDER BY ts", args)
        return [MeterEvent(ts, d, p, k, json.loads(b)) for ts, d, p, k, b in rows]
