"""Rows inserted in multi-row statements arrive whole and in order, whatever their count."""

from __future__ import annotations

import sqlite3

import pytest

from gateway.sqlite_rows import insert_rows


@pytest.mark.parametrize("count", [0, 1, 3, 4, 17, 255, 256, 257, 600])
def test_every_row_is_inserted_in_order(count: int) -> None:
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (seq INTEGER PRIMARY KEY, kind INTEGER, body TEXT)")
    rows = [(i, i % 2, f"body {i}") for i in range(1, count + 1)]
    insert_rows(db, "INSERT INTO t (seq, kind, body)", rows)
    assert db.execute("SELECT seq, kind, body FROM t ORDER BY rowid").fetchall() == rows


def test_a_build_with_few_variables_gets_smaller_statements() -> None:
    db = sqlite3.connect(":memory:")
    db.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 100)
    db.execute("CREATE TABLE t (a, b, c, d, e, f)")
    rows = [tuple(range(i, i + 6)) for i in range(300)]
    insert_rows(db, "INSERT INTO t (a, b, c, d, e, f)", rows)
    assert db.execute("SELECT * FROM t ORDER BY rowid").fetchall() == rows


@pytest.mark.parametrize(("count", "statements"), [(1, 1), (50, 1), (256, 1), (257, 2), (600, 3)])
def test_up_to_256_rows_are_one_statement(count: int, statements: int) -> None:
    db = sqlite3.connect(":memory:", isolation_level=None)  # as gateway.sqlite opens files
    db.execute("CREATE TABLE t (a, b, c)")
    seen: list[str] = []
    db.set_trace_callback(seen.append)
    insert_rows(db, "INSERT INTO t (a, b, c)", [(i, i, i) for i in range(count)])
    assert len(seen) == statements
