"""Many rows into SQLite with few statements, for the writers that run beside the event loop.

`executemany` runs one statement per row and lets go of the GIL around each: a writer
thread then has to win the GIL back from a busy event loop once per row, waiting up to
the interpreter's switch interval (5 ms) each time. Here rows go in multi-row INSERTs of
up to 256 rows, so a commit of a few hundred records waits for the GIL a few times, not
a few hundred, and SQLite does the rest in C.
"""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Sequence

CHUNK = 256  # rows per statement at most; fewer rows make a single statement
_statements: dict[tuple[str, int, int], str] = {}


def insert_rows(db: sqlite3.Connection, head: str, rows: Sequence[Sequence[object]]) -> None:
    """Run `head` ("INSERT INTO t (a, b)") with `rows` as its VALUES, in order: full chunks
    of CHUNK rows, then one statement with the rest. Up to CHUNK rows are one statement,
    which SQLite runs as a transaction of its own."""
    if not rows:
        return
    width = len(rows[0])
    variables = db.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)  # 999 on old builds
    size = max(1, min(CHUNK, variables // width))
    full = len(rows) - len(rows) % size
    chain = itertools.chain.from_iterable
    if full:
        db.executemany(
            _statement(head, width, size),
            [tuple(chain(rows[i : i + size])) for i in range(0, full, size)],
        )
    if full < len(rows):
        db.execute(_statement(head, width, len(rows) - full), tuple(chain(rows[full:])))


def _statement(head: str, width: int, size: int) -> str:
    key = (head, width, size)
    sql = _statements.get(key)
    if sql is None:
        if len(_statements) > 4 * CHUNK:  # a few heads, each with at most CHUNK sizes
            _statements.clear()
        row = "(" + ",".join("?" * width) + ")"
        sql = _statements[key] = f"{head} VALUES {','.join([row] * size)}"
    return sql
