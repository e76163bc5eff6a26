"""After a restart the engine carries on as if there had been none: alarms and their
acknowledgements, running delays, shelves, tickets and their SLA deadlines, counters,
maintenance modes and plans; what ran out while it was down happens at open."""

from __future__ import annotations

import sqlite3

from test_engine_site import (
    DAY,
    HOUR,
    MIN,
    T0,
    Clock,
    batches,
    events_of,
    kinds,
    open_engine,
    poll,
    site,
    states,
    ticket_events,
    transitions,
)

from gateway.sinks.contract import Identity, Topics, event_message

TRIP = {"id": "tripped", "name": "水泵故障", "when": "fault == 1", "for": "30s",
        "alarm": {"severity": "major"}, "ticket": {"category": "water"}}
ALARM = "pump_1.tripped"
COUNTERS = [{"id": "run_hours", "derive": "running == 1", "accumulate": "hours"},
            {"id": "starts", "derive": "running == 1", "accumulate": "rises"}]


def restart(engine, config, data_dir, clock):
    engine.close()
    return open_engine(config, data_dir, clock)


def test_an_acknowledged_alarm_stays_acknowledged_and_clears_after_a_restart(tmp_path):
    config, clock = site([TRIP]), Clock()
    engine, _ = open_engine(config, tmp_path, clock)
    engine.process(poll("pump_1", T0, fault=1))
    engine.tick(T0 + 30)
    engine.acknowledge(ALARM, by="张工", now=T0 + 40)
    clock.now = T0 + 100
    engine, out = restart(engine, config, tmp_path, clock)
    assert kinds(out) == []
    view = engine.alarm(ALARM)
    assert (view["state"], view["acknowledged_by"]) == ("active_acknowledged", "张工")
    assert kinds(engine.process(poll("pump_1", T0 + 110, fault=0))) == ["cleared"]


def test_an_ack_in_the_same_second_as_the_raise_survives_a_restart(tmp_path):
    config, clock = site([TRIP]), Clock()
    engine, _ = open_engine(config, tmp_path, clock)
    engine.process(poll("pump_1", T0, fault=1))
    engine.tick(T0 + 30)
    engine.acknowledge(ALARM, by="张工", now=T0 + 30)  # last_change does not move
    clock.now = T0 + 100
    engine, _ = restart(engine, config, tmp_path, clock)
    assert engine.alarm(ALARM)["state"] == "active_acknowledged"


def test_a_delay_that_ran_out_while_down_raises_at_open(tmp_path):
    config, clock = site([TRIP]), Clock()
    engine, _ = open_engine(config, tmp_path, clock)
    engine.process(poll("pump_1", T0, fault=1))
    clock.now = T0 + 300
    engine, out = restart(engine, config, tmp_path, clock)
    assert transitions(out) == [(ALARM, "raised")]
    assert events_of(out, "alarm_event")[0].ts == T0 + 300
    assert ticket_events(out) == ["opened"]


def test_a_shelve_that_ran_out_while_down_ends_at_open(tmp_path):
    config, clock = site([TRIP]), Clock()
    engine, _ = open_engine(config, tmp_path, clock)
    engine.shelve(ALARM, by="张工", until=T0 + HOUR, now=T0)
    clock.now = T0 + 2 * HOUR
    engine, out = restart(engine, config, tmp_path, clock)
    assert kinds(out) == ["unshelved"]
    assert states(out) == {ALARM: "normal"}


def test_a_ticket_and_its_sla_deadline_survive_and_a_breach_while_down_is_reported_at_open(tmp_path):
    config, clock = site([TRIP]), Clock()
    engine, _ = open_engine(config, tmp_path, clock)
    engine.process(poll("pump_1", T0, fault=1))
    [ticket] = [e.body["ticket"] for e in events_of(engine.tick(T0 + 30), "ticket_event")]
    engine.update_ticket(ticket, "dispatch", "调度-王", owner="李工", backup="赵工", now=T0 + 60)
    clock.now = T0 + 30 + 20 * MIN  # the 15-minute arrival ran out while down
    engine, out = restart(engine, config, tmp_path, clock)
    assert ticket_events(out) == ["sla_breached", "escalated"]  # the missed warning is skipped
    assert transitions(out) == [("pump_1.sla_tripped", "raised")]
    [view] = engine.tickets()
    assert (view["ticket"], view["state"], view["owner"]) == (ticket, "dispatched", "李工")
    # the SLA alarm is itself restored, and returns when the work is done
    clock.now += MIN
    engine, out = restart(engine, config, tmp_path, clock)
    assert out == []
    assert engine.alarm("pump_1.sla_tripped")["state"] == "active_unacknowledged"
    engine.update_ticket(ticket, "arrive", "李工", now=clock.now)
    out = engine.update_ticket(ticket, "resolve", "李工", now=clock.now + MIN)
    assert transitions(out) == [("pump_1.sla_tripped", "returned")]


