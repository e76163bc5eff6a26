"""The local history: readings in a SQLite file, the embedded default without InfluxDB.

Readings are keyed by (device, point, ts), clustered on that key (WITHOUT ROWID), so a
point's history is one contiguous index range and a record delivered twice after a
crash overwrites itself instead of doubling. A second index on ts makes pruning by
retention cheap. A small `series` table lists every (device, point) ever written,
which lets "latest value of each point" be one index probe per point instead of a
scan over weeks of rows.

Quality is stored as NULL when good (most rows), to keep the file small on a Pi.
Writes run in a worker thread, one transaction per send, so the event loop never
waits on the disk.
"""

from __future__ import annotations

import asyncio
import math
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import structlog

from gateway import sqlite
from gateway.batch import Batch, Kind, Quality, Record, number_kinds
from gateway.config.models import HistorySinkConfig
from gateway.sinks.base import Sink, SinkUnavailable
from gateway.sqlite_rows import insert_rows

log = structlog.get_logger(__name__)

_PRUNE_EVERY = 600.0  # seconds between retention passes

_SCHEMA = """
CREATE TABLE IF NOT EXISTS readings (
    device  TEXT NOT NULL,
    point   TEXT NOT NULL,
    ts      REAL NOT NULL,
    value   REAL,
    text    TEXT,
    quality TEXT,
    PRIMARY KEY (device, point, ts)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS readings_ts ON readings (ts);
CREATE TABLE IF NOT EXISTS series (
    device TEXT NOT NULL,
    point  TEXT NOT NULL,
    PRIMARY KEY (device, point)
) WITHOUT ROWID;
"""

_INSERT = "INSERT OR REPLACE INTO readings (device, point, ts, value, text, quality)"


class HistoryRow(NamedTuple):
    """One stored reading; `value` is a float, a string, or None when quality is not good."""

    ts: float
    device: str
    point: str
    value: float | str | None
    quality: str


def _rows(batch: Batch) -> list[tuple[str, str, float, float | None, str | None, str | None]]:
    """Table rows for one batch; non-finite floats are stored as out_of_range."""
    device, ts = batch.device, batch.ts
    if number_kinds(batch) is not None:  # the usual poll
        return [
            (device, point, ts, float(value), None, None)
            for point, value in zip(batch.points, batch.values, strict=True)
        ]
    rows = []
    for point, value, quality in batch.items():
        if quality != Quality.GOOD:
            rows.append((device, point, ts, None, None, str(quality)))
        elif isinstance(value, bool):
            rows.append((device, point, ts, 1.0 if value else 0.0, None, None))
        elif isinstance(value, int | float):
            number = float(value)
            if math.isfinite(number):
                rows.append((device, point, ts, number, None, None))
            else:
                rows.append((device, point, ts, None, None, str(Quality.OUT_OF_RANGE)))
        elif value is None:
            continue
        else:
            rows.append((device, point, ts, None, str(value), None))
    return rows


def connect(path: Path) -> sqlite3.Connection:
    """Open (creating if needed) a history database in WAL mode."""
    return sqlite.connect(path, schema=_SCHEMA, synchronous="NORMAL", busy_timeout_ms=5000)


