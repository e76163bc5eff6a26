"""Group commit: a record is committed as soon as the previous commit is done, records that
arrive during a commit go together in the next one, and sinks hear of a commit at once."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time

import pytest

from gateway.batch import Batch, Event, Kind
from gateway.outbox import Outbox

HOUR = 3600.0  # a flush_interval no test could wait out: commits must not wait for it


def batch(i: int, device: str = "pump_1") -> Batch:
    return Batch(device, 1_700_000_000.0 + i, ("pressure",), [float(i)])


@pytest.fixture
async def box(tmp_path):
    outbox = Outbox(tmp_path / "outbox.db", flush_interval=HOUR)
    await outbox.open()
    yield outbox
    await outbox.close()


class HeldCommit:
    """Holds the outbox's first commit on its thread until released."""

    def __init__(self, box: Outbox) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.calls = 0
        write = box._write_sync

        def held(*args):
            self.calls += 1
            if self.calls == 1:
                self.entered.set()
                self.release.wait(30)
            return write(*args)

        box._write_sync = held  # type: ignore[method-assign]

    async def wait_entered(self) -> None:
        assert await asyncio.to_thread(self.entered.wait, 30)


async def test_a_record_appended_to_an_idle_outbox_reaches_a_waiting_sink_without_flush_interval(box):
    await box.register("mqtt")
    waiting = asyncio.create_task(box.wait_committed(0, timeout=60))
    await asyncio.sleep(0)
    box.append_batch(batch(1))
    assert await waiting  # woken by the commit, not by the hour-long interval
    records, upto = await box.read(0, 10, {Kind.READING})
    assert [r.item.values for r in records] == [[1.0]] and upto == 1
    assert box.stats.commits == 1


async def test_records_appended_during_a_commit_go_together_in_the_next(tmp_path):
    box = Outbox(tmp_path / "outbox.db", flush_interval=HOUR)
    await box.open()
    held = HeldCommit(box)
    try:
        await box.register("mqtt")
        box.append_batch(batch(0))
        await held.wait_entered()  # the first record's commit is on its way to disk
        for i in range(1, 501):
            box.append_batch(batch(i))
        box.append_event(Event("device_status", 1.0, "pump_1", {"online": True}))
        held.release.set()
        assert await box.wait_committed(501, timeout=60)
        assert box.stats.commits == 2  # one for the first record, one for the 501 behind it
        records, _ = await box.read(0, 1000, {Kind.READING, Kind.EVENT})
        assert [r.seq for r in records] == list(range(1, 503))
        assert [r.item.ts for r in records[:501]] == [batch(i).ts for i in range(501)]
        assert records[-1].kind == Kind.EVENT
    finally:
        held.release.set()
        await box.close()


async def test_a_sink_sees_nothing_that_is_not_committed_yet(tmp_path):
    box = Outbox(tmp_path / "outbox.db", flush_interval=HOUR)
    await box.open()
    held = HeldCommit(box)
    try:
        await box.register("mqtt")
        box.append_batch(batch(0))
        await held.wait_entered()
        assert await box.read(0, 10, {Kind.READING}) == ([], 0)
        assert not await box.wait_committed(0, timeout=0.05)
        held.release.set()
        assert await box.wait_committed(0, timeout=60)
        records, _ = await box.read(0, 10, {Kind.READING})
        assert [r.seq for r in records] == [1]
    finally:
        held.release.set()
        await box.close()


async def test_a_commit_takes_at_most_max_pending_records_and_keeps_their_order(tmp_path):
    box = Outbox(tmp_path / "outbox.db", flush_interval=HOUR, max_pending=100)
    await box.open()
    held = HeldCommit(box)
    try:
        await box.register("influx")
        box.append_batch(batch(0))
        await held.wait_entered()
        for i in range(1, 251):
            box.append_batch(batch(i))
        held.release.set()
        await box.flush()
        assert box.stats.committed_seq == 251
        assert box.stats.commits == 4  # 1, then 100 + 100 + 50
        records, _ = await box.read(0, 1000, {Kind.READING})
        assert [r.item.ts for r in records] == [batch(i).ts for i in range(251)]
    finally:
        held.release.set()
        await box.close()


