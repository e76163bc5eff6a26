"""Tickets through the engine: opened by alarms and by ticket-only rules, one per device
and fault, moved on by commands, SLA breaches that raise alarms, maintenance plans."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from test_engine_site import (
    DAY,
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
    ticket_events,
    transitions,
)

from rules.engine.errors import RuleCommandError
from rules.tickets import TicketError

TRIP = {"id": "tripped", "name": "水泵故障", "when": "fault == 1",
        "alarm": {"severity": "major"}, "ticket": {"category": "water"}}


def fault(engine, t: float, value: int, device: str = "pump_1"):
    return engine.process(poll(device, T0 + t, fault=value))


def opened(outputs) -> dict:
    [event] = [e for e in events_of(outputs, "ticket_event") if e.body["event"] == "opened"]
    return event.body


def test_a_raised_alarm_opens_a_ticket_titled_by_device_and_rule(tmp_path):
    engine, _ = open_engine(site([TRIP]), tmp_path, Clock())
    out = fault(engine, 0, 1)
    body = opened(out)
    assert body["device"] == "pump_1"
    state = body["state"]
    assert (state["fault"], state["category"], state["priority"], state["title"]) == (
        "tripped", "water", "urgent", "pump_1号泵 水泵故障")
    [ticket_state] = events_of(out, "ticket_state")
    assert ticket_state.body["state"] == "open" and ticket_state.body["closed"] is False
    assert [t["ticket"] for t in engine.tickets(open_only=True)] == [body["ticket"]]


def test_a_repeat_while_the_ticket_is_active_counts_on_the_same_ticket(tmp_path):
    engine, _ = open_engine(site([TRIP]), tmp_path, Clock())
    ticket = opened(fault(engine, 0, 1))["ticket"]
    fault(engine, 10, 0)
    out = fault(engine, 20, 1)
    assert kinds(out) == ["raised"]
    [event] = events_of(out, "ticket_event")
    assert (event.body["event"], event.body["ticket"], event.body["count"]) == ("recurred", ticket, 2)
    assert len(engine.tickets()) == 1


def test_each_device_has_its_own_ticket_for_the_same_fault(tmp_path):
    engine, _ = open_engine(site([TRIP], devices=("pump_1", "pump_2")), tmp_path, Clock())
    first = opened(fault(engine, 0, 1))["ticket"]
    second = opened(fault(engine, 0, 1, "pump_2"))["ticket"]
    assert first != second


def test_no_ticket_is_opened_while_the_device_is_in_maintenance(tmp_path):
    engine, _ = open_engine(site([TRIP]), tmp_path, Clock())
    engine.set_maintenance("pump_1", True, by="李工", duration=HOUR, now=T0)
    assert ticket_events(fault(engine, 10, 1)) == []
    assert engine.tickets() == []


def test_a_chattering_alarm_does_not_open_a_ticket_per_raise(tmp_path):
    rule = dict(TRIP, alarm={"severity": "major", "chatter": {"limit": 2, "window": "60s"}})
    engine, _ = open_engine(site([rule]), tmp_path, Clock())
    seen = []
    for i in range(12):
        seen += ticket_events(fault(engine, i * 2, 1 - i % 2))
    assert seen == ["opened", "recurred"]  # the third activation is the chattering flag


def test_a_ticket_only_rule_debounces_without_showing_an_alarm(tmp_path):
    rule = {"id": "door_forced", "name": "门被强行打开", "when": "status == 2", "for": "30s",
            "ticket": {"category": "doors", "fault": "forced"}}
    engine, _ = open_engine(site([rule]), tmp_path, Clock())
    out = engine.process(poll("pump_1", T0, status=2))
    assert out == []
    engine.process(poll("pump_1", T0 + 10, status=0))
    assert ticket_events(engine.tick(T0 + 60)) == []
    engine.process(poll("pump_1", T0 + 100, status=2))
    out = engine.tick(T0 + 130)
    assert transitions(out) == []
    body = opened(out)
    assert body["state"]["fault"] == "forced"
    assert engine.alarms() == []


def test_ticket_steps_move_the_ticket_and_publish_its_state(tmp_path):
    engine, _ = open_engine(site([TRIP]), tmp_path, Clock())
    ticket = opened(fault(engine, 0, 1))["ticket"]
    out = engine.update_ticket(ticket, "dispatch", "调度-王", owner="李工", backup="赵工", now=T0 + 60)
    assert ticket_events(out) == ["dispatched"]
    assert events_of(out, "ticket_state")[0].body["owner"] == "李工"
    assert ticket_events(engine.update_ticket(ticket, "arrive", "李工", now=T0 + 600)) == ["arrived"]
    out = engine.update_ticket(ticket, "note", "李工", note="密封老化", now=T0 + 700)
    assert events_of(out, "ticket_state")[0].body["history"][-1]["note"] == "密封老化"
    assert ticket_events(engine.update_ticket(ticket, "resolve", "李工", now=T0 + HOUR)) == ["resolved"]
    assert engine.tickets(open_only=True) == []
    engine.update_ticket(ticket, "follow_up", "客服-陈", note="业主满意", now=T0 + DAY)
    out = engine.update_ticket(ticket, "close", "客服-陈", now=T0 + DAY + 60)
    assert events_of(out, "ticket_state")[0].body["closed"] is True
    assert engine.tickets() == []
    with pytest.raises(RuleCommandError, match="is closed; it can no longer be changed"):
        engine.update_ticket(ticket, "cancel", "张工", now=T0 + DAY + 120)


def test_a_step_the_ticket_does_not_allow_and_unknown_ids_are_refused(tmp_path):
    engine, _ = open_engine(site([TRIP]), tmp_path, Clock())
    ticket = opened(fault(engine, 0, 1))["ticket"]
    with pytest.raises(TicketError, match="cannot resolve it"):
        engine.update_ticket(ticket, "resolve", "李工", now=T0 + 60)
    with pytest.raises(RuleCommandError, match="did you mean dispatch"):
        engine.update_ticket(ticket, "dispach", "李工", now=T0 + 60)
    with pytest.raises(RuleCommandError, match=f"did you mean {ticket}"):
        engine.update_ticket(ticket[:-1] + "9", "arrive", "李工", now=T0 + 60)


def test_an_sla_breach_raises_an_alarm_and_escalates_until_the_work_is_done(tmp_path):
    engine, _ = open_engine(site([TRIP], sla={"contacts": {"supervisor": "孙经理"}}), tmp_path, Clock())
    ticket = opened(fault(engine, 0, 1))["ticket"]  # water: on site within 15 minutes
    engine.update_ticket(ticket, "dispatch", "调度-王", owner="李工", backup="赵工", now=T0 + 60)
    warning = engine.tick(T0 + 12 * MIN)
    assert ticket_events(warning) == ["sla_warning"]
    out = engine.tick(T0 + 15 * MIN)
    assert ticket_events(out) == ["sla_breached", "escalated"]
    assert events_of(out, "ticket_event")[1].body["to"] == "赵工"
    sla_alarm = "pump_1.sla_tripped"
    assert transitions(out) == [(sla_alarm, "raised")]
    assert events_of(out, "alarm_event")[0].body["message"] == f"工单 {ticket} arrival 超时"
    assert events_of(out, "alarm_event")[0].body["severity"] == "major"
    later = engine.tick(T0 + 30 * MIN)
    assert [e.body["to"] for e in events_of(later, "ticket_event")] == ["孙经理"]
    engine.update_ticket(ticket, "arrive", "李工", now=T0 + 40 * MIN)
    out = engine.update_ticket(ticket, "resolve", "李工", now=T0 + HOUR)
    assert transitions(out) == [(sla_alarm, "returned")]
    out = engine.acknowledge(sla_alarm, by="张工", now=T0 + HOUR + 60)
    assert states(out) == {sla_alarm: "normal"}
    assert [a["alarm"] for a in engine.alarms()] == ["pump_1.tripped"]


def test_trapped_passengers_are_on_a_30_minute_rescue_clock(tmp_path):
    rule = {"id": "trapped", "name": "困人", "when": "state == 9", "alarm": {"severity": "critical"},
            "ticket": {"category": "elevator", "trapped": True, "grade": "major"}}
    engine, _ = open_engine(site([rule]), tmp_path, Clock())
    body = opened(engine.process(poll("pump_1", T0, state=9)))
    assert body["emergency_plan"] is True
    assert body["state"]["sla"]["arrival"]["deadline"] == "2026-11-23T02:30:00.000Z"


def test_a_calendar_plan_opens_a_preventive_ticket_when_due(tmp_path):
    plan = {"task": "tank_cleaning", "title": "水箱清洗", "category": "water", "every_months": 6,
            "start": "2026-12-01", "device": "pump_1"}
    clock = Clock()
    engine, out = open_engine(site(maintenance=[plan]), tmp_path, clock)
    assert ticket_events(out) == []
    due = datetime(2026, 11, 30, 16, 0, tzinfo=UTC).timestamp()  # midnight in Shanghai
    assert engine.next_plan_due() == due
    assert engine.plans_due(due - 1) == []
    out = engine.plans_due(due)
    body = opened(out)
    assert (body["state"]["kind"], body["state"]["title"]) == ("preventive", "水箱清洗")
    assert engine.next_plan_due() == datetime(2027, 5, 31, 16, 0, tzinfo=UTC).timestamp()  # 1 June


def test_a_usage_plan_opens_a_ticket_every_500_run_hours(tmp_path):
    rules = [{"id": "run_hours", "derive": "running == 1", "accumulate": "hours"}]
    plan = {"task": "bearing_service", "counter": "run_hours", "every": 500}
    engine, _ = open_engine(site(rules, profile_maintenance=[plan]), tmp_path, Clock())
    seen = []
    for h in range(0, 1101, 50):
        now = T0 + h * HOUR
        engine.process(poll("pump_1", now, running=1))
        out = engine.tick(now)
        seen += [(h, e) for e in ticket_events(out)]
        if "opened" in ticket_events(out):  # the work is done at once
            assert opened(out)["state"]["title"] == "bearing_service"
            ticket = opened(out)["ticket"]
            engine.update_ticket(ticket, "arrive", "李工", now=now)
            engine.update_ticket(ticket, "resolve", "李工", now=now)
    assert seen == [(500, "opened"), (1000, "opened")]
