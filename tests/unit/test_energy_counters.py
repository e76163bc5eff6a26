"""Consumption from counters: wraps at the register's range, resets and implausible jumps
flagged instead of counted, replacements that keep the totals continuous, gaps."""

from __future__ import annotations

import pytest
from test_energy_site import MIN, T0, Clock, events, feed, open_stage, poll, site, total

from gateway.batch import Batch, Quality
from gateway.config.models import BacnetPoint, ModbusPoint
from gateway.energy.counters import (
    JUMP,
    RESET,
    RESUMED,
    ROLLOVER,
    CounterTracker,
    default_rollover,
)


def test_the_default_rollover_is_the_register_range_times_the_scale():
    assert default_rollover(ModbusPoint(address=0, type="uint16")) == 65536
    assert default_rollover(ModbusPoint(address=0, type="uint32", scale=0.01)) == pytest.approx(
        2**32 * 0.01)
    assert default_rollover(ModbusPoint(address=0, type="int32")) == 2**32
    assert default_rollover(ModbusPoint(address=0, type="uint64", scale=0.1)) == 2**64 * 0.1
    assert default_rollover(ModbusPoint(address=0, type="float32")) is None
    assert default_rollover(BacnetPoint(object="analog-input,1")) is None


def test_a_uint16_counter_wrapping_at_its_range_counts_across_the_wrap(tmp_path):
    stage, _ = open_stage(site(tmp_path), tmp_path / "data", Clock())
    out = feed(stage, "pulse_1", "kwh", [(T0, 65500), (T0 + MIN, 65530), (T0 + 2 * MIN, 30)])
    assert total(stage, "pulse_1", "kwh") == 66  # 30 to the top, 6 to 0, 30 after
    assert events(out) == []  # a wrap is normal: logged, not an event
    assert stage.meters()[-2]["raw"] == 30  # meters() in config order; pulse_1 is last device


def test_a_uint32_counter_with_a_scale_wraps_at_the_scaled_range():
    rollover = default_rollover(ModbusPoint(address=0, type="uint32", scale=0.01))
    tracker = CounterTracker("w", "total_volume", rollover=rollover)
    tracker.feed(T0, 42949672.90)
    step = tracker.feed(T0 + MIN, 0.05)
    assert step.flag == ROLLOVER
    assert tracker.total == pytest.approx(0.11)


def test_a_counter_going_backwards_is_a_reset_with_an_event_and_no_negative_consumption(tmp_path):
    stage, _ = open_stage(site(tmp_path), tmp_path / "data", Clock())
    out = feed(stage, "em_101", "energy_import",
               [(T0, 1000.0), (T0 + MIN, 1001.0), (T0 + 2 * MIN, 5.0), (T0 + 3 * MIN, 6.0)])
    [event] = events(out)
    assert event.device == "em_101"
    assert event.body | {"message": None} == {
        "point": "energy_import", "kind": "reset", "raw": 5.0, "previous": 1001.0,
        "ts": T0 + 2 * MIN, "total": 1.0, "unit": "kWh", "message": None}
    assert "reset or replaced" in event.body["message"]
    assert total(stage, "em_101", "energy_import") == 2.0  # 1 before, 1 after; the drop is not
    assert stage.meters()[3]["flag"] == "reset"


def test_float_noise_a_hair_below_the_last_reading_is_not_a_reset():
    tracker = CounterTracker("m", "kwh")
    tracker.feed(T0, 123456.78)
    step = tracker.feed(T0 + MIN, 123456.78 - 0.01)
    assert step.flag is None and tracker.total == 0
    tracker.feed(T0 + 2 * MIN, 123456.88)
    assert tracker.total == pytest.approx(0.1)


def test_an_implausible_jump_is_flagged_not_counted_and_counting_continues(tmp_path):
    stage, _ = open_stage(site(tmp_path), tmp_path / "data", Clock())
    # the profile allows 500 kWh/h; em_lobby's meter: overrides it to 50
    out = feed(stage, "em_lobby", "energy_import",
               [(T0, 1000.0), (T0 + 10 * MIN, 1005.0), (T0 + 11 * MIN, 1105.0),
                (T0 + 12 * MIN, 1105.5), (T0 + 13 * MIN, 1106.0)])
    [event] = events(out, JUMP)
    assert event.body["rate"] == pytest.approx(6000.0)
    assert event.body["max_rate"] == 50
    assert total(stage, "em_lobby", "energy_import") == pytest.approx(6.0)  # 5 + 0.5 + 0.5


