"""`<data_dir>/equipment.db`: the ledger's entries, the gateway's running sessions, and a
little state (when the last KPI day was sent, the intact-rate alarms).

Entries are append-only: triggers refuse UPDATE and DELETE, and each entry carries the
sha256 of the previous entry's hash and its own fields, so an edit made behind SQLite's
back breaks the chain (`verify()`; records must be tamper-evident, domain.md).

Sessions say when the gateway was watching: availability counts only time it saw. A
session's `seen` moves on every minute or so; after a crash the session ends there.

`EquipmentStore` writes (the stage, one thread); `open_reader` opens the file read-only
for the CLI and the report while the daemon writes (WAL).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway import sqlite

FILE = "equipment.db"
GENESIS = "0" * 64

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    device TEXT NOT NULL,
    kind TEXT NOT NULL,
    ref TEXT,
    body TEXT NOT NULL,
    recorded REAL NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_device_ts ON entries (device, ts);
CREATE INDEX IF NOT EXISTS entries_ts ON entries (ts);
CREATE INDEX IF NOT EXISTS entries_kind ON entries (kind, ref);
CREATE TRIGGER IF NOT EXISTS entries_no_update BEFORE UPDATE ON entries
BEGIN SELECT RAISE(ABORT, 'the equipment ledger is append-only'); END;
CREATE TRIGGER IF NOT EXISTS entries_no_delete BEFORE DELETE ON entries
BEGIN SELECT RAISE(ABORT, 'the equipment ledger is append-only'); END;
CREATE TABLE IF NOT EXISTS sessions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started REAL NOT NULL,
    seen REAL NOT NULL,
    stopped INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(slots=True)
class Entry:
    """One line of the ledger: something that happened to one device."""

    ts: float
    device: str
    kind: str
    ref: str | None = None  # the alarm, ticket or counter it is about
    body: dict[str, Any] = field(default_factory=dict)
    seq: int | None = None  # set once stored
    recorded: float | None = None
    hash: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "ts": self.ts, "device": self.device, "kind": self.kind,
                "ref": self.ref, "body": self.body}


@dataclass(frozen=True, slots=True)
class Session:
    """A span the gateway was running: [started, seen]."""

    started: float
    seen: float
    stopped: bool


def chain(previous: str, entry: Entry) -> str:
    """The entry's hash: sha256 over the previous hash and the entry's fields."""
    text = json.dumps([previous, entry.seq, entry.ts, entry.device, entry.kind, entry.ref,
                       entry.body], ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class LedgerReader:
    """Queries on equipment.db; the store and the read-only reader share them."""

    _db: sqlite3.Connection

    def entries(self, *, device: str | None = None, start: float | None = None,
                end: float | None = None, kinds: Iterable[str] | None = None) -> list[Entry]:
        """Entries with `start <= ts < end` (None: open), oldest first."""
        sql = "SELECT seq, ts, device, kind, ref, body, recorded, hash FROM entries"
        where, args = [], []
        for clause, value in (("device = ?", device), ("ts >= ?", start), ("ts < ?", end)):
            if value is not None:
                where.append(clause)
                args.append(value)
        if kinds is not None:
            kinds = list(kinds)
            where.append(f"kind IN ({','.join('?' * len(kinds))})")
            args.extend(kinds)
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = self._db.execute(sql + " ORDER BY ts, seq", args).fetchall()
        return [Entry(ts, dev, kind, ref, json.loads(body), seq, recorded, digest)
                for seq, ts, dev, kind, ref, body, recorded, digest in rows]

    def entries_after(self, seq: int) -> list[Entry]:
        """Entries written after entry `seq`, in the order they were written."""
        rows = self._db.execute("SELECT seq, ts, device, kind, ref, body, recorded, hash FROM "
                                "entries WHERE seq > ? ORDER BY seq", (seq,)).fetchall()
        return [Entry(t, dev, kind, ref, json.loads(body), n, recorded, digest)
                for n, t, dev, kind, ref, body, recorded, digest in rows]

    def state_before(self, ts: float) -> list[Entry]:
        """The entries that set each device's state as of `ts`, oldest first: per device its
        last status and its last maintenance entry, per alarm its last raise or clear."""
        rows = self._db.execute(
            "SELECT seq, ts, device, kind, ref, body, recorded, hash FROM ("
            " SELECT *, ROW_NUMBER() OVER (PARTITION BY device, CASE"
            "  WHEN kind IN ('alarm_raised', 'alarm_cleared') THEN 'alarm:' || ref"
            "  WHEN kind IN ('online', 'offline') THEN 'status' ELSE 'maintenance' END"
            "  ORDER BY ts DESC, seq DESC) AS rn"
            " FROM entries WHERE ts < ? AND kind IN ('online', 'offline', 'alarm_raised',"
            "  'alarm_cleared', 'maintenance_on', 'maintenance_off')"
            ") WHERE rn = 1 ORDER BY ts, seq", (ts,)).fetchall()
        return [Entry(t, dev, kind, ref, json.loads(body), seq, recorded, digest)
                for seq, t, dev, kind, ref, body, recorded, digest in rows]

    def sessions(self) -> list[Session]:
        rows = self._db.execute("SELECT started, seen, stopped FROM sessions ORDER BY started")
        return [Session(a, b, bool(c)) for a, b, c in rows]

    def meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def devices(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT DISTINCT device FROM entries ORDER BY device")]

    def verify(self) -> tuple[int, int | None]:
        """(entries checked, the seq of the first entry whose hash does not follow; None: intact)."""
        previous = GENESIS
        count = 0
        rows = self._db.execute("SELECT seq, ts, device, kind, ref, body, hash FROM entries ORDER BY seq")
        for seq, ts, dev, kind, ref, body, digest in rows:
            count += 1
            expected = chain(previous, Entry(ts, dev, kind, ref, json.loads(body), seq))
            if digest != expected:
                return count, seq
            previous = digest
        return count, None


class EquipmentStore(LedgerReader):
    """The writing side: append entries, keep sessions and meta."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db = sqlite.connect(self.path, schema=_SCHEMA)
        row = self._db.execute("SELECT hash FROM entries ORDER BY seq DESC LIMIT 1").fetchone()
        self._last_hash = row[0] if row else GENESIS
        self._session: int | None = None

    def close(self) -> None:
        self._db.close()

    def append(self, entries: list[Entry], now: float) -> None:
        """Append in one transaction; each entry gets its seq, time recorded and hash."""
        if not entries:
            return
        previous = self._last_hash
        with sqlite.transaction(self._db, immediate=True):
            row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'entries'").fetchone()
            seq = row[0] if row else 0
            for entry in entries:
                seq += 1
                entry.seq, entry.recorded = seq, now
                entry.hash = chain(previous, entry)
                previous = entry.hash
                self._db.execute(
                    "INSERT INTO entries (seq, ts, device, kind, ref, body, recorded, hash) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (entry.seq, entry.ts, entry.device, entry.kind, entry.ref,
                     json.dumps(entry.body, ensure_ascii=False, sort_keys=True), now, entry.hash))
        self._last_hash = previous

    def start_session(self, now: float) -> None:
        with sqlite.transaction(self._db):
            cursor = self._db.execute("INSERT INTO sessions (started, seen) VALUES (?, ?)", (now, now))
        self._session = cursor.lastrowid

    def seen(self, now: float, *, stopped: bool = False) -> None:
        """The gateway was watching until `now` (and stopped there, if `stopped`)."""
        if self._session is None:
            return
        with sqlite.transaction(self._db):
            self._db.execute("UPDATE sessions SET seen = MAX(seen, ?), stopped = ? WHERE id = ?",
                             (now, int(stopped), self._session))

    def set_meta(self, values: dict[str, str]) -> None:
        with sqlite.transaction(self._db):
            self._db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                                 list(values.items()))


class ReadOnlyLedger(LedgerReader):
    """equipment.db opened read-only (safe while the daemon writes)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            self.path = self.path / FILE
        if not self.path.exists():
            raise FileNotFoundError(f"no equipment ledger at {self.path}")
        self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
        self._db.execute("PRAGMA busy_timeout=5000")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ReadOnlyLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
