"""The outbox keeps every record until each sink confirmed it, and drops only readings."""

from __future__ import annotations

import json
import sqlite3

import pytest

from gateway.batch import Batch, Event, Kind
from gateway.outbox import Outbox
from gateway.outbox_codec import decode, encode

POINTS = ("pressure", "running")


def batch(i: int, device: str = "pump_1") -> Batch:
    return Batch(device, 1_700_000_000.0 + i, POINTS, [0.45 + i, 1])


@pytest.fixture
async def outbox(tmp_path):
    box = Outbox(tmp_path / "outbox.db", flush_interval=0.05)
    await box.open()
    yield box
    await box.close()


async def test_committed_batches_come_back_in_order_with_unique_ids(outbox):
    await outbox.register("influx")
    for i in range(5):
        outbox.append_batch(batch(i))
    await outbox.flush()
    records, upto = await outbox.read(0, 100, {Kind.READING, Kind.EVENT})
    assert [r.item.values[0] for r in records] == [0.45 + i for i in range(5)]
    assert [r.seq for r in records] == [1, 2, 3, 4, 5]
    assert len({r.id for r in records}) == 5
    assert all(r.id.startswith(outbox.epoch + ":") for r in records)
    assert upto == 5


async def test_a_sink_that_takes_only_readings_skips_past_events(outbox):
    await outbox.register("influx")
    outbox.append_batch(batch(0))
    outbox.append_event(Event("device_status", 1.0, "pump_1", {"online": False}))
    outbox.append_event(Event("device_status", 2.0, "pump_1", {"online": True}))
    await outbox.flush()
    records, upto = await outbox.read(0, 100, {Kind.READING})
    assert [r.kind for r in records] == [Kind.READING]
    assert upto == 3  # the cursor may move past the events it does not want


async def test_records_and_cursors_survive_a_reopen(tmp_path):
    box = Outbox(tmp_path / "outbox.db")
    await box.open()
    await box.register("mqtt")
    for i in range(10):
        box.append_batch(batch(i))
    await box.flush()
    box.advance("mqtt", 4)
    epoch = box.epoch
    await box.close()

    again = Outbox(tmp_path / "outbox.db")
    await again.open()
    try:
        assert again.epoch == epoch
        assert await again.register("mqtt") == 4
        records, _ = await again.read(4, 100, {Kind.READING})
        assert [r.seq for r in records] == list(range(5, 11))
        again.append_batch(batch(10))
        await again.flush()
        assert again.stats.committed_seq == 11  # sequence numbers are never reused
    finally:
        await again.close()


async def test_records_every_sink_confirmed_are_deleted(tmp_path, monkeypatch):
    monkeypatch.setattr("gateway.outbox._COMPACT_EVERY", 0.0)
    box = Outbox(tmp_path / "outbox.db")
    await box.open()
    await box.register("a")
    await box.register("b")
    for i in range(10):
        box.append_batch(batch(i))
    await box.flush()
    box.advance("a", 10)
    box.advance("b", 6)
    box.append_batch(batch(10))
    await box.flush()
    await box.close()
    db = sqlite3.connect(tmp_path / "outbox.db")
    assert [s for (s,) in db.execute("SELECT seq FROM records ORDER BY seq")] == [7, 8, 9, 10, 11]


async def test_a_sink_removed_from_the_config_does_not_hold_records_back(tmp_path, monkeypatch):
    monkeypatch.setattr("gateway.outbox._COMPACT_EVERY", 0.0)
    box = Outbox(tmp_path / "outbox.db")
    await box.open()
    await box.register("old")
    for i in range(5):
        box.append_batch(batch(i))
    await box.flush()
    await box.close()

    box = Outbox(tmp_path / "outbox.db")
    await box.open()
    await box.register("new")  # "old" is no longer configured
    box.advance("new", 5)
    box.append_batch(batch(5))
    await box.flush()
    await box.close()
    db = sqlite3.connect(tmp_path / "outbox.db")
    assert [s for (s,) in db.execute("SELECT seq FROM records")] == [6]


async def test_a_new_sink_starts_at_the_oldest_record_kept(outbox):
    for i in range(3):
        outbox.append_batch(batch(i))
    await outbox.flush()
    assert await outbox.register("late") == 0
    records, _ = await outbox.read(0, 100, {Kind.READING})
    assert len(records) == 3


