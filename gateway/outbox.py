"""The outbox: every batch and event is committed to SQLite before any sink sees it.

Appends are buffered and committed together (group commit) every `flush_interval`,
so the cost of a transaction is shared by every batch that arrived meanwhile. Each
sink keeps a cursor (the last sequence number its peer confirmed); records every
sink has confirmed are deleted. When the outbox outgrows `max_size`, the oldest
readings are dropped (and counted), never events.

All SQLite work runs on one dedicated thread so the event loop never waits on disk.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sqlite3
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import structlog

from gateway import sqlite
from gateway.batch import Batch, Event, Kind, Record

log = structlog.get_logger(__name__)

_SYNCHRONOUS = {"full": "FULL", "normal": "NORMAL", "off": "OFF"}
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS records_kind ON records (kind, seq);
CREATE TABLE IF NOT EXISTS cursors (sink TEXT PRIMARY KEY, seq INTEGER NOT NULL);
"""
MAX_UNCOMMITTED = 200_000  # records held in memory while commits fail (readings go first)
# Fraction of max_size to free when the outbox is full, so we do not trim on every commit.
_TRIM_FRACTION = 0.1
_COMPACT_EVERY = 5.0  # seconds between deleting records every sink has confirmed


@dataclass(slots=True)
class OutboxStats:
    appended: int = 0
    committed_seq: int = 0
    dropped_readings: int = 0
    commits: int = 0
    size_bytes: int = 0


def _lane_key(sink: str, lane: str) -> str:
    # "|" cannot occur in a sink name (an Identifier), so a lane never clashes with a sink.
    return f"{sink}|{lane}"


