"""The one way this project opens a SQLite file and runs a transaction.

Used by the outbox, local history and the rule engine's alarm and ticket stores: WAL, an
autocommit connection with explicit transactions, and a rollback on any error so one
failure never leaves a transaction open for every later write to trip over.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def connect(
    path: str | Path, *, schema: str = "", synchronous: str | None = None,
    busy_timeout_ms: int | None = None,
) -> sqlite3.Connection:
    """Open (creating the folder and file if needed) in WAL mode and apply `schema`.

    The connection may be used from another thread than the one that opened it (each
    user keeps it to one thread at a time).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    # 256 KiB of page cache a file (SQLite's default is 2 MiB): our files are written in
    # appends and read near their end, and a Pi has a dozen of them open
    db.execute("PRAGMA cache_size=-256")
    if synchronous is not None:
        db.execute(f"PRAGMA synchronous={synchronous}")
    if busy_timeout_ms is not None:
        db.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
    if schema:
        db.executescript(schema)
    return db


@contextmanager
def transaction(db: sqlite3.Connection, *, immediate: bool = False) -> Iterator[None]:
    """BEGIN … COMMIT, rolled back on any error (cancellation included)."""
    db.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
    try:
        yield
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