async def test_when_full_the_oldest_readings_go_and_every_event_stays(tmp_path):
    box = Outbox(tmp_path / "outbox.db", max_size=256 * 1024)
    await box.open()
    await box.register("unreachable")  # never confirms anything
    events = 0
    for round_ in range(40):
        for i in range(100):
            box.append_batch(Batch("meter", float(round_ * 100 + i), ("kwh",), ["x" * 200]))
        box.append_event(Event("device_status", float(round_), "meter", {"round": round_}))
        events += 1
        await box.flush()
    try:
        assert box.stats.dropped_readings > 0
        assert box.stats.size_bytes <= 256 * 1024 * 1.05
        kept, _ = await box.read(0, 100_000, {Kind.EVENT})
        assert [r.item.body["round"] for r in kept] == list(range(events))
        readings, _ = await box.read(0, 100_000, {Kind.READING})
        # What is left is the newest readings, contiguous to the end.
        ts = [r.item.ts for r in readings]
        assert ts == sorted(ts) and ts[-1] == 3999.0
        assert len(readings) + box.stats.dropped_readings == 4000
    finally:
        await box.close()


async def test_dropped_count_survives_a_restart(tmp_path):
    box = Outbox(tmp_path / "outbox.db", max_size=64 * 1024)
    await box.open()
    await box.register("unreachable")
    for i in range(2000):
        box.append_batch(Batch("meter", float(i), ("kwh",), ["y" * 100]))
    await box.flush()
    dropped = box.stats.dropped_readings
    await box.close()
    assert dropped > 0
    again = Outbox(tmp_path / "outbox.db", max_size=64 * 1024)
    await again.open()
    assert again.stats.dropped_readings == dropped
    await again.close()


async def test_the_flusher_commits_without_being_asked(outbox):
    outbox.append_batch(batch(0))
    assert await outbox.wait_committed(0, timeout=2.0)
    assert outbox.stats.committed_seq == 1


async def test_a_locked_database_delays_commits_but_loses_nothing(tmp_path):
    # An operator's sqlite3 shell (or a backup tool) holds the write lock for a while.
    box = Outbox(tmp_path / "outbox.db", flush_interval=0.05)
    await box.open()
    await box.register("mqtt")
    box._db.execute("PRAGMA busy_timeout = 0")  # fail at once instead of waiting 5 s
    locker = sqlite3.connect(tmp_path / "outbox.db", isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")
    try:
        for i in range(5):
            box.append_batch(batch(i))
        box.append_event(Event("alarm", 1.0, "pump_1", {"severity": "critical"}))
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            await box.flush()
        assert box.stats.committed_seq == 0
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    box.append_batch(batch(5))
    await box.flush()  # the same connection commits again: no transaction left open
    records, _ = await box.read(0, 100, {Kind.READING, Kind.EVENT})
    assert [r.kind for r in records] == [Kind.READING] * 5 + [Kind.EVENT, Kind.READING]
    assert [r.item.ts for r in records if r.kind == Kind.READING] == [batch(i).ts for i in range(6)]
    await box.close()


async def test_a_value_json_cannot_hold_is_stored_as_text_not_lost_with_its_group(tmp_path):
    box = Outbox(tmp_path / "outbox.db")
    await box.open()
    await box.register("influx")
    box.append_batch(Batch("io", 1.0, ("raw",), [b"\x01\x02"]))
    box.append_batch(batch(1))
    await box.flush()
    await box.close()
    again = Outbox(tmp_path / "outbox.db")  # read back from disk, not from memory
    await again.open()
    try:
        records, _ = await again.read(0, 100, {Kind.READING})
    finally:
        await again.close()
    assert [r.item.values for r in records] == [["b'\\x01\\x02'"], [1.45, 1]]


@pytest.mark.parametrize("item", [
    Batch("pump_1", 1_700_000_000.25, ("p", "q", "s"), [0.5, 7, "on"]),
    Batch("水泵 \"1\"", 1.0, ("流量",), [None], ["comm_failure"]),
    Batch("pump_1", 5, ("p",), [float("nan")]),
    Event("alarm_state", 2.0, "pump_1", {"alarm": "pump_1.high", "closed": False}),
])
def test_a_record_is_stored_as_its_dict_in_json(item):
    assert json.loads(encode(item)) == json.loads(json.dumps(item.to_dict()))
    kind = Kind.READING if isinstance(item, Batch) else Kind.EVENT
    assert repr(decode(kind, encode(item))) == repr(item)