def test_run_hours_and_starts_carry_on_from_their_saved_values(tmp_path):
    config, clock = site(COUNTERS), Clock()
    engine, _ = open_engine(config, tmp_path, clock)
    engine.process(poll("pump_1", T0, running=0))
    engine.process(poll("pump_1", T0 + 60, running=1))
    engine.process(poll("pump_1", T0 + 60 + 2 * HOUR, running=0))
    clock.now = T0 + 3 * HOUR
    engine, _ = restart(engine, config, tmp_path, clock)
    engine.process(poll("pump_1", T0 + 4 * HOUR, running=1))
    [batch] = batches(engine.process(poll("pump_1", T0 + 5 * HOUR, running=1)))
    values = dict(zip(batch.points, batch.values, strict=True))
    assert values == {"run_hours": 3.0, "starts": 2}


def test_a_calendar_plan_due_while_the_gateway_was_down_is_raised_at_open(tmp_path):
    plan = {"task": "septic_check", "title": "化粪池检查", "every_months": 3,
            "start": "2026-12-01", "asset": "septic_tank_1"}
    config, clock = site(maintenance=[plan]), Clock()
    engine, out = open_engine(config, tmp_path, clock)
    assert ticket_events(out) == []
    clock.now = T0 + 10 * DAY  # 3 December
    engine, out = restart(engine, config, tmp_path, clock)
    assert ticket_events(out) == ["opened"]
    [opened] = events_of(out, "ticket_event")
    assert (opened.device, opened.body["state"]["kind"]) == ("septic_tank_1", "preventive")
    clock.now += HOUR
    engine, out = restart(engine, config, tmp_path, clock)
    assert ticket_events(out) == []  # raised once


def test_maintenance_mode_survives_and_ends_at_open_if_it_ran_out_while_down(tmp_path):
    config, clock = site([TRIP]), Clock()
    engine, _ = open_engine(config, tmp_path, clock)
    engine.set_maintenance("pump_1", True, by="李工", duration=HOUR, now=T0)
    clock.now = T0 + 10 * MIN
    engine, out = restart(engine, config, tmp_path, clock)
    assert out == []
    assert engine.maintenance_modes() == {"pump_1": T0 + HOUR}
    assert engine.alarm(ALARM)["state"] == "suppressed"
    clock.now = T0 + 2 * HOUR
    engine, out = restart(engine, config, tmp_path, clock)
    assert [e.body["maintenance"] for e in events_of(out, "maintenance")] == [False]
    assert kinds(out) == ["unsuppressed"]


def test_a_saved_alarm_whose_rule_is_gone_is_forgotten(tmp_path):
    clock = Clock()
    other = {"id": "stopped", "when": "running == 0", "alarm": {"severity": "minor"}}
    engine, _ = open_engine(site([TRIP, other]), tmp_path, clock)
    engine.process(poll("pump_1", T0, running=0))
    engine, _ = restart(engine, site([TRIP]), tmp_path, clock)
    assert [a["alarm"] for a in engine.alarms()] == [ALARM]
    engine, _ = restart(engine, site([TRIP, other]), tmp_path, clock)
    assert engine.alarm("pump_1.stopped")["state"] == "normal"
    engine.close()


def test_an_open_alarm_whose_rule_is_gone_is_cleared_upstream(tmp_path):
    """Its retained state would otherwise show it open for good, with no alarm to act on."""
    clock = Clock()
    other = {"id": "stopped", "when": "running == 0", "alarm": {"severity": "minor"}}
    engine, _ = open_engine(site([TRIP, other]), tmp_path, clock)
    engine.process(poll("pump_1", T0, running=0))  # pump_1.stopped raised, retained upstream
    engine, out = restart(engine, site([TRIP]), tmp_path, clock)
    [state] = [e for e in events_of(out, "alarm_state") if e.body["alarm"] == "pump_1.stopped"]
    assert state.body["closed"] is True
    topics, identity = Topics.of("pm", "test_site", "gw"), Identity("test_site", "gw")
    assert event_message(topics, identity, "e:1", 1, state) == (
        "pm/test_site/gw/alarms/pump_1.stopped", b"", True)
    engine, out = restart(engine, site([]), tmp_path, clock)  # pump_1.tripped was normal
    assert events_of(out, "alarm_state") == []
    engine.close()


def test_a_failed_write_is_logged_and_retried_with_the_next_call(tmp_path):
    config, clock = site([TRIP]), Clock()
    engine, _ = open_engine(config, tmp_path, clock)
    store, real_save, calls = engine._stores.alarms, engine._stores.alarms.save, []

    def full_disk_once(alarms):
        calls.append(list(alarms))
        if len(calls) == 1:
            raise sqlite3.OperationalError("database or disk is full")
        real_save(alarms)

    store.save = full_disk_once
    engine.process(poll("pump_1", T0, fault=1))  # a delay starts: the write fails, quietly
    engine.tick(T0 + 1)  # nothing new, but the pending write goes now
    assert [a.id for a in calls[1]] == [ALARM]
    clock.now = T0 + 60
    engine, out = restart(engine, config, tmp_path, clock)
    assert kinds(out) == ["raised"]
