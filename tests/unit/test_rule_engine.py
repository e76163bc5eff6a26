"""The rule engine on every kind of rule a site writes: thresholds with a deadband,
delays, rates, comm loss, state machines, command against status, counters, derived
points read by other rules, and a rule that fails without stopping the others."""

from __future__ import annotations

from test_engine_site import (
    MIN,
    T0,
    Clock,
    batches,
    events_of,
    failed,
    kinds,
    open_engine,
    poll,
    site,
    states,
    transitions,
)

LOW_PRESSURE = {
    "id": "low_outlet_pressure", "name": "出水压力低",
    "when": "outlet_pressure < 0.20", "clear": "outlet_pressure > 0.25",
    "alarm": {"severity": "major", "message": "出水压力低 {outlet_pressure:.2f} MPa"},
}


def test_a_threshold_with_a_deadband_raises_below_the_set_and_returns_only_above_the_clear(tmp_path):
    engine, _ = open_engine(site([LOW_PRESSURE]), tmp_path, Clock())
    alarm = "pump_1.low_outlet_pressure"

    assert transitions(engine.process(poll("pump_1", T0, outlet_pressure=0.30))) == []
    out = engine.process(poll("pump_1", T0 + 5, outlet_pressure=0.15))
    assert transitions(out) == [(alarm, "raised")]
    assert events_of(out, "alarm_event")[0].body["message"] == "出水压力低 0.15 MPa"
    assert states(out) == {alarm: "active_unacknowledged"}
    assert kinds(engine.process(poll("pump_1", T0 + 10, outlet_pressure=0.22))) == []  # in the band
    assert kinds(engine.process(poll("pump_1", T0 + 15, outlet_pressure=0.24))) == []
    assert kinds(engine.process(poll("pump_1", T0 + 20, outlet_pressure=0.26))) == ["returned"]


def test_a_reading_between_set_and_clear_does_not_raise_a_normal_alarm(tmp_path):
    engine, _ = open_engine(site([LOW_PRESSURE]), tmp_path, Clock())
    assert kinds(engine.process(poll("pump_1", T0, outlet_pressure=0.22))) == []
    assert engine.alarm("pump_1.low_outlet_pressure")["state"] == "normal"


ON_DELAY = {"id": "low_pressure", "when": "outlet_pressure < 0.2", "for": "30s",
            "off_delay": "30s", "alarm": {"severity": "minor"}}


def test_a_blip_shorter_than_the_on_delay_raises_nothing(tmp_path):
    engine, _ = open_engine(site([ON_DELAY]), tmp_path, Clock())
    assert kinds(engine.process(poll("pump_1", T0, outlet_pressure=0.1))) == []
    assert kinds(engine.process(poll("pump_1", T0 + 20, outlet_pressure=0.3))) == []
    assert kinds(engine.tick(T0 + 60)) == []


def test_a_condition_held_for_the_on_delay_raises_on_the_tick_that_sees_it(tmp_path):
    engine, _ = open_engine(site([ON_DELAY]), tmp_path, Clock())
    engine.process(poll("pump_1", T0, outlet_pressure=0.1))
    assert kinds(engine.tick(T0 + 29)) == []
    out = engine.tick(T0 + 30)
    assert kinds(out) == ["raised"]
    assert events_of(out, "alarm_event")[0].ts == T0 + 30


def test_a_dip_shorter_than_the_off_delay_changes_nothing_and_a_longer_one_returns(tmp_path):
    engine, _ = open_engine(site([ON_DELAY]), tmp_path, Clock())
    engine.process(poll("pump_1", T0, outlet_pressure=0.1))
    assert kinds(engine.tick(T0 + 30)) == ["raised"]
    engine.process(poll("pump_1", T0 + 40, outlet_pressure=0.3))
    assert kinds(engine.process(poll("pump_1", T0 + 50, outlet_pressure=0.1))) == []
    engine.process(poll("pump_1", T0 + 60, outlet_pressure=0.3))
    assert kinds(engine.tick(T0 + 89)) == []
    assert kinds(engine.tick(T0 + 90)) == ["returned"]


def test_a_rate_of_change_rule_catches_a_level_rising_fast(tmp_path):
    rule = {"id": "level_rising", "name": "集水井水位上涨快", "when": "rate(level) > 5",
            "alarm": {"severity": "major"}}
    engine, _ = open_engine(site([rule]), tmp_path, Clock())
    engine.process(poll("pump_1", T0, level=20))
    assert kinds(engine.process(poll("pump_1", T0 + MIN, level=23))) == []  # 3 %/min
    assert kinds(engine.process(poll("pump_1", T0 + 2 * MIN, level=30))) == ["raised"]  # 7 %/min
    assert kinds(engine.process(poll("pump_1", T0 + 3 * MIN, level=31))) == ["returned"]


