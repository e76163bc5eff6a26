"""The local history: write, query, latest, duplicates, retention."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from gateway.batch import Batch, Event, Kind, Quality, Record
from gateway.config.models import HistorySinkConfig
from gateway.sinks.history import HistoryReader, HistoryRow, HistorySink


def _reading(seq: int, batch: Batch) -> Record:
    return Record(seq, f"r{seq}", Kind.READING, batch)


@pytest.fixture
async def sink(tmp_path: Path):
    sink = HistorySink(HistorySinkConfig(type="history", retention=3600), tmp_path)
    await sink.start()
    yield sink
    await sink.stop()


async def test_write_and_query(sink: HistorySink, tmp_path: Path) -> None:
    now = time.time()
    await sink.send(
        [
            _reading(1, Batch("pump1", now - 20, ("p", "run", "mode"), [0.5, True, "自动"])),
            _reading(2, Batch("pump1", now - 10, ("p", "run", "mode"), [0.6, False, "手动"])),
            _reading(3, Batch("fan1", now - 10, ("speed",), [1200])),
            Record(4, "e4", Kind.EVENT, Event("device_status", now, "pump1", {"online": True})),
        ]
    )
    assert sink.written == 7
    assert (tmp_path / "history.db").exists()
    with HistoryReader(tmp_path / "history.db") as reader:
        rows = reader.query("pump1", "p")
        assert rows == [
            HistoryRow(now - 10, "pump1", "p", 0.6, "good"),
            HistoryRow(now - 20, "pump1", "p", 0.5, "good"),
        ]
        assert [r.value for r in reader.query("pump1", "run")] == [0.0, 1.0]
        assert [r.value for r in reader.query("pump1", "mode")] == ["手动", "自动"]
        assert len(reader.query("pump1")) == 6
        assert len(reader.query("pump1", limit=2)) == 2
        assert [r.ts for r in reader.query("pump1", "p", since=now - 15)] == [now - 10]
        assert reader.query("nobody") == []


async def test_latest_per_point_with_bad_quality(sink: HistorySink, tmp_path: Path) -> None:
    now = time.time()
    await sink.send([_reading(1, Batch("pump1", now - 20, ("p", "q"), [0.5, 1.0]))])
    await sink.send(
        [_reading(2, Batch.failed("pump1", now - 10, ("p", "q"), Quality.COMM_FAILURE))]
    )
    await sink.send([_reading(3, Batch("fan1", now - 5, ("speed",), [900]))])
    with HistoryReader(tmp_path / "history.db") as reader:
        assert reader.latest("pump1") == [
            HistoryRow(now - 10, "pump1", "p", None, "comm_failure"),
            HistoryRow(now - 10, "pump1", "q", None, "comm_failure"),
        ]
        everything = reader.latest()
        assert [(r.device, r.point) for r in everything] == [
            ("fan1", "speed"),
            ("pump1", "p"),
            ("pump1", "q"),
        ]
        assert everything[0].value == 900.0


async def test_duplicate_delivery_does_not_double_rows(sink: HistorySink, tmp_path: Path) -> None:
    record = _reading(1, Batch("pump1", time.time(), ("p",), [0.5]))
    await sink.send([record])
    await sink.send([record])  # the runner resent after a crash
    with HistoryReader(tmp_path / "history.db") as reader:
        assert len(reader.query("pump1")) == 1


async def test_non_finite_value_is_stored_as_out_of_range(
    sink: HistorySink, tmp_path: Path
) -> None:
    await sink.send([_reading(1, Batch("pump1", time.time(), ("p",), [float("inf")]))])
    with HistoryReader(tmp_path / "history.db") as reader:
        (row,) = reader.query("pump1")
    assert row.value is None and row.quality == "out_of_range"


async def test_retention_deletes_old_rows(sink: HistorySink, tmp_path: Path) -> None:
    now = time.time()
    await sink.send(
        [
            _reading(1, Batch("pump1", now - 7200, ("p",), [0.1])),  # older than retention (1 h)
            _reading(2, Batch("pump1", now - 60, ("p",), [0.2])),
        ]
    )
    # The first send also ran a retention pass; add an old row behind its back and prune again.
    await sink.send([_reading(3, Batch("pump1", now - 5000, ("p",), [0.3]))])
    with HistoryReader(tmp_path / "history.db") as reader:
        assert [r.value for r in reader.query("pump1")] == [0.2, 0.3]
    await sink.prune()
    assert sink.pruned == 2
    with HistoryReader(tmp_path / "history.db") as reader:
        assert [r.value for r in reader.query("pump1")] == [0.2]
        assert reader.latest("pump1")[0].value == 0.2


async def test_reopen_keeps_data(tmp_path: Path) -> None:
    config = HistorySinkConfig(type="history")
    first = HistorySink(config, tmp_path)
    await first.send([_reading(1, Batch("pump1", time.time(), ("p",), [1.0]))])
    await first.stop()
    second = HistorySink(config, tmp_path)
    await second.start()
    await second.send([_reading(2, Batch("pump1", time.time() + 1, ("p",), [2.0]))])
    await second.stop()
    with HistoryReader(tmp_path / "history.db") as reader:
        assert [r.value for r in reader.latest()] == [2.0]


def test_reader_without_database(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        HistoryReader(tmp_path / "history.db")


async def test_a_poll_of_plain_numbers_is_stored_as_the_point_by_point_path_stores_it(
    tmp_path: Path,
) -> None:
    points = ("f", "i", "big", "on")
    values = [0.5, 7, 2**40, True]
    now = time.time()
    for name, quality in (("common", None), ("careful", [Quality.GOOD])):
        sink = HistorySink(HistorySinkConfig(type="history", retention=3600), tmp_path / name)
        await sink.start()
        await sink.send([_reading(1, Batch("meter", now, points, values, quality and quality * 4))])
        await sink.stop()
    with HistoryReader(tmp_path / "common" / "history.db") as common, \
            HistoryReader(tmp_path / "careful" / "history.db") as careful:
        assert common.latest() == careful.latest()
        assert [(r.point, r.value, r.quality) for r in common.latest()] == [
            ("big", float(2**40), "good"), ("f", 0.5, "good"), ("i", 7.0, "good"),
            ("on", 1.0, "good"),
        ]
