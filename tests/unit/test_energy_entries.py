"""What operators enter: manual readings (stored with source and who), refused with a
reason when wrong, and the handover snapshot of a household's meters."""

from __future__ import annotations

import pytest
from test_energy_site import DAY, HOUR, MIN, T0, Clock, feed, open_stage, site, values

from gateway.batch import Batch
from gateway.energy.reader import EnergyReader


def test_a_manual_reading_is_stored_with_its_source_and_who_entered_it_and_sent(tmp_path):
    clock = Clock(T0 + HOUR)
    stage, _ = open_stage(site(tmp_path), tmp_path / "data", clock)
    out = stage.manual_reading("gas_101", 123.4, "李师傅", at=T0)
    assert out == [Batch("gas_101", T0, ("reading",), [123.4])]
    clock.now = T0 + 2 * DAY
    out = stage.manual_reading("gas_101", "171.4", "李师傅")  # text from a form is fine
    assert values(out, "gas_101", "reading_day") == {T0: pytest.approx(24.0),
                                                     T0 + DAY: pytest.approx(24.0)}
    with EnergyReader(tmp_path / "data") as reader:
        rows = reader.readings_between(None, None, device="gas_101")
    assert [(r.raw, r.source, r.by) for r in rows] == [(123.4, "manual", "李师傅"),
                                                       (171.4, "manual", "李师傅")]


def test_a_manual_reading_of_an_unknown_meter_suggests_the_closest_id(tmp_path):
    stage, _ = open_stage(site(tmp_path), tmp_path / "data", Clock())
    with pytest.raises(ValueError, match="no meter 'gas_l01'; did you mean gas_101"):
        stage.manual_reading("gas_l01", 1.0, "李师傅")
    with pytest.raises(ValueError, match="em_101 has no counter 'voltage'"):
        stage.manual_reading("em_101", 1.0, "李师傅", point="voltage")


def test_a_manual_reading_that_is_not_a_number_or_in_the_future_is_refused(tmp_path):
    stage, _ = open_stage(site(tmp_path), tmp_path / "data", Clock())
    with pytest.raises(ValueError, match="'十二' is not a number"):
        stage.manual_reading("gas_101", "十二", "李师傅")
    with pytest.raises(ValueError, match="in the future"):
        stage.manual_reading("gas_101", 12.0, "李师傅", at=T0 + HOUR)
    with pytest.raises(ValueError, match="say who"):
        stage.manual_reading("gas_101", 12.0, " ")
    assert stage.meters()[-1]["raw"] is None  # nothing stored or tracked


def test_a_manual_reading_below_the_last_is_refused_with_the_last_reading(tmp_path):
    clock = Clock()
    stage, _ = open_stage(site(tmp_path), tmp_path / "data", clock)
    stage.manual_reading("gas_101", 500.0, "李师傅")
    clock.now += DAY
    with pytest.raises(ValueError, match=r"below the last reading of gas_101.reading \(500.0"):
        stage.manual_reading("gas_101", 50.0, "李师傅")
    with pytest.raises(ValueError, match="already has a reading at or after"):
        stage.manual_reading("gas_101", 510.0, "李师傅", at=T0 - MIN)


def test_a_handover_snapshot_records_every_meter_of_the_household(tmp_path):
    clock = Clock()
    stage, _ = open_stage(site(tmp_path), tmp_path / "data", clock)
    feed(stage, "w_101", "total_volume", [(T0, 12.34)], clock)
    feed(stage, "em_101", "energy_import", [(T0 + MIN, 4321.5)], clock)
    feed(stage, "w_102", "total_volume", [(T0 + MIN, 99.0)], clock)  # the neighbour's
    clock.now = T0 + 2 * MIN

    snap = stage.snapshot("1-101", "物业前台王")
    assert (snap["household"], snap["ts"], snap["by"]) == ("1-101", T0 + 2 * MIN, "物业前台王")
    assert snap["meters"] == [
        {"meter": "w_101", "point": "total_volume", "reading": 12.34, "unit": "m³", "at": T0},
        {"meter": "em_101", "point": "energy_import", "reading": 4321.5, "unit": "kWh",
         "at": T0 + MIN},
        {"meter": "gas_101", "point": "reading", "reading": None, "unit": "m³", "at": None},
    ]
    with EnergyReader(tmp_path / "data") as reader:
        rows = reader.snapshots("2026-11")
        assert reader.snapshots("2026-12") == []
    assert [(r.household, r.device, r.reading, r.by) for r in rows] == [  # by device
        ("1-101", "em_101", 4321.5, "物业前台王"), ("1-101", "gas_101", None, "物业前台王"),
        ("1-101", "w_101", 12.34, "物业前台王")]
    with pytest.raises(ValueError, match="no meter serves household '1-1011'; did you mean 1-101"):
        stage.snapshot("1-1011", "物业前台王")