async def test_cursors_alone_are_persisted_within_flush_interval(tmp_path):
    box = Outbox(tmp_path / "outbox.db", flush_interval=0.05)
    await box.open()
    await box.register("mqtt")
    box.append_batch(batch(0))
    await box.flush()
    commits = box.stats.commits
    box.advance("mqtt", 1)
    for _ in range(600):  # the writer persists the cursor on its own, within flush_interval
        if box.stats.commits > commits:
            break
        await asyncio.sleep(0.05)
    db = sqlite3.connect(tmp_path / "outbox.db")
    try:
        assert db.execute("SELECT seq FROM cursors WHERE sink='mqtt'").fetchone() == (1,)
    finally:
        db.close()
        await box.close()


async def test_a_sink_that_keeps_up_gets_the_committed_records_from_memory(box):
    await box.register("mqtt")
    appended = [batch(i) for i in range(3)]
    for item in appended:
        box.append_batch(item)
    await box.flush()
    records, _ = await box.read(0, 10, {Kind.READING})
    assert [r.item for r in records] == appended
    assert all(r.item is item for r, item in zip(records, appended, strict=True))  # not decoded again


async def test_a_sink_far_behind_reads_sqlite_and_gets_the_same_records(tmp_path, monkeypatch):
    monkeypatch.setattr("gateway.outbox.TAIL_MAX_VALUES", 4)
    box = Outbox(tmp_path / "outbox.db", flush_interval=HOUR)
    await box.open()
    try:
        await box.register("slow")
        for i in range(10):
            box.append_batch(batch(i))
            if i == 5:
                box.append_event(Event("device_status", 5.5, "pump_1", {"online": False}))
        await box.flush()
        records, upto = await box.read(0, 100, {Kind.READING})  # records 1..7 only on disk
        assert [r.item.ts for r in records] == [batch(i).ts for i in range(10)]
        assert upto == 11
        events, _ = await box.read(0, 100, {Kind.EVENT})
        assert [(r.seq, r.item.body) for r in events] == [(7, {"online": False})]
        newest, upto = await box.read(8, 2, {Kind.READING, Kind.EVENT})  # from memory
        assert [r.seq for r in newest] == [9, 10] and upto == 10
    finally:
        await box.close()


async def test_memory_holds_only_records_some_sink_has_not_confirmed(box):
    await box.register("a")
    await box.register("b")
    for i in range(5):
        box.append_batch(batch(i))
    await box.flush()
    box.advance("a", 5)
    box.advance("b", 3)
    box.append_batch(batch(5))
    await box.flush()
    assert [r.seq for r in box._tail.records] == [4, 5, 6]
    records, _ = await box.read(3, 10, {Kind.READING})
    assert [r.seq for r in records] == [4, 5, 6]


async def test_a_flush_cancelled_during_a_commit_neither_loses_nor_repeats_records(tmp_path):
    box = Outbox(tmp_path / "outbox.db", flush_interval=HOUR)
    await box.open()
    held = HeldCommit(box)
    try:
        await box.register("mqtt")
        box.append_batch(batch(0))
        await held.wait_entered()  # a commit holds the first record on its way to disk
        box.append_batch(batch(1))
        box.append_batch(batch(2))
        flushing = asyncio.create_task(box.flush())
        await asyncio.sleep(0.01)
        flushing.cancel()  # e.g. a shutdown step that ran out of time
        await asyncio.gather(flushing, return_exceptions=True)
        held.release.set()
        assert await box.wait_committed(2, timeout=60)
        await box.flush()
        records, _ = await box.read(0, 100, {Kind.READING})
        assert [r.item.ts for r in records] == [batch(i).ts for i in range(3)]
        assert box.stats.committed_seq == 3
    finally:
        held.release.set()
        await box.close()


