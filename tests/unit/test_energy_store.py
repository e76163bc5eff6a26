"""energy.db: what is kept of the polls, retention, and the read API the ledger uses
while the daemon writes."""

from __future__ import annotations

import sqlite3

import pytest
from test_energy_site import DAY, ENERGY, HOUR, MIN, T0, Clock, feed, open_stage, site, values

from gateway.energy.reader import EnergyReader


def test_polls_are_thinned_but_the_readings_around_a_boundary_and_flags_are_kept(tmp_path):
    clock = Clock()
    stage, _ = open_stage(site(tmp_path), tmp_path / "data", clock)
    polls = [(T0 + 30 * MIN + i * 10, 100 + 0.001 * i) for i in range(360)]  # 00:30-01:30
    polls.append((T0 + 90 * MIN, 3.0))  # a reset
    feed(stage, "w_101", "total_volume", polls, clock)
    with EnergyReader(tmp_path / "data") as reader:
        kept = reader.readings_between(None, None, device="w_101")
    times = [r.ts for r in kept]
    assert len(kept) < 12  # of 361 polls
    assert T0 + HOUR - 10 in times and T0 + HOUR in times  # the pair that gave 01:00's total
    assert kept[-1].flags == ("reset",) and kept[-1].raw == 3.0
    assert all(r.source == "poll" and r.by is None for r in kept)


def test_retention_removes_old_readings_and_keeps_rollups(tmp_path):
    config = site(tmp_path, energy={**ENERGY, "keep_days": 40})
    clock = Clock(T0 - 45 * DAY)
    stage, _ = open_stage(config, tmp_path / "data", clock)
    feed(stage, "em_101", "energy_import",
         [(T0 - 45 * DAY + i * HOUR, 10.0 * i) for i in range(49)], clock)
    feed(stage, "em_101", "energy_import", [(T0, 20000.0)], clock)
    stage.tick(T0)
    with EnergyReader(tmp_path / "data") as reader:
        assert [r.ts for r in reader.readings_between(None, None)] == [T0]
        days = reader.rollups("day", None, T0, device="em_101")
    assert len(days) == 45  # the rollups of the pruned days are the ledger: kept
    assert days[0].consumption == pytest.approx(240.0)


def test_the_reader_answers_while_the_stage_is_open_and_writing(tmp_path):
    clock = Clock()
    stage, _ = open_stage(site(tmp_path), tmp_path / "data", clock)
    feed(stage, "em_101", "energy_import", [(T0, 1000.0), (T0 + 20 * MIN, 1010.0)], clock)
    reader = EnergyReader(tmp_path / "data" / "energy.db")
    assert [r.raw for r in reader.latest()] == [1010.0]
    clock.now = T0 + 25 * MIN
    stage.replace_meter("em_101", 1012.0, 0.5, "张工")
    [replacement] = reader.replacements(device="em_101")
    assert (replacement.old_final, replacement.new_initial, replacement.previous,
            replacement.credited, replacement.by) == (1012.0, 0.5, 1010.0, 2.0, "张工")
    [event] = reader.events(kind="replaced")
    assert event.body["by"] == "张工"
    assert reader.reading_at_or_before("em_101", "energy_import", T0 + 22 * MIN).raw == 1010.0
    assert reader.latest("em_101")[0].source == "replacement"
    stage.close()
    assert reader.latest()[0].total == pytest.approx(12.0)
    reader.close()


def test_a_reader_on_a_site_that_never_ran_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="no energy database"):
        EnergyReader(tmp_path)


def test_a_full_disk_costs_no_reading_and_no_rollup_they_are_written_when_it_takes_them(
        tmp_path, monkeypatch):
    clock = Clock()
    stage, _ = open_stage(site(tmp_path), tmp_path / "data", clock)
    store = stage._store
    commit = store.commit

    def full(writes):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(store, "commit", full)
    out = feed(stage, "em_101", "energy_import",
               [(T0 + 50 * MIN, 1000.0), (T0 + 70 * MIN, 1010.0)], clock)  # closes 00:00-01:00
    assert values(out, "em_101", "energy_import_hour")  # sent all the same
    assert stage.stats()["store_errors"] == 2
    monkeypatch.setattr(store, "commit", commit)  # space again
    feed(stage, "em_101", "energy_import", [(T0 + 80 * MIN, 1012.0)], clock)
    with EnergyReader(tmp_path / "data") as reader:
        [hour] = reader.rollups("hour", None, T0 + HOUR, device="em_101")
        assert hour.start == T0
        assert {r.raw for r in reader.readings_between(None, None)} >= {1000.0, 1010.0}
    stage.close()
