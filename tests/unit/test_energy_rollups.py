"""Hourly, daily and monthly rollups: local boundaries, outages interpolated and flagged,
restarts that continue the totals."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from test_energy_site import (
    DAY,
    ENERGY,
    HOUR,
    MIN,
    T0,
    Clock,
    feed,
    open_stage,
    site,
    total,
    values,
)

from gateway.energy.periods import Calendar
from gateway.energy.reader import EnergyReader

NOV30 = datetime(2026, 11, 29, 16, 0, tzinfo=UTC).timestamp()  # 2026-11-30 00:00 in Shanghai


def test_rollups_close_on_shanghai_hours_days_and_months(tmp_path):
    clock = Clock(NOV30)
    stage, _ = open_stage(site(tmp_path), tmp_path / "data", clock)
    # 25 hours of polls every 5 minutes, 1.2 kWh each: to 01:00 on 1 December, local
    out = feed(stage, "em_101", "energy_import",
               [(NOV30 + i * 5 * MIN, 1000 + 1.2 * i) for i in range(25 * 12 + 1)], clock)

    hours = values(out, "em_101", "energy_import_hour")
    assert sorted(hours) == [NOV30 + h * HOUR for h in range(25)]
    assert all(v == pytest.approx(14.4) for v in hours.values())
    assert set(values(out, "em_101", "energy_import_hour_estimated").values()) == {0}

    day = datetime(2026, 11, 29, 16, 0, tzinfo=UTC).timestamp()  # a local day starts 16:00 UTC
    assert values(out, "em_101", "energy_import_day") == {day: pytest.approx(345.6)}
    assert values(out, "em_101", "energy_import_day_estimated") == {day: 0}

    november = datetime(2026, 10, 31, 16, 0, tzinfo=UTC).timestamp()
    assert values(out, "em_101", "energy_import_month") == {november: pytest.approx(345.6)}
    # tracking began on the 30th: the month is partial, so it says so
    assert values(out, "em_101", "energy_import_month_estimated") == {november: 1}

    with EnergyReader(tmp_path / "data") as reader:
        [row] = reader.rollups("day", device="em_101")
        [month] = reader.rollups("month")
    assert (row.start_local, row.end_local) == ("2026-11-30T00:00:00+08:00",
                                                "2026-12-01T00:00:00+08:00")
    assert (row.opening_raw, row.closing_raw) == (1000.0, pytest.approx(1345.6))
    assert month.end_local == "2026-12-01T00:00:00+08:00"


def test_rollups_across_an_outage_sum_to_the_counter_difference_and_are_estimated(tmp_path):
    clock = Clock()
    stage, _ = open_stage(site(tmp_path), tmp_path / "data", clock)
    before = [(T0 + i * MIN, 100 + 0.5 * i) for i in range(151)]  # to 02:30, 30 m³/h
    after = [(T0 + 450 * MIN + i * MIN, 675 + 0.5 * i) for i in range(91)]  # from 07:30 to 09:00
    out = feed(stage, "main_water", "total_volume", before + after, clock)

    hours = values(out, "main_water", "total_volume_hour")
    estimated = values(out, "main_water", "total_volume_hour_estimated")
    assert sorted(hours) == [T0 + h * HOUR for h in range(9)]
    # the 500 m³ drawn during the five silent hours are all in the hours that span them
    assert sum(hours[T0 + h * HOUR] for h in range(2, 8)) == pytest.approx(690 - 160)  # total(08:00) - total(02:00)
    assert sum(hours.values()) == pytest.approx(675 + 45 - 100)
    assert [estimated[T0 + h * HOUR] for h in range(9)] == [0, 0, 1, 1, 1, 1, 1, 1, 0]


def test_a_period_with_no_reading_in_it_is_estimated_even_when_the_gap_is_allowed(tmp_path):
    clock = Clock()
    stage, _ = open_stage(site(tmp_path, energy={**ENERGY, "gap_estimate_after": 3 * DAY}),
                          tmp_path / "data", clock)
    out = feed(stage, "em_101", "energy_import",
               [(T0, 0.0), (T0 + 2 * HOUR, 2.0), (T0 + 2 * DAY + HOUR, 49.0)], clock)
    days = values(out, "em_101", "energy_import_day")
    assert days == {T0: pytest.approx(24.0), T0 + DAY: pytest.approx(24.0)}
    assert values(out, "em_101", "energy_import_day_estimated") == {T0: 0, T0 + DAY: 1}


def test_a_restart_continues_the_totals_and_closes_the_periods_that_ended_while_down(tmp_path):
    config = site(tmp_path)
    clock = Clock()
    stage, _ = open_stage(config, tmp_path / "data", clock)
    feed(stage, "em_101", "energy_import",
         [(T0 + i * 5 * MIN, 500 + 1.2 * i) for i in range(11)], clock)  # to 00:50
    assert total(stage, "em_101", "energy_import") == pytest.approx(12.0)
    stage.close()

    clock.now = T0 + 190 * MIN  # back at 03:10
    again, opened = open_stage(config, tmp_path / "data", clock)
    assert values(opened, "em_101", "energy_import_hour") == {}  # no reading after them yet
    out = feed(again, "em_101", "energy_import", [(T0 + 190 * MIN, 540.0)], clock)

    assert total(again, "em_101", "energy_import") == pytest.approx(40.0)
    hours = values(out, "em_101", "energy_import_hour")
    assert sorted(hours) == [T0, T0 + HOUR, T0 + 2 * HOUR]
    assert sum(hours.values()) == pytest.approx(540 - 500 - (540 - 512) * 10 / 140)
    assert set(values(out, "em_101", "energy_import_hour_estimated").values()) == {1}


def test_local_days_follow_daylight_saving_time():
    berlin = Calendar("Europe/Berlin")
    spring = datetime(2026, 3, 28, 23, 0, tzinfo=UTC).timestamp()  # 29 March 00:00 CET
    assert berlin.start(spring + 5 * HOUR, "day") == spring
    assert berlin.next(spring, "day") - spring == 23 * HOUR
    assert len(list(berlin.boundaries(spring, spring + 23 * HOUR, "hour"))) == 23
    assert berlin.iso(berlin.next(spring, "day")) == "2026-03-30T00:00:00+02:00"
    shanghai = Calendar("Asia/Shanghai")
    assert shanghai.month(T0) == "2026-11"
    assert shanghai.next(T0, "month") == datetime(2026, 11, 30, 16, tzinfo=UTC).timestamp()