def test_comm_loss_is_caught_by_stale_while_failed_polls_keep_coming(tmp_path):
    rule = {"id": "meter_silent", "name": "电表无数据", "when": 'stale(kwh, "2m")',
            "alarm": {"severity": "minor"}}
    engine, _ = open_engine(site([rule]), tmp_path, Clock())
    engine.process(poll("pump_1", T0, kwh=1000))
    for t in (30, 60, 90):
        assert kinds(engine.process(failed("pump_1", T0 + t, "kwh"))) == []
    assert kinds(engine.tick(T0 + 119)) == []
    assert kinds(engine.tick(T0 + 121)) == ["raised"]
    assert kinds(engine.process(poll("pump_1", T0 + 150, kwh=1001))) == ["returned"]


def test_a_dead_sensor_neither_raises_nor_clears_an_alarm(tmp_path):
    engine, _ = open_engine(site([LOW_PRESSURE]), tmp_path, Clock())
    engine.process(poll("pump_1", T0, outlet_pressure=0.1))
    assert kinds(engine.process(failed("pump_1", T0 + 5, "outlet_pressure"))) == []
    assert engine.alarm("pump_1.low_outlet_pressure")["active"] is True


def test_a_multi_point_state_condition_raises_only_in_that_state(tmp_path):
    rule = {"id": "auto_not_running", "name": "自动状态未运行",
            "when": "state == 3 and running == 0 and fault == 0", "alarm": {"severity": "minor"}}
    engine, _ = open_engine(site([rule]), tmp_path, Clock())
    assert kinds(engine.process(poll("pump_1", T0, state=1, running=0, fault=0))) == []
    assert kinds(engine.process(poll("pump_1", T0 + 5, state=3, running=1, fault=0))) == []
    assert kinds(engine.process(poll("pump_1", T0 + 10, state=3, running=0, fault=0))) == ["raised"]
    assert kinds(engine.process(poll("pump_1", T0 + 15, state=3, running=0, fault=1))) == ["returned"]


def test_a_command_and_status_mismatch_for_a_minute_raises_a_site_rule_on_its_device(tmp_path):
    rule = {"id": "fan_mismatch", "name": "命令与状态不符",
            "when": "pump_2.command == 1 and pump_2.status == 0", "for": "60s",
            "alarm": {"severity": "major"}}
    engine, _ = open_engine(site(site_rules=[rule], devices=("pump_1", "pump_2")), tmp_path, Clock())
    engine.process(poll("pump_2", T0, command=1, status=0))
    assert kinds(engine.process(poll("pump_2", T0 + 30, command=1, status=0))) == []
    out = engine.process(poll("pump_2", T0 + 60, command=1, status=0))
    assert transitions(out) == [("pump_2.fan_mismatch", "raised")]
    assert events_of(out, "alarm_event")[0].device == "pump_2"


def test_a_status_that_follows_its_command_within_the_minute_raises_nothing(tmp_path):
    rule = {"id": "fan_mismatch", "when": "pump_1.command == 1 and pump_1.status == 0",
            "for": "60s", "alarm": {"severity": "major"}}
    engine, _ = open_engine(site(site_rules=[rule]), tmp_path, Clock())
    engine.process(poll("pump_1", T0, command=1, status=0))
    engine.process(poll("pump_1", T0 + 20, command=1, status=1))
    assert kinds(engine.tick(T0 + 90)) == []


def test_too_many_starts_within_an_hour_is_short_cycling(tmp_path):
    rule = {"id": "short_cycling", "name": "频繁启停", "when": 'rises(running, "1h") > 3',
            "alarm": {"severity": "warning"}}
    engine, _ = open_engine(site([rule]), tmp_path, Clock())
    raised = []
    for i in range(10):
        raised += kinds(engine.process(poll("pump_1", T0 + i * 5 * MIN, running=i % 2)))
    assert raised == ["raised"]
    assert engine.alarm("pump_1.short_cycling")["active"] is True