class HistorySink(Sink):
    """Stores readings in `data_dir/history.db` and drops rows older than the retention."""

    kinds = frozenset({Kind.READING})

    def __init__(self, config: HistorySinkConfig, data_dir: Path) -> None:
        super().__init__(config.name)
        self.config = config
        self.path = Path(data_dir) / "history.db"
        self.written = 0
        self.pruned = 0
        self._db: sqlite3.Connection | None = None
        self._series: set[tuple[str, str]] = set()
        self._point_sets: set[tuple[str, tuple[str, ...]]] = set()  # (device, points) seen
        self._last_prune: float | None = None  # None: prune on the first send
        self._lock = asyncio.Lock()  # one call at a time on the connection
        # ...and one thread: a send cancelled while its write runs releases the lock, but the
        # write goes on; close (or the next write) must queue behind it, never run beside
        # it (two threads in one SQLite connection crash the process)
        self._executor: ThreadPoolExecutor | None = None

    def _thread(self, fn, *args):
        """Run `fn` on the sink's own database thread."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"history-{self.name}")
        return asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def start(self) -> None:
        async with self._lock:
            if self._db is None:
                await self._thread(self._open)

    def _open(self) -> None:
        self._db = connect(self.path)
        self._series = set(self._db.execute("SELECT device, point FROM series"))

    async def stop(self) -> None:
        async with self._lock:
            if self._db is not None:
                db, self._db = self._db, None
                await self._thread(db.close)
            if self._executor is not None:
                self._executor.shutdown(wait=False)
                self._executor = None

    async def send(self, records: list[Record]) -> None:
        rows: list[tuple[str, str, float, float | None, str | None, str | None]] = []
        point_sets: set[tuple[str, tuple[str, ...]]] = set()
        for record in records:
            if record.kind == Kind.READING:
                batch: Batch = record.item  # type: ignore[assignment]
                rows += _rows(batch)
                point_sets.add((batch.device, batch.points))
        prune = self._last_prune is None or time.monotonic() - self._last_prune >= _PRUNE_EVERY
        async with self._lock:
            try:
                if self._db is None:
                    await self._thread(self._open)
                await self._thread(self._write, rows, point_sets - self._point_sets)
                if prune:
                    self._last_prune = time.monotonic()
                    await self._thread(self._prune)
            except sqlite3.Error as exc:  # disk full, I/O error: keep the records in the outbox
                raise SinkUnavailable(f"history database {self.path}: {exc}") from exc
        self.written += len(rows)

    def _write(
        self, rows: list[tuple[str, str, float, float | None, str | None, str | None]],
        point_sets: set[tuple[str, tuple[str, ...]]],
    ) -> None:
        """Insert `rows`; `point_sets` are the (device, points) not written before, whose
        points may be new series (a poll's point set is looked at once, not every row)."""
        assert self._db is not None
        new_series = {(d, p) for d, points in point_sets for p in points} - self._series
        db = self._db
        with sqlite.transaction(db):
            insert_rows(db, _INSERT, rows)  # few statements: few waits for the GIL
            if new_series:
                db.executemany(
                    "INSERT OR IGNORE INTO series (device, point) VALUES (?, ?)", new_series
                )
        self._series |= new_series
        self._point_sets |= point_sets

    def _prune(self) -> None:
        """Delete rows older than the retention, in its own transaction."""
        assert self._db is not None
        cutoff = time.time() - self.config.retention
        deleted = self._db.execute("DELETE FROM readings WHERE ts < ?", (cutoff,)).rowcount
        if deleted:
            self.pruned += deleted
            log.info(
                "history pruned", sink=self.name, rows=deleted, retention_s=self.config.retention
            )

    async def prune(self) -> None:
        """Apply the retention now (normally it runs every few minutes from send)."""
        async with self._lock:
            if self._db is None:
                await self._thread(self._open)
            self._last_prune = time.monotonic()
            await self._thread(self._prune)


class HistoryReader:
    """Read side of the local history, for the CLI; opens the file read-only."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"no history database at {self.path}")
        self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
        self._db.execute("PRAGMA busy_timeout=5000")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> HistoryReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def latest(self, device: str | None = None) -> list[HistoryRow]:
        """The newest row of every point (of one device, or of all), ordered by device and point."""
        sql = (
            "SELECT r.ts, r.device, r.point, r.value, r.text, r.quality FROM series s "
            "JOIN readings r ON r.device = s.device AND r.point = s.point AND r.ts = "
            "(SELECT MAX(ts) FROM readings m WHERE m.device = s.device AND m.point = s.point) "
        )
        args: tuple[str, ...] = ()
        if device is not None:
            sql += "WHERE s.device = ? "
            args = (device,)
        sql += "ORDER BY s.device, s.point"
        return [_row(r) for r in self._db.execute(sql, args)]

    def query(
        self,
        device: str,
        point: str | None = None,
        since: float | None = None,
        limit: int = 100,
    ) -> list[HistoryRow]:
        """Rows of a device (or one of its points) at or after `since`, newest first."""
        sql = "SELECT ts, device, point, value, text, quality FROM readings WHERE device = ?"
        args: list[object] = [device]
        if point is not None:
            sql += " AND point = ?"
            args.append(point)
        if since is not None:
            sql += " AND ts >= ?"
            args.append(since)
        sql += " ORDER BY ts DESC, point LIMIT ?"
        args.append(limit)
        return [_row(r) for r in self._db.execute(sql, args)]


def _row(r: tuple) -> HistoryRow:
    ts, device, point, value, text, quality = r
    return HistoryRow(
        ts, device, point, value if value is not None else text, quality or Quality.GOOD.value
    )
