"""Counters of equipment usage: run hours and starts, what counts, and how often they
reach the disk (a crash loses at most a minute of them)."""

from __future__ import annotations

from test_engine_site import HOUR, T0, Clock, batches, failed, open_engine, poll, site

from rules.engine.engine import RuleEngine

COUNTERS = [{"id": "run_hours", "derive": "running == 1", "accumulate": "hours", "unit": "h"},
            {"id": "starts", "derive": "running == 1", "accumulate": "rises"}]


def counters(outputs) -> dict:
    [batch] = batches(outputs)
    assert batch.quality is None  # a counter is always known
    return dict(zip(batch.points, batch.values, strict=True))


def test_run_hours_add_the_time_the_pump_ran_and_starts_its_rises(tmp_path):
    engine, _ = open_engine(site(COUNTERS), tmp_path, Clock())
    assert counters(engine.process(poll("pump_1", T0, running=1))) == {"run_hours": 0.0, "starts": 0}
    assert counters(engine.process(poll("pump_1", T0 + HOUR, running=0))) == {
        "run_hours": 1.0, "starts": 0}
    engine.process(poll("pump_1", T0 + 2 * HOUR, running=1))
    assert counters(engine.process(poll("pump_1", T0 + 2.5 * HOUR, running=1))) == {
        "run_hours": 1.5, "starts": 1}


def test_an_hour_with_no_news_of_the_pump_is_not_a_run_hour(tmp_path):
    engine, _ = open_engine(site(COUNTERS), tmp_path, Clock())
    engine.process(poll("pump_1", T0, running=1))
    engine.process(failed("pump_1", T0 + HOUR, "running"))
    assert counters(engine.process(poll("pump_1", T0 + 2 * HOUR, running=1)))["run_hours"] == 1.0


def test_off_unknown_on_is_one_start(tmp_path):
    engine, _ = open_engine(site(COUNTERS), tmp_path, Clock())
    engine.process(poll("pump_1", T0, running=0))
    engine.process(failed("pump_1", T0 + 5, "running"))
    assert counters(engine.process(poll("pump_1", T0 + 10, running=1)))["starts"] == 1


def test_counters_reach_the_disk_every_minute_of_ticks_so_a_crash_loses_little(tmp_path):
    clock = Clock()
    engine, _ = open_engine(site(COUNTERS), tmp_path, clock)
    engine.process(poll("pump_1", T0, running=0))
    engine.process(poll("pump_1", T0 + 10, running=1))
    engine.tick(T0 + 30)  # less than a minute since open: not saved yet
    crashed = RuleEngine(site(COUNTERS), tmp_path, clock=clock)
    crashed.open()
    assert crashed.counters["pump_1.starts"].current == 0
    crashed.close()
    engine.tick(T0 + 61)
    survivor = RuleEngine(site(COUNTERS), tmp_path, clock=clock)  # engine never closed
    survivor.open()
    assert survivor.counters["pump_1.starts"].current == 1


def test_a_usage_plan_sees_the_saved_counter_before_the_first_poll_after_a_restart(tmp_path):
    plan = {"task": "seal_check", "counter": "run_hours", "every": 2}
    config, clock = site(COUNTERS, profile_maintenance=[plan]), Clock()
    engine, _ = open_engine(config, tmp_path, clock)
    engine.process(poll("pump_1", T0, running=1))
    engine.process(poll("pump_1", T0 + HOUR, running=1))
    engine.tick(T0 + HOUR)  # the plan sees 1 h: next due at 2 h
    engine.process(poll("pump_1", T0 + 2 * HOUR, running=1))
    engine.close()
    clock.now = T0 + 3 * HOUR
    engine = RuleEngine(config, tmp_path, clock=clock)
    opened = [e for e in engine.open() if getattr(e, "type", "") == "ticket_event"]
    assert [e.body["event"] for e in opened] == ["opened"]
    assert opened[0].body["state"]["fault"] == "seal_check"
