"""The outbox: every batch and event is committed to SQLite before any sink sees it.

Group commit: a record appended while no commit is running starts one at once, on the
outbox's thread; the records appended while a commit runs go together in the next one,
which that thread starts as soon as the previous is done. At low load a record is on
disk within one fsync, at high load the cost of a transaction is shared by every record
that arrived meanwhile, and nothing ever waits for a timer or for the event loop. Each
sink keeps a cursor (the last sequence number its peer confirmed), persisted every
`flush_interval`; records every sink has confirmed are deleted.
When the outbox outgrows `max_size`, the oldest readings are dropped (and counted),
never events.

Committed records stay in memory (`outbox_tail.Tail`) for the sinks that keep up, so
they get them without reading SQLite back; a sink further behind reads them from disk.
Either way a sink sees a record only once it is committed.

All SQLite work runs on one dedicated thread so the event loop never waits on disk.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from gateway import sqlite
from gateway.batch import Batch, Event, Kind, Record
from gateway.loop_call import call_from_thread
from gateway.outbox_codec import decode, encode
from gateway.outbox_tail import Tail
from gateway.sqlite_rows import CHUNK, insert_rows

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
_INSERT = "INSERT INTO records (seq, kind, body)"
MAX_UNCOMMITTED = 200_000  # records held in memory while commits fail (readings go first)
# Fraction of max_size to free when the outbox is full, so we do not trim on every commit.
_TRIM_FRACTION = 0.1
_COMPACT_EVERY = 5.0  # seconds between deleting records every sink has confirmed
# Disk space held back beside the outbox (`outbox.reserve`): on a really full disk even the
# DELETE that makes room must write to the WAL, so this file is given up to let it, then
# taken back once the WAL has been checkpointed into the database and truncated.
RESERVE_BYTES = 2 * 1024 * 1024
# The size is read (for max_size) at most once a second, or after this share of it was written.
_SIZE_EVERY_FRACTION = 0.01
# Committed records are kept in memory for the sinks, at most this many values (points, or
# one per event): about 10 MB at worst, reached only while a sink lags at high throughput.
# A sink further behind reads SQLite; one whose peer is away holds nothing here.
TAIL_MAX_VALUES = 300_000

Pending = list[tuple[Kind, Batch | Event]]


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
        self.max_pending = max_pending  # records per commit at most; more go in the next
        self.stats = OutboxStats()
        self.epoch = ""
        self._cursors: dict[str, int] = {}
        self._registered: set[str] = set()
        self._away: set[str] = set()  # sinks whose peer is away: the tail keeps nothing for them
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox")
        self._db: sqlite3.Connection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Shared by the loop and the outbox thread, under _lock:
        self._lock = threading.Lock()
        self._pending: Pending = []  # appended, not yet committed
        self._dirty_cursors: dict[str, int] = {}  # advanced, not yet persisted
        self._committing = False  # a commit is queued or running, or a retry is due
        # The outbox thread's own:
        self._next_seq = 1  # the seq the next committed record gets
        self._unsized = 0  # bytes written since the size was last read
        self._sized_at = 0.0
        self._last_compact = 0.0
        self._cursors_at = 0.0  # when cursors were last persisted
        # The loop's own:
        self._tail = Tail(1, TAIL_MAX_VALUES)
        self._waiters: set[asyncio.Future[None]] = set()  # sinks waiting for a commit
        self._ticker: asyncio.Task[None] | None = None
        self._retry: asyncio.TimerHandle | None = None
        self._failing: str | None = None
        self._reserve_warned = False
        self._closed = False

    # --- life cycle ------------------------------------------------------------------

    async def open(self) -> None:
        """Open or create the database; records and cursors from before a crash remain."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._loop = asyncio.get_running_loop()
        await self._run(self._open_sync)
        self._next_seq = self.stats.committed_seq + 1
        self._tail = Tail(self._next_seq, TAIL_MAX_VALUES)
        self._ticker = asyncio.create_task(self._tick_forever(), name="outbox-ticker")
        if self._pending:  # appended before the outbox was open
            self._start_commit()

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
        self._hold_reserve()

    async def close(self) -> None:
        """Commit what is pending and close; appends after this are refused."""
        if self._closed:
            return
        self._closed = True
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)
        if self._retry is not None:
            self._retry.cancel()
        try:
            await self.flush()
        finally:
            self._tail.reset(self.stats.committed_seq + 1)
            await self._run(self._close_sync)
            self._executor.shutdown(wait=True)

    def _close_sync(self) -> None:
        if self._db is not None:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._db.close()
            self._db = None

    # --- appending and committing ----------------------------------------------------

    def append_batch(self, batch: Batch) -> None:
        """Queue a batch for the next group commit; never blocks the caller."""
        self._append(Kind.READING, batch)

    def append_event(self, event: Event) -> None:
        self._append(Kind.EVENT, event)

    def _append(self, kind: Kind, item: Batch | Event) -> None:
        if self._closed:
            raise RuntimeError("outbox is closed")
        with self._lock:
            self._pending.append((kind, item))
            start = not self._committing and self._loop is not None  # else open() starts it
            self._committing = self._committing or start
        self.stats.appended += 1
        if start:
            self._executor.submit(self._commit_pass)

    async def flush(self) -> None:
        """Commit everything appended so far, and the cursors sinks advanced; raises what
        the commit raised (the records stay, for the next try)."""
        await self._run(self._commit_all)

    def _start_commit(self) -> None:
        """On the loop: a commit now, unless one is under way (it takes everything)."""
        with self._lock:
            if self._committing:
                return
            self._committing = True
        self._executor.submit(self._commit_pass)

    async def _tick_forever(self) -> None:
        """Cursors advanced are committed within about `flush_interval`, with records or
        on their own; so are records a failed flush() put back."""
        while True:
            await asyncio.sleep(self.flush_interval)
            if self._dirty_cursors or self._pending:
                self._start_commit()

    # On the outbox thread:

    def _commit_pass(self) -> None:
        """Commit what waits; when more came meanwhile, go again (queued behind any read
        from disk, so a backlog is never starved)."""
        try:
            self._commit_waiting()
        except Exception as exc:
            self._call(self._commit_failed, exc)
            return
        if self._failing is not None:
            self._call(self._commit_recovered)
        with self._lock:
            more = bool(self._pending)
            self._committing = more
        if more:
            self._executor.submit(self._commit_pass)

    def _commit_all(self) -> None:
        """Everything appended before this was called, in commits of at most max_pending,
        and every cursor advanced."""
        with self._lock:
            rounds = len(self._pending) // self.max_pending + 1
        for _ in range(rounds):
            self._commit_waiting(with_cursors=True)

    def _commit_waiting(self, with_cursors: bool = False) -> None:
        """Commit the records waiting. Cursors go along at most every flush_interval: a
        commit of records alone is one statement, so its thread waits for the GIL once."""
        now = time.monotonic()
        with_cursors = with_cursors or now - self._cursors_at >= self.flush_interval
        with self._lock:
            if len(self._pending) <= self.max_pending:
                pending, self._pending = self._pending, []
            else:
                pending = self._pending[: self.max_pending]
                del self._pending[: self.max_pending]
            cursors: dict[str, int] = {}
            if with_cursors:
                cursors, self._dirty_cursors = self._dirty_cursors, {}
        if not pending and not cursors:
            return
        compact = None  # delete the records every sink confirmed, every few seconds
        if self._registered and now - self._last_compact >= _COMPACT_EVERY:
            # Cursors of sinks removed from the config do not hold records back.
            compact = min(self._cursors.get(name, 0) for name in list(self._registered))
        try:
            records, gap = self._commit_sync(pending, cursors, compact)
        except BaseException:
            # Nothing was committed: the work goes back for the next try, ahead of what came
            # meanwhile, so no record is lost to a locked database or a full disk.
            with self._lock:
                self._pending[:0] = pending
                self._dirty_cursors = {**cursors, **self._dirty_cursors}
                self._bound_memory()
            raise
        if compact is not None:
            self._last_compact = now
        if with_cursors:
            self._cursors_at = now
        self._call(self._publish, records, gap)

    def _bound_memory(self) -> None:
        """While commits fail, keep at most MAX_UNCOMMITTED records in memory: the oldest
        readings go first (counted), events never. Under _lock."""
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

    def _call(self, callback: Any, *args: Any) -> None:
        """Run `callback(*args)` on the loop, in the order of these calls."""
        call_from_thread(self._loop, callback, *args)

    # On the loop, told by the outbox thread:

    def _publish(self, records: list[Record], gap: bool) -> None:
        """Records are committed: into the tail, and every waiting sink is told at once."""
        if gap:  # records were dropped from disk: the tail no longer mirrors it
            self._tail.reset(self.stats.committed_seq + 1)
        if records:
            self._tail.extend(records)
            self.stats.committed_seq = records[-1].seq
        self._trim_tail()
        if records:
            for waiter in self._waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def _trim_tail(self) -> None:
        """Keep what the sinks whose peers are there have not confirmed (all of it before
        any sink registered); nothing when every peer is away (an outage: memory stays flat)."""
        live = self._registered - self._away
        if live:
            cursors = [self._cursors[name] for name in live]
        elif self._registered:
            cursors = []
        else:
            cursors = [self._tail.first - 1]
        self._tail.trim(cursors, self.stats.committed_seq + 1)

    def _commit_failed(self, exc: Exception) -> None:
        """A failed commit must not stop committing: tried again after flush_interval.
        Logged when it starts failing and when it recovers, not every time."""
        if self._failing is None:
            with self._lock:
                waiting = len(self._pending)
            log.error("outbox commit failing; records kept in memory and retried",
                      path=str(self.path), error=str(exc), waiting=waiting)
        self._failing = str(exc)
        if not self._closed:
            self._retry = asyncio.get_running_loop().call_later(self.flush_interval, self._retried)

    def _retried(self) -> None:
        self._retry = None
        with self._lock:
            self._committing = False
        if self._pending or self._dirty_cursors:
            self._start_commit()

    def _commit_recovered(self) -> None:
        if self._failing is not None:
            self._failing = None
            log.info("outbox commits again", path=str(self.path))

    # --- SQLite, on the outbox thread ------------------------------------------------

    def _commit_sync(
        self, pending: Pending, cursors: dict[str, int], compact: int | None,
    ) -> tuple[list[Record], bool]:
        """Write `pending` and `cursors` in one transaction; the records as committed, and
        whether records were dropped from disk (a full disk, max_size)."""
        db = self._db
        assert db is not None
        first = self._next_seq
        rows = [(first + i, kind, encode(item)) for i, (kind, item) in enumerate(pending)]
        kept = pending
        gap = False
        try:
            self._write_sync(db, rows, cursors, compact)
        except sqlite3.OperationalError as exc:
            if "full" not in str(exc).lower():
                raise
            # Disk full: make room by dropping the oldest readings, then try once more. The
            # reserve gives the DELETE the WAL pages it needs; the checkpoint then moves the
            # WAL into the database (whose freed pages the next rows reuse) and truncates it.
            gap = True
            released = self._release_reserve()
            self._drop_oldest_readings(db, max(len(rows), 1000))
            if released:
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            try:
                self._write_sync(db, rows, cursors, compact)
            except sqlite3.OperationalError:
                # Still full: keep the events, give up these readings (counted). If even the
                # events do not fit, this raises and the records are kept for later.
                kept = [(kind, item) for kind, item in pending if kind == Kind.EVENT]
                bodies = [body for _, kind, body in rows if kind == Kind.EVENT]
                rows = [(first + i, Kind.EVENT, body) for i, body in enumerate(bodies)]
                self._write_sync(db, rows, cursors, compact)
                lost = len(pending) - len(kept)
                self._count_dropped(db, lost)
                log.error("outbox disk full: readings dropped", dropped=lost, path=str(self.path))
        self._next_seq = first + len(rows)
        if gap:
            self._hold_reserve()  # for the next time: succeeds once there is room again
        records = records_of(self.epoch, first, kept)
        self._unsized += sum(len(body) for _, _, body in rows)
        now = time.monotonic()
        if self._unsized < self.max_size * _SIZE_EVERY_FRACTION and now - self._sized_at < 1.0:
            return records, gap
        self._unsized, self._sized_at = 0, now
        try:  # committed: from here on a failure must not make anyone commit them again
            self.stats.size_bytes = self._used_bytes()
            if self.stats.size_bytes > self.max_size:
                gap = True
                self._trim_sync(db)
        except sqlite3.Error as exc:
            log.warning("outbox could not apply max_size; tried again after the next commit",
                        error=str(exc), path=str(self.path))
        return records, gap

    def _write_sync(
        self, db: sqlite3.Connection, rows: list[tuple[int, Kind, str]],
        cursors: dict[str, int], compact: int | None,
    ) -> None:
        if not cursors and compact is None and len(rows) <= CHUNK:
            insert_rows(db, _INSERT, rows)  # one statement: a transaction of its own
        else:
            with sqlite.transaction(db):
                insert_rows(db, _INSERT, rows)
                if cursors:
                    db.executemany("INSERT OR REPLACE INTO cursors VALUES (?, ?)", cursors.items())
                if compact is not None:
                    db.execute("DELETE FROM records WHERE seq <= ?", (compact,))
        self.stats.commits += 1

    @property
    def _reserve(self) -> Path:
        return self.path.with_name(self.path.stem + ".reserve")

    def _hold_reserve(self) -> None:
        """Keep RESERVE_BYTES of the disk for a day it is full (best effort: a disk already
        full at start has none to keep, and says so)."""
        reserve = self._reserve
        try:
            if reserve.exists() and reserve.stat().st_size >= RESERVE_BYTES:
                return
            with open(reserve, "wb") as out:
                out.write(b"\0" * RESERVE_BYTES)
                out.flush()
                os.fsync(out.fileno())
        except OSError as exc:
            reserve.unlink(missing_ok=True)
            if not self._reserve_warned:
                self._reserve_warned = True
                log.warning("outbox cannot hold its disk reserve; a full disk will stall commits "
                            "until space comes back", path=str(reserve), error=exc.strerror or str(exc))
            return
        self._reserve_warned = False

    def _release_reserve(self) -> bool:
        """Give the reserve up to the outbox itself; whether there was one."""
        try:
            self._reserve.unlink()
        except FileNotFoundError:
            return False
        log.warning("outbox disk full: reserve released to make room", path=str(self._reserve))
        return True

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
        (used,) = db.execute(
            "SELECT (p.page_count - f.freelist_count) * s.page_size"
            " FROM pragma_page_count() p, pragma_freelist_count() f, pragma_page_size() s"
        ).fetchone()
        return used

    # --- sinks' side -----------------------------------------------------------------

    async def register(self, sink: str) -> int:
        """Declare a sink and return its cursor; a new sink starts at the oldest kept record."""
        if sink not in self._cursors:
            self._cursors[sink] = await self._run(self._before_oldest_sync)
            with self._lock:
                self._dirty_cursors[sink] = self._cursors[sink]
        self._registered.add(sink)
        return self._cursors[sink]

    def _before_oldest_sync(self) -> int:
        """The seq before the oldest record kept: where a new sink starts. Read on the outbox
        thread, between commits, so a commit that lands meanwhile is not skipped."""
        assert self._db is not None
        first = self._db.execute("SELECT min(seq) FROM records").fetchone()[0]
        return first - 1 if first else self._next_seq - 1

    async def read(
        self, after: int, limit: int, kinds: Iterable[Kind]
    ) -> tuple[list[Record], int]:
        """Up to `limit` committed records after `after`, and the seq a sink may advance to.

        The second value can be past the last record returned when the records in
        between are of kinds this sink does not take. A sink that keeps up reads from the
        tail in memory; one further behind reads SQLite.
        """
        kinds = frozenset(kinds)
        if self._tail.covers(after):
            return self._tail.read(after, limit, kinds, self.stats.committed_seq)
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
        epoch = self.epoch
        records = [Record(seq, f"{epoch}:{seq}", Kind(kind), decode(kind, body))
                   for seq, kind, body in rows]
        upto = high if len(rows) < limit else rows[-1][0]
        return records, max(upto, after)

    def advance(self, sink: str, seq: int) -> None:
        """Move a sink's cursor after its peer confirmed; persisted with the next commit."""
        if seq > self._cursors.get(sink, 0):
            self._cursors[sink] = seq
            with self._lock:
                self._dirty_cursors[sink] = seq
                many = len(self._dirty_cursors) > 64
            if many:
                self._start_commit()

    def cursor(self, sink: str) -> int:
        return self._cursors.get(sink, 0)

    def peer_away(self, sink: str, away: bool) -> None:
        """A sink's peer went away (True) or is back (False), as its runner found out. While
        away, the tail keeps nothing for the sink; once back it keeps its part again, up to
        TAIL_MAX_VALUES, so the sink reads memory as soon as it has caught up with it."""
        if away:
            self._away.add(sink)
        else:
            self._away.discard(sink)

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
        """Wait until something past `after` is committed; False on timeout. A waiting sink
        is woken by the commit itself, not by polling."""
        while self.stats.committed_seq <= after:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.add(waiter)
            try:
                await asyncio.wait_for(waiter, timeout)
            except TimeoutError:
                return False
            finally:
                self._waiters.discard(waiter)
        return True

    def backlog(self) -> dict[str, int]:
        """Sequence numbers each configured sink is behind (all kinds counted)."""
        return {n: self.stats.committed_seq - self._cursors[n] for n in sorted(self._registered)}

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)


def records_of(epoch: str, first: int, kept: Pending) -> list[Record]:
    """The records as sinks see them, numbered from `first`."""
    return [
        Record(first + i, f"{epoch}:{first + i}", kind, item) for i, (kind, item) in enumerate(kept)
    ]
