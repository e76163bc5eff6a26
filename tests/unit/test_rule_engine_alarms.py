"""Alarms through the engine: every transition an operator sees, commands and their
refusals, maintenance mode, chattering and floods."""

from __future__ import annotations

import pytest
from test_engine_site import (
    HOUR,
    MIN,
    T0,
    Clock,
    events_of,
    kinds,
    open_engine,
    poll,
    site,
    states,
    transitions,
)

from rules.alarms import AlarmError
from rules.engine.errors import RuleCommandError

TRIP = {"id": "tripped", "name": "水泵故障", "when": "fault == 1",
        "alarm": {"severity": "major", "message": "水泵故障"}}
ALARM = "pump_1.tripped"


@pytest.fixture
def engine(tmp_path):
    engine, _ = open_engine(site([TRIP]), tmp_path, Clock())
    yield engine
    engine.close()


def fault(engine, t: float, value: int):
    return engine.process(poll("pump_1", T0 + t, fault=value))


def test_raise_acknowledge_then_clear(engine):
    assert kinds(fault(engine, 0, 1)) == ["raised"]
    out = engine.acknowledge(ALARM, by="张工", comment="已派人", now=T0 + 10)
    [event] = events_of(out, "alarm_event")
    assert (event.body["transition"], event.body["by"], event.body["comment"]) == (
        "acknowledged", "张工", "已派人")
    assert states(out) == {ALARM: "active_acknowledged"}
    out = fault(engine, 20, 0)
    assert kinds(out) == ["cleared"]
    [state] = events_of(out, "alarm_state")
    assert state.body["closed"] is True


def test_a_fault_that_goes_away_unacknowledged_returns_and_closes_on_acknowledgement(engine):
    fault(engine, 0, 1)
    assert kinds(fault(engine, 10, 0)) == ["returned"]
    assert engine.alarm(ALARM)["state"] == "returned_unacknowledged"
    out = engine.acknowledge(ALARM, by="张工", now=T0 + 20)
    assert states(out) == {ALARM: "normal"}


def test_acknowledging_a_normal_alarm_is_refused_with_a_reason(engine):
    with pytest.raises(AlarmError, match="normal: there is nothing to acknowledge"):
        engine.acknowledge(ALARM, by="张工", now=T0)


def test_an_unknown_alarm_id_is_refused_with_the_closest_known_one(engine):
    with pytest.raises(RuleCommandError, match="no alarm 'pump_1.tripd'; did you mean pump_1.tripped"):
        engine.acknowledge("pump_1.tripd", by="张工", now=T0)
    with pytest.raises(RuleCommandError):
        engine.alarm("nothing.like.it")


def test_a_shelved_alarm_hides_its_raise_and_comes_back_when_the_shelve_expires(engine):
    out = engine.shelve(ALARM, by="张工", until=T0 + HOUR, reason="换传感器", now=T0)
    [event] = events_of(out, "alarm_event")
    assert event.body["transition"] == "shelved" and event.body["until"].startswith("2026-11-23T03:00")
    assert kinds(fault(engine, 10, 1)) == []  # followed, not announced
    assert engine.alarm(ALARM)["active"] is True
    assert kinds(engine.tick(T0 + HOUR - 1)) == []
    out = engine.tick(T0 + HOUR)
    [event] = events_of(out, "alarm_event")
    assert event.body["transition"] == "unshelved" and event.body["expired"] is True
    assert states(out) == {ALARM: "active_unacknowledged"}


def test_unshelving_early_shows_the_alarm_in_the_state_its_condition_implies(engine):
    engine.shelve(ALARM, by="张工", until=T0 + HOUR, now=T0)
    out = engine.unshelve(ALARM, by="张工", now=T0 + 60)
    assert kinds(out) == ["unshelved"]
    assert states(out) == {ALARM: "normal"}
    with pytest.raises(AlarmError, match="is not shelved"):
        engine.unshelve(ALARM, by="张工", now=T0 + 70)


def test_an_alarm_out_of_service_announces_nothing_until_back_in_service(engine):
    assert kinds(engine.set_in_service(ALARM, False, by="张工", comment="传感器更换", now=T0)) == [
        "out_of_service"]
    assert kinds(fault(engine, 10, 1)) == []
    with pytest.raises(AlarmError, match="already out of service"):
        engine.set_in_service(ALARM, False, by="张工", now=T0 + 20)
    out = engine.set_in_service(ALARM, True, by="张工", now=T0 + 30)
    assert kinds(out) == ["in_service"]
    assert states(out) == {ALARM: "active_unacknowledged"}


def test_maintenance_mode_suppresses_the_devices_alarms_and_ends_by_itself(engine):
    out = engine.set_maintenance("pump_1", True, by="李工", duration=HOUR, reason="换密封", now=T0)
    [mode] = events_of(out, "maintenance")
    assert mode.body == {"maintenance": True, "until": "2026-11-23T03:00:00.000Z",
                         "by": "李工", "reason": "换密封"}
    assert kinds(out) == ["suppressed"]
    assert engine.maintenance_modes() == {"pump_1": T0 + HOUR}
    assert kinds(fault(engine, 60, 1)) == []
    assert kinds(engine.tick(T0 + HOUR - 1)) == []
    out = engine.tick(T0 + HOUR)
    [mode] = events_of(out, "maintenance")
    assert mode.body["maintenance"] is False and mode.body["expired"] is True
    assert kinds(out) == ["unsuppressed"]
    assert states(out) == {ALARM: "active_unacknowledged"}  # the fault outlived the work
    assert engine.maintenance_modes() == {}