def test_one_corrupted_read_is_a_glitch_and_loses_nothing():
    tracker = CounterTracker("m", "kwh", max_rate=50)
    tracker.feed(T0, 1000.0)
    assert tracker.feed(T0 + MIN, 99999.0).flag == JUMP
    step = tracker.feed(T0 + 2 * MIN, 1000.4)
    assert step.flag == RESUMED
    assert tracker.total == pytest.approx(0.4)
    assert tracker.unexplained is None


def test_a_wrap_faster_than_the_meter_can_count_is_a_reset():
    tracker = CounterTracker("m", "kwh", rollover=65536, max_rate=100)
    tracker.feed(T0, 60000)
    assert tracker.feed(T0 + MIN, 10).flag == RESET  # a "wrap" of 5546 kWh in a minute
    assert tracker.total == 0


def test_a_recorded_replacement_keeps_the_totals_continuous(tmp_path):
    clock = Clock()
    stage, _ = open_stage(site(tmp_path), tmp_path / "data", clock)
    feed(stage, "em_101", "energy_import", [(T0, 1000.0), (T0 + 10 * MIN, 1010.0)], clock)
    clock.now = T0 + 12 * MIN
    [event] = stage.replace_meter("em_101", 1012.0, 0.0, "张工")
    assert event.body["kind"] == "replaced"
    assert event.body["credited"] == pytest.approx(2.0)
    assert event.body["by"] == "张工"
    out = feed(stage, "em_101", "energy_import", [(T0 + 13 * MIN, 3.0)], clock)
    assert events(out) == []  # the new meter's low reading is no reset
    assert total(stage, "em_101", "energy_import") == pytest.approx(15.0)  # 10 + 2 + 3


def test_a_replacement_recorded_after_the_swap_was_seen_as_a_reset_credits_what_it_dropped(
        tmp_path):
    clock = Clock()
    stage, _ = open_stage(site(tmp_path), tmp_path / "data", clock)
    out = feed(stage, "em_101", "energy_import",
               [(T0, 1000.0), (T0 + 10 * MIN, 1010.0), (T0 + 15 * MIN, 1.0)], clock)
    assert [e.body["kind"] for e in events(out)] == [RESET]
    clock.now = T0 + 60 * MIN  # entered an hour later, the swap's time given
    stage.replace_meter("em_101", 1012.0, 0.0, "张工", at=T0 + 12 * MIN)
    feed(stage, "em_101", "energy_import", [(T0 + 61 * MIN, 4.0)], clock)
    # old meter 1000 → 1012, new meter 0 → 4
    assert total(stage, "em_101", "energy_import") == pytest.approx(16.0)


def test_a_replacement_whose_final_reading_is_below_the_last_is_refused(tmp_path):
    clock = Clock()
    stage, _ = open_stage(site(tmp_path), tmp_path / "data", clock)
    feed(stage, "em_101", "energy_import", [(T0, 1000.0)], clock)
    with pytest.raises(ValueError, match="below the reading before it"):
        stage.replace_meter("em_101", 990.0, 0.0, "张工")
    assert stage.counters["em_101"]["energy_import"].tracker.last_raw == 1000.0


def test_a_reading_with_bad_quality_is_a_gap_not_a_zero(tmp_path):
    stage, _ = open_stage(site(tmp_path), tmp_path / "data", Clock())
    stage.process(poll("em_101", T0, energy_import=1000.0))
    failed = Batch.failed("em_101", T0 + MIN, ("energy_import", "voltage"), Quality.COMM_FAILURE)
    assert stage.process(failed) == []
    stage.process(Batch("em_101", T0 + 2 * MIN, ("energy_import",), ["garbage"]))
    out = stage.process(poll("em_101", T0 + 3 * MIN, energy_import=1002.0))
    assert events(out) == []
    assert total(stage, "em_101", "energy_import") == 2.0
    assert stage.stats()["ignored"] == 2


def test_a_batch_of_a_device_that_is_not_a_meter_passes_untouched(tmp_path):
    stage, _ = open_stage(site(tmp_path), tmp_path / "data", Clock())
    assert stage.process(poll("pump_1", T0, outlet_pressure=0.3)) == []
    assert stage.process(poll("em_101", T0, voltage=230.0)) == []