class Outbox:
    """Durable, bounded queue of records with one cursor per sink."""

    def __init__(
        self,
        path: Path,
        *,
        flush_interval: float = 0.2,
        fsync: str = "normal",
        max_size: int = 1024**3,
        max_pending: int = 20000,
    ) -> None:
        self.path = Path(path)
        self.flush_interval = flush_interval
        self.fsync = fsync
        self.max_size = max_size
        self.max_pending = max_pending  # commit early when this many appends wait
        self.stats = OutboxStats()
        self.epoch = ""
        self._pending: list[tuple[int, Batch | Event]] = []
        self._cursors: dict[str, int] = {}
        self._registered: set[str] = set()
        self._dirty_cursors: dict[str, int] = {}
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox")
        self._db: sqlite3.Connection | None = None
        self._committed = asyncio.Condition()
        self._wake = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._closed = False
        self._last_compact = 0.0

    # --- life cycle ------------------------------------------------------------------

    async def open(self) -> None:
        """Open or create the database; records and cursors from before a crash remain."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        await self._run(self._open_sync)
        self._flusher = asyncio.create_task(self._flush_loop(), name="outbox-flush")

    def _open_sync(self) -> None:
        db = sqlite.connect(self.path, schema=_SCHEMA, synchronous=_SYNCHRONOUS[self.fsync])
        row = db.execute("SELECT value FROM meta WHERE key='epoch'").fetchone()
        if row is None:
            # The epoch makes record ids unique even if the outbox file is deleted and recreated.
            self.epoch = secrets.token_hex(4)
            db.execute("INSERT INTO meta VALUES ('epoch', ?)", (self.epoch,))
        else:
            self.epoch = row[0]
        dropped = db.execute("SELECT value FROM meta WHERE key='dropped_readings'").fetchone()
        self.stats.dropped_readings = int(dropped[0]) if dropped else 0
        seq = db.execute("SELECT seq FROM sqlite_sequence WHERE name='records'").fetchone()
        self.stats.committed_seq = seq[0] if seq else 0
        self._cursors = dict(db.execute("SELECT sink, seq FROM cursors"))
        self._db = db
        self.stats.size_bytes = self._used_bytes()

    async def close(self) -> None:
        """Commit what is pending and close; appends after this are refused."""
        if self._closed:
            return
        self._closed = True
        if self._flusher is not None:
            self._flusher.cancel()
            try:
                await self._flusher
            except asyncio.CancelledError:
                pass
        await self.flush()
        await self._run(self._close_sync)
        self._executor.shutdown(wait=True)

    def _close_sync(self) -> None:
        if self._db is not None:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._db.close()
            self._db = None

    # --- appending -------------------------------------------------------------------

    def append_batch(self, batch: Batch) -> None:
        """Queue a batch for the next group commit; never blocks the caller."""
        self._append(Kind.READING, batch)

    def append_event(self, event: Event) -> None:
        self._append(Kind.EVENT, event)

    def _append(self, kind: Kind, item: Batch | Event) -> None:
        if self._closed:
            raise RuntimeError("outbox is closed")
        self._pending.append((kind, item))
        self.stats.appended += 1
        if len(self._pending) >= self.max_pending:
            self._wake.set()

    async def flush(self) -> None:
        """Commit everything appended so far, and the cursors sinks advanced."""
        if not self._pending and not self._dirty_cursors:
            return
        pending, self._pending = self._pending, []
        cursors, self._dirty_cursors = self._dirty_cursors, {}
        compact = time.monotonic() - self._last_compact >= _COMPACT_EVERY
        if compact:
            self._last_compact = time.monotonic()
        try:
            last_seq = await self._run(self._commit_sync, pending, cursors, compact)
        except BaseException:
            # Nothing was committed: put the work back for the next try, ahead of what came
            # meanwhile, so no record is lost to a locked database or a full disk.
            self._pending[:0] = pending
            self._dirty_cursors = {**cursors, **self._dirty_cursors}
            self._bound_memory()
            raise
        if last_seq > self.stats.committed_seq:
            self.stats.committed_seq = last_seq
            async with self._committed:
                self._committed.notify_all()

    def _bound_memory(self) -> None:
        """While commits fail, keep at most MAX_UNCOMMITTED records in memory: the oldest
        readings go first (counted), events never."""
        excess = len(self._pending) - MAX_UNCOMMITTED
        if excess <= 0:
            return
        kept, dropped = [], 0
        for kind, item in self._pending:
            if dropped < excess and kind == Kind.READING:
                dropped += 1
            else:
                kept.append((kind, item))
        self._pending = kept
        self.stats.dropped_readings += dropped

    async def _flush_loop(self) -> None:
        failing: str | None = None
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.flush_interval)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.flush()
            except Exception as exc:
                # A failed commit must not end the flusher; the next tick tries again. Logged
                # when it starts failing and when it recovers, not every tick.
                if failing is None:
                    log.error("outbox commit failing; records kept in memory and retried",
                              path=str(self.path), error=str(exc), waiting=len(self._pending))
                failing = str(exc)
            else:
                if failing is not None:
                    log.info("outbox commits again", path=str(self.path))
                    failing = None

    def _commit_sync(
        self, pending: list[tuple[int, Batch | Event]], cursors: dict[str, int], compact: bool
    ) -> int:
        db = self._db
        assert db is not None
        rows = [(kind, _encode(item)) for kind, item in pending]
        try:
            self._write_sync(db, rows, cursors, compact)
        except sqlite3.OperationalError as exc:
            if "full" not in str(exc).lower():
                raise
            # Disk full: make room by dropping the oldest readings, then try once more.
            self._drop_oldest_readings(db, max(len(rows), 1000))
            try:
                self._write_sync(db, rows, cursors, compact)
            except sqlite3.OperationalError:
                # Still full: keep the events, give up these readings (counted). If even the
                # events do not fit, this raises and flush() keeps everything for later.
                events = [r for r in rows if r[0] == Kind.EVENT]
                self._write_sync(db, events, cursors, compact)
                lost = len(rows) - len(events)
                self._count_dropped(db, lost)
                log.error("outbox disk full: readings dropped", dropped=lost, path=str(self.path))
        self.stats.size_bytes = self._used_bytes()
        if self.stats.size_bytes > self.max_size:
            self._trim_sync(db)
        seq = db.execute("SELECT seq FROM sqlite_sequence WHERE name='records'").fetchone()
        return seq[0] if seq else 0

    def _write_sync(
        self, db: sqlite3.Connection, rows: list[tuple[int, str]], cursors: dict[str, int],
        compact: bool,
    ) -> None:
        with sqlite.transaction(db):
            if rows:
                db.executemany("INSERT INTO records (kind, body) VALUES (?, ?)", rows)
            if cursors:
                db.executemany("INSERT OR REPLACE INTO cursors VALUES (?, ?)", cursors.items())
            if compact and self._registered:
                # Records every configured sink has confirmed are no longer needed; cursors
                # of sinks removed from the config do not hold records back.
                confirmed = min(self._cursors[name] for name in self._registered)
                db.execute("DELETE FROM records WHERE seq <= ?", (confirmed,))
        self.stats.commits += 1

    def _trim_sync(self, db: sqlite3.Connection) -> None:
        """Over max_size: drop the oldest readings until a tenth of the budget is free."""
        used = self._used_bytes()
        target = self.max_size * (1 - _TRIM_FRACTION)
        count = db.execute("SELECT count(*) FROM records").fetchone()[0] or 1
        per_row = max(used / count, 1)
        self._drop_oldest_readings(db, int((used - target) / per_row) + 1)
        self.stats.size_bytes = self._used_bytes()

    def _drop_oldest_readings(self, db: sqlite3.Connection, how_many: int) -> None:
        with sqlite.transaction(db):
            cur = db.execute(
                "DELETE FROM records WHERE seq IN "
                "(SELECT seq FROM records WHERE kind = ? ORDER BY seq LIMIT ?)",
                (int(Kind.READING), how_many),
            )
            self._store_dropped(db, self.stats.dropped_readings + max(cur.rowcount, 0))
        self.stats.dropped_readings += max(cur.rowcount, 0)
        if cur.rowcount:
            log.warning(
                "outbox full: oldest readings dropped",
                dropped=cur.rowcount, dropped_total=self.stats.dropped_readings,
                max_size=self.max_size, path=str(self.path),
            )

    def _count_dropped(self, db: sqlite3.Connection, n: int) -> None:
        """Count readings given up; the persisted count is best effort on a full disk."""
        if n <= 0:
            return
        self.stats.dropped_readings += n
        try:
            self._store_dropped(db, self.stats.dropped_readings)
        except sqlite3.Error as exc:
            log.warning("could not persist the dropped count", error=str(exc), path=str(self.path))

    @staticmethod
    def _store_dropped(db: sqlite3.Connection, total: int) -> None:
        db.execute("INSERT OR REPLACE INTO meta VALUES ('dropped_readings', ?)", (str(total),))

    def _used_bytes(self) -> int:
        db = self._db
        assert db is not None
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        free = db.execute("PRAGMA freelist_count").fetchone()[0]
        size = db.execute("PRAGMA page_size").fetchone()[0]
        return (pages - free) * size

    # --- sinks' side -----------------------------------------------------------------

    async def register(self, sink: str) -> int:
        """Declare a sink and return its cursor; a new sink starts at the oldest kept record."""
        if sink not in self._cursors:
            first = await self._run(
                lambda: self._db.execute("SELECT min(seq) FROM records").fetchone()[0]  # type: ignore[union-attr]
            )
            self._cursors[sink] = (first - 1) if first else self.stats.committed_seq
            self._dirty_cursors[sink] = self._cursors[sink]
        self._registered.add(sink)
        return self._cursors[sink]

    async def read(
        self, after: int, limit: int, kinds: Iterable[Kind]
    ) -> tuple[list[Record], int]:
        """Up to `limit` committed records after `after`, and the seq a sink may advance to.

        The second value can be past the last record returned when the records in
        between are of kinds this sink does not take.
        """
        return await self._run(self._read_sync, after, limit, tuple(int(k) for k in kinds))

    def _read_sync(self, after: int, limit: int, kinds: tuple[int, ...]) -> tuple[list[Record], int]:
        db = self._db
        assert db is not None
        high = self.stats.committed_seq
        marks = ",".join("?" * len(kinds))
        rows = db.execute(
            f"SELECT seq, kind, body FROM records WHERE seq > ? AND seq <= ? AND kind IN ({marks})"
            " ORDER BY seq LIMIT ?",
            (after, high, *kinds, limit),
        ).fetchall()
        records = []
        for seq, kind, body in rows:
            data = json.loads(body)
            item = Batch.from_dict(data) if kind == Kind.READING else Event.from_dict(data)
            records.append(Record(seq, f"{self.epoch}:{seq}", Kind(kind), item))
        upto = high if len(rows) < limit else rows[-1][0]
        return records, max(upto, after)

    def advance(self, sink: str, seq: int) -> None:
        """Move a sink's cursor after its peer confirmed; persisted with the next commit."""
        if seq > self._cursors.get(sink, 0):
            self._cursors[sink] = seq
            self._dirty_cursors[sink] = seq
            if len(self._dirty_cursors) > 64:
                self._wake.set()

    def cursor(self, sink: str) -> int:
        return self._cursors.get(sink, 0)

    # A sink with a priority lane (upstream: events before a backlog of readings) reads
    # each lane after its own cursor. Lane cursors are persisted beside the sink's cursor
    # but never hold records back: the sink's own cursor, the lowest of its lanes, does.

    def lane_cursor(self, sink: str, lane: str) -> int:
        """Where a sink's lane resumes: its own cursor, never behind the sink's cursor."""
        return max(self._cursors.get(_lane_key(sink, lane), 0), self._cursors.get(sink, 0))

    def advance_lane(self, sink: str, lane: str, seq: int) -> None:
        """Move a lane's cursor once its records were confirmed (see `advance`)."""
        self.advance(_lane_key(sink, lane), seq)

    async def wait_committed(self, after: int, timeout: float | None = None) -> bool:
        """Wait until something past `after` is committed; False on timeout."""
        async with self._committed:
            try:
                await asyncio.wait_for(
                    self._committed.wait_for(lambda: self.stats.committed_seq > after), timeout
                )
            except TimeoutError:
                return False
        return True

    def backlog(self) -> dict[str, int]:
        """Sequence numbers each configured sink is behind (all kinds counted)."""
        return {n: self.stats.committed_seq - self._cursors[n] for n in sorted(self._registered)}

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)


def _encode(item: Batch | Event) -> str:
    """JSON for one record; a value JSON cannot hold (bytes from a driver) becomes its text
    rather than failing the whole group commit."""
    return json.dumps(item.to_dict(), ensure_ascii=False, default=str)