def test_a_derived_point_is_emitted_as_a_batch_and_read_by_another_rule_in_the_same_call(tmp_path):
    rules = [
        {"id": "head", "derive": "outlet_pressure * 102", "unit": "m"},
        {"id": "low_head", "when": "head < 20", "alarm": {"severity": "minor",
                                                           "message": "扬程 {head:.0f} m"}},
    ]
    engine, _ = open_engine(site(rules), tmp_path, Clock())
    out = engine.process(poll("pump_1", T0, outlet_pressure=0.15, running=1))
    [batch] = batches(out)
    assert (batch.device, batch.ts, batch.points, batch.quality) == ("pump_1", T0, ("head",), None)
    assert round(batch.values[0], 2) == 15.3
    assert kinds(out) == ["raised"]
    assert events_of(out, "alarm_event")[0].body["message"] == "扬程 15 m"
    assert engine.derived_points() == {"pump_1": ["head"]}


def test_a_derived_point_that_cannot_be_known_is_sent_with_a_bad_quality(tmp_path):
    rules = [{"id": "head", "derive": "outlet_pressure * 102"},
             {"id": "flow_ok", "derive": "running == 1"}]
    engine, _ = open_engine(site(rules), tmp_path, Clock())
    [batch] = batches(engine.process(failed("pump_1", T0, "outlet_pressure", "running")))
    assert batch.points == ("head", "flow_ok")
    assert batch.values == [None, None]
    assert batch.quality == ["decode_error", "decode_error"]


def test_a_derived_point_reading_a_later_derived_point_runs_after_it(tmp_path):
    rules = [{"id": "head_ft", "derive": "head * 3.28"},
             {"id": "head", "derive": "outlet_pressure * 100"}]
    engine, _ = open_engine(site(rules), tmp_path, Clock())
    [batch] = batches(engine.process(poll("pump_1", T0, outlet_pressure=0.2)))
    values = dict(zip(batch.points, batch.values, strict=True))
    assert values["head"] == 20.0
    assert round(values["head_ft"], 1) == 65.6


def test_a_derived_point_over_a_window_is_re_evaluated_on_the_tick_at_its_every_pace(tmp_path):
    rule = {"id": "starts_per_hour", "derive": 'rises(running, "1h")', "every": "1m"}
    engine, _ = open_engine(site([rule]), tmp_path, Clock())  # open ticks at T0
    engine.process(poll("pump_1", T0, running=0))
    engine.process(poll("pump_1", T0 + 10, running=1))  # one start
    assert batches(engine.tick(T0 + 30)) == []  # not a minute yet: no reading per tick
    [batch] = batches(engine.tick(T0 + 60))
    assert (batch.ts, batch.points, batch.values) == (T0 + 60, ("starts_per_hour",), [1])
    assert batches(engine.tick(T0 + 61)) == []
    [batch] = batches(engine.tick(T0 + 3700))  # the hour slid past the start
    assert batch.values == [0]


def test_only_rules_reading_a_point_of_the_batch_are_evaluated(tmp_path):
    rules = [LOW_PRESSURE, {"id": "meter_high", "when": "kwh > 10", "alarm": {"severity": "minor"}}]
    engine, _ = open_engine(site(rules), tmp_path, Clock())
    before = engine.stats()["evaluations"]
    engine.process(poll("pump_1", T0, kwh=5))
    assert engine.stats()["evaluations"] == before + 1


class Weird:
    """A value no rule expects: comparing it fails."""

    def __eq__(self, other):
        raise ValueError("cannot compare")

    __hash__ = object.__hash__


def test_a_rule_that_fails_is_counted_and_logged_and_the_other_rules_still_run(tmp_path):
    rules = [{"id": "tripped", "when": "fault == 1", "alarm": {"severity": "major"}},
             {"id": "stopped", "when": "running == 0", "alarm": {"severity": "minor"}}]
    engine, _ = open_engine(site(rules), tmp_path, Clock())
    out = engine.process(poll("pump_1", T0, fault=Weird(), running=0))
    assert transitions(out) == [("pump_1.stopped", "raised")]
    out = engine.process(poll("pump_1", T0 + 5, fault=Weird(), running=0))
    assert engine.stats()["evaluation_errors"] == 2
    assert engine.alarm("pump_1.tripped")["state"] == "normal"


def test_a_failing_rule_is_logged_at_most_once_a_minute(tmp_path):
    import structlog.testing

    rules = [{"id": "tripped", "when": "fault == 1", "alarm": {"severity": "major"}}]
    engine, _ = open_engine(site(rules), tmp_path, Clock())
    with structlog.testing.capture_logs() as logs:
        for t in range(0, 125, 5):
            engine.process(poll("pump_1", T0 + t, fault=Weird()))
    failures = [e for e in logs if e["event"] == "rule evaluation failed"]
    assert len(failures) == 3  # at 0, 60 and 120 s
    assert failures[0]["rule"] == "pump_1.tripped" and failures[0]["device"] == "pump_1"
    assert "cannot compare" in failures[0]["error"]