@pytest.mark.parametrize("fsync", ["full", "normal"])
async def test_under_load_commits_group_many_records(tmp_path, fsync):
    box = Outbox(tmp_path / "outbox.db", flush_interval=HOUR, fsync=fsync)
    await box.open()
    try:
        await box.register("influx")
        for i in range(2000):
            box.append_batch(batch(i))
            if i % 100 == 99:
                await asyncio.sleep(0)  # the source yields now and then, as a poll loop does
        await box.flush()
        assert box.stats.committed_seq == 2000
        assert box.stats.commits < 2000 / 10  # commits carried many records each
        records, _ = await box.read(0, 5000, {Kind.READING})
        assert [r.item.ts for r in records] == [batch(i).ts for i in range(2000)]
    finally:
        await box.close()


async def test_a_sink_whose_peer_is_away_holds_nothing_in_memory(box):
    await box.register("live")
    await box.register("down")
    box.peer_away("down", True)  # its runner found the peer gone: it confirms nothing
    for i in range(10):
        box.append_batch(batch(i))
    await box.flush()
    box.advance("live", 10)
    box.append_batch(batch(10))
    await box.flush()
    assert [r.seq for r in box._tail.records] == [11]  # only what the live sink lacks
    backlog, _ = await box.read(0, 100, {Kind.READING})  # the other reads SQLite
    assert [r.item.ts for r in backlog] == [batch(i).ts for i in range(11)]


async def test_a_sink_back_from_an_outage_reads_memory_again_once_it_caught_up(box):
    await box.register("mqtt")
    box.peer_away("mqtt", True)
    for i in range(5):
        box.append_batch(batch(i))
    await box.flush()
    assert box._tail.records == []  # nobody to keep them for
    box.peer_away("mqtt", False)  # the broker is back; the backlog is on disk
    for i in range(5, 8):
        box.append_batch(batch(i))
    await box.flush()
    backlog, upto = await box.read(0, 5, {Kind.READING})  # from disk
    assert [r.seq for r in backlog] == [1, 2, 3, 4, 5] and upto == 5
    box.advance("mqtt", 5)
    newest, _ = await box.read(5, 10, {Kind.READING})  # memory again
    assert [r.seq for r in newest] == [6, 7, 8]
    assert all(r.item is box._tail.records[i].item for i, r in enumerate(newest))


async def test_a_sink_lagging_far_behind_costs_at_most_tail_max_values(tmp_path, monkeypatch):
    monkeypatch.setattr("gateway.outbox.TAIL_MAX_VALUES", 4)
    box = Outbox(tmp_path / "outbox.db", flush_interval=HOUR)
    await box.open()
    try:
        await box.register("slow")
        for i in range(10):
            box.append_batch(batch(i))
        await box.flush()
        assert [r.seq for r in box._tail.records] == [7, 8, 9, 10]
        assert box._tail.values == 4
    finally:
        await box.close()


async def test_a_sink_registering_while_a_commit_lands_gets_that_commit(box):
    registering = asyncio.create_task(box.register("late"))
    await asyncio.sleep(0)  # it looks for the oldest record on the outbox thread
    box.append_batch(batch(0))  # and a commit follows right behind that look
    time.sleep(0.5)  # the loop is busy meanwhile: both are done before it looks again
    cursor = await registering
    records, _ = await box.read(cursor, 10, {Kind.READING})
    assert [r.seq for r in records] == [1]


async def test_records_appended_before_the_outbox_opens_are_committed_once_it_does(tmp_path):
    box = Outbox(tmp_path / "outbox.db", flush_interval=HOUR)
    box.append_batch(batch(0))
    await box.open()
    try:
        assert await box.wait_committed(0, timeout=60)
        records, _ = await box.read(0, 10, {Kind.READING})
        assert [r.item.ts for r in records] == [batch(0).ts]
    finally:
        await box.close()