def test_maintenance_mode_without_a_duration_lasts_the_configured_default(tmp_path):
    engine, _ = open_engine(site([TRIP], engine={"maintenance_default": "2h"}), tmp_path, Clock())
    engine.set_maintenance("pump_1", True, by="李工", now=T0)
    assert engine.maintenance_modes() == {"pump_1": T0 + 2 * HOUR}


def test_maintenance_mode_switched_off_by_hand_and_refusals(engine):
    with pytest.raises(RuleCommandError, match="did you mean pump_1"):
        engine.set_maintenance("pump_l", True, by="李工", now=T0)
    with pytest.raises(RuleCommandError, match="not in maintenance mode"):
        engine.set_maintenance("pump_1", False, by="李工", now=T0)
    engine.set_maintenance("pump_1", True, by="李工", now=T0)
    out = engine.set_maintenance("pump_1", False, by="李工", now=T0 + 60)
    assert events_of(out, "maintenance")[0].body == {"maintenance": False, "until": None, "by": "李工"}
    assert kinds(out) == ["unsuppressed"]


def test_a_chattering_alarm_is_flagged_once_instead_of_raising_again_and_again(tmp_path):
    rule = dict(TRIP, alarm={"severity": "major", "chatter": {"limit": 3, "window": "60s"}})
    engine, _ = open_engine(site([rule]), tmp_path, Clock())
    seen = []
    for i in range(10):
        seen += kinds(fault(engine, i * 3, 1 - i % 2))
    assert seen == ["raised", "returned", "raised", "returned", "raised", "returned", "chattering"]
    assert engine.alarm(ALARM)["chattering"] is True
    out = engine.tick(T0 + 27 + 61)
    [event] = events_of(out, "alarm_event")
    assert (event.body["transition"], event.body["chattering"]) == ("chattering", False)


def test_a_command_sees_the_delay_that_ran_out_before_it(tmp_path):
    rule = dict(TRIP, **{"for": "30s"})
    engine, _ = open_engine(site([rule]), tmp_path, Clock())
    fault(engine, 0, 1)
    out = engine.acknowledge(ALARM, by="张工", now=T0 + 40)  # no tick in between
    assert kinds(out) == ["raised", "acknowledged"]


def test_events_a_refused_command_had_caused_come_out_with_the_next_call(engine):
    engine.shelve(ALARM, by="张工", until=T0 + 60, now=T0)
    with pytest.raises(AlarmError):
        engine.unshelve(ALARM, by="张工", now=T0 + 120)  # the shelve ran out first
    assert kinds(engine.tick(T0 + 121)) == ["unshelved"]


def test_views_show_active_alarms_with_their_rule(engine):
    fault(engine, 0, 1)
    [view] = engine.alarms(active_only=True)
    assert (view["alarm"], view["rule"], view["name"], view["state"]) == (
        ALARM, "tripped", "水泵故障", "active_unacknowledged")
    fault(engine, 10, 0)
    engine.acknowledge(ALARM, by="张工", now=T0 + 20)
    assert engine.alarms(active_only=True) == []
    assert [a["state"] for a in engine.alarms()] == ["normal"]


def test_a_flood_of_raises_is_announced_once_and_its_end_too(tmp_path):
    config = site([TRIP], devices=[f"pump_{i}" for i in range(6)],
                  engine={"flood_window": "10m", "flood_threshold": 4})
    engine, _ = open_engine(config, tmp_path, Clock())
    floods = []
    for i in range(6):
        floods += events_of(engine.process(poll(f"pump_{i}", T0 + i * MIN, fault=1)), "alarm_flood")
    [start] = floods
    assert start.body == {"flood": True, "raises": 5, "window": 600.0}
    assert engine.stats()["flood"] is True
    assert events_of(engine.tick(T0 + 5 * MIN), "alarm_flood") == []
    [end] = events_of(engine.tick(T0 + 11 * MIN), "alarm_flood")
    assert end.body["flood"] is False and end.body["raises"] <= 4


def test_a_reading_stamped_in_the_past_neither_ends_a_flood_nor_starts_it_again(tmp_path):
    """An hour's rollup arrives stamped at the hour's start: the flood goes on meanwhile."""
    config = site([TRIP], devices=[f"pump_{i}" for i in range(6)],
                  engine={"flood_window": "10m", "flood_threshold": 4})
    clock = Clock()
    engine, _ = open_engine(config, tmp_path, clock)
    floods = []
    for i in range(6):
        clock.now = T0 + i * MIN
        floods += events_of(engine.process(poll(f"pump_{i}", T0 + i * MIN, fault=1)), "alarm_flood")
    assert [f.body["flood"] for f in floods] == [True]
    clock.now = T0 + 6 * MIN
    assert events_of(engine.process(poll("pump_0", T0 - HOUR, kwh=12)), "alarm_flood") == []
    assert events_of(engine.tick(T0 + 6 * MIN), "alarm_flood") == []
    assert engine.stats()["flood"] is True


def test_stats_count_rules_alarms_by_state_and_raises(engine):
    fault(engine, 0, 1)
    stats = engine.stats()
    assert stats["rules"] == 1
    assert stats["alarms"] == {"active_unacknowledged": 1}
    assert stats["raises_in_window"] == 1
    assert transitions(engine.process(poll("pump_1", T0 + 5, fault=1))) == []
