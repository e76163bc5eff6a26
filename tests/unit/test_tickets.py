"""Tickets: life cycle, one active ticket per device and fault, SLA clocks, schedules."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from rules.tickets import (
    Grade,
    Kind,
    Priority,
    Schedule,
    ScheduleEntry,
    SlaPolicy,
    Status,
    TicketBook,
    TicketError,
    TicketRequest,
)
from rules.tickets.schedule import add_months, elevator_plan, water_tank_cleaning

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC).timestamp()
MIN, HOUR, DAY = 60.0, 3600.0, 86400.0


def pump_fault(**kw) -> TicketRequest:
    return TicketRequest(device="pump_b1_1", fault="low_outlet_pressure", category="water", **kw)


def types(events) -> list[str]:
    return [e.type for e in events]


# -- life cycle ---------------------------------------------------------------------


def test_a_repair_goes_from_open_to_closed_recording_who_did_each_step_and_when():
    book = TicketBook()
    ticket, events = book.open(pump_fault(title="1号生活水泵出水压力低"), T0)
    assert types(events) == ["opened"]
    assert ticket.id == "T-20261123-0001"
    assert ticket.status is Status.OPEN

    assert types(book.dispatch(ticket.id, T0 + 60, "dispatcher-wang", owner="li", backup="zhao")) == ["dispatched"]
    assert types(book.arrive(ticket.id, T0 + 600, "li")) == ["arrived"]
    assert types(book.resolve(ticket.id, T0 + 3600, "li", note="replaced check valve")) == ["resolved"]
    assert types(book.follow_up(ticket.id, T0 + DAY, "service-chen", note="owner satisfied")) == ["followed_up"]
    assert types(book.close(ticket.id, T0 + DAY + 60, "service-chen")) == ["closed"]

    assert ticket.status is Status.CLOSED
    assert (ticket.owner, ticket.backup) == ("li", "zhao")
    assert [(s.step, s.at - T0, s.by) for s in ticket.history] == [
        ("open", 0, "gateway"),
        ("dispatch", 60, "dispatcher-wang"),
        ("arrive", 600, "li"),
        ("resolve", 3600, "li"),
        ("follow_up", DAY, "service-chen"),
        ("close", DAY + 60, "service-chen"),
    ]
    assert ticket.history[3].note == "replaced check valve"


def test_ticket_state_for_upstream_carries_status_clocks_and_history():
    book = TicketBook()
    ticket, _ = book.open(pump_fault(title="1号生活水泵出水压力低"), T0)
    state = ticket.to_state()
    assert state["type"] == "ticket_state"
    assert state["ticket"] == ticket.id
    assert (state["kind"], state["state"], state["priority"]) == ("corrective", "open", "urgent")
    assert state["due"] == "2026-11-23T10:15:00.000Z"  # the arrival deadline, the nearest
    assert state["sla"]["arrival"]["state"] == "running"
    assert state["history"][0] == {"step": "open", "at": "2026-11-23T10:00:00.000Z", "by": "gateway", "note": ""}


def test_illegal_steps_are_refused_naming_the_state_and_what_is_allowed():
    book = TicketBook()
    ticket, _ = book.open(pump_fault(), T0)
    with pytest.raises(TicketError, match=r"is open; cannot resolve it \(allowed: arrive, cancel, dispatch\)"):
        book.resolve(ticket.id, T0, "li")
    with pytest.raises(TicketError, match="is open; cannot follow_up"):
        book.follow_up(ticket.id, T0, "li")
    book.cancel(ticket.id, T0 + 1, "dispatcher-wang", note="false alarm")
    with pytest.raises(TicketError, match="is cancelled; cannot dispatch it"):
        book.dispatch(ticket.id, T0 + 2, "dispatcher-wang", owner="li")
    assert ticket.status is Status.CANCELLED
    assert ticket.history[-1].step == "cancel"


def test_dispatch_without_a_named_owner_is_refused():
    book = TicketBook()
    ticket, _ = book.open(pump_fault(), T0)
    with pytest.raises(TicketError, match="needs a named owner"):
        book.dispatch(ticket.id, T0, "dispatcher-wang")


def test_a_corrective_ticket_cannot_close_before_its_follow_up():
    book = TicketBook()
    ticket, _ = book.open(pump_fault(), T0)
    book.arrive(ticket.id, T0 + 60, "li")
    book.resolve(ticket.id, T0 + 120, "li")
    with pytest.raises(TicketError, match="is resolved; cannot close it"):
        book.close(ticket.id, T0 + 180, "li")


def test_unknown_ticket_is_refused_by_id():
    with pytest.raises(TicketError, match="no ticket 'T-1'"):
        TicketBook().arrive("T-1", T0, "li")


# -- one active ticket per device and fault -----------------------------------------


def test_the_same_fault_again_records_a_recurrence_on_the_active_ticket():
    book = TicketBook()
    first, _ = book.open(pump_fault(), T0)
    again, events = book.open(pump_fault(), T0 + 300)
    assert again is first
    assert types(events) == ["recurred"]
    assert events[0].body["count"] == 2
    assert first.count == 2 and first.last_seen == T0 + 300
    assert len(book.tickets()) == 1


def test_another_fault_of_the_same_device_opens_its_own_ticket():
    book = TicketBook()
    a, _ = book.open(pump_fault(), T0)
    b, _ = book.open(TicketRequest(device="pump_b1_1", fault="pump_trip", category="water"), T0)
    assert a.id != b.id
    assert b.id == "T-20261123-0002"


def test_the_fault_returning_after_resolution_opens_a_new_ticket():
    book = TicketBook()
    first, _ = book.open(pump_fault(), T0)
    book.arrive(first.id, T0 + 60, "li")
    book.resolve(first.id, T0 + 120, "li")
    second, events = book.open(pump_fault(), T0 + 3600)
    assert second is not first
    assert types(events) == ["opened"]


def test_ticket_ids_restart_counting_each_day():
    book = TicketBook()
    book.open(pump_fault(), T0)
    nxt, _ = book.open(TicketRequest(device="lift_1", fault="stuck"), T0 + DAY)
    assert nxt.id == "T-20261124-0001"


# -- priority, grade, trapped passengers ---------------------------------------------


@pytest.mark.parametrize("category", ["water", "power", "gas"])
def test_water_power_and_gas_are_urgent_by_default(category):
    ticket, _ = TicketBook().open(TicketRequest(device="d", fault="f", category=category), T0)
    assert ticket.priority is Priority.URGENT


@pytest.mark.parametrize("category", ["water", "power", "gas"])
def test_planned_work_in_water_power_and_gas_is_not_an_urgent_repair(category):
    ticket, _ = TicketBook().open(
        TicketRequest(device="tank_1", fault="cleaning", category=category, kind=Kind.PREVENTIVE), T0)
    assert ticket.priority is Priority.NORMAL


def test_a_rescue_ticket_says_passengers_are_trapped():
    ticket, _ = TicketBook().open(
        TicketRequest(device="lift_1", fault="trapped", category="elevator", trapped=True), T0)
    assert ticket.to_state()["trapped"] is True and ticket.priority is Priority.URGENT


def test_other_repairs_are_normal_unless_asked():
    book = TicketBook()
    normal, _ = book.open(TicketRequest(device="d", fault="f", category="lighting"), T0)
    asked, _ = book.open(TicketRequest(device="d", fault="g", priority=Priority.URGENT), T0)
    assert normal.priority is Priority.NORMAL
    assert asked.priority is Priority.URGENT


def test_a_major_fault_starts_the_emergency_plan():
    ticket, events = TicketBook().open(
        TicketRequest(device="fire_panel", fault="fire_alarm", category="fire", grade=Grade.MAJOR), T0
    )
    assert ticket.emergency_plan is True
    assert events[0].body["emergency_plan"] is True
    assert ticket.to_state()["grade"] == "major"


def test_a_general_fault_does_not_start_the_emergency_plan():
    ticket, events = TicketBook().open(pump_fault(), T0)
    assert ticket.emergency_plan is False
    assert "emergency_plan" not in events[0].body


def trapped() -> TicketRequest:
    return TicketRequest(device="lift_2", fault="passengers_trapped", category="elevator", trapped=True)


def test_trapped_passengers_get_a_rescuer_within_30_minutes_in_a_city():
    ticket, _ = TicketBook().open(trapped(), T0)
    assert ticket.priority is Priority.URGENT
    assert ticket.clocks["arrival"].deadline == T0 + 30 * MIN


def test_trapped_passengers_outside_a_city_allow_an_hour_when_so_configured():
    ticket, _ = TicketBook(SlaPolicy(trapped_area="rural")).open(trapped(), T0)
    assert ticket.clocks["arrival"].deadline == T0 + 60 * MIN


def test_a_trapped_area_without_a_deadline_is_refused():
    with pytest.raises(ValueError, match="trapped_area 'island'"):
        SlaPolicy(trapped_area="island")


def test_policy_reads_durations_from_a_site_file():
    policy = SlaPolicy.from_config(
        {"arrival_urgent": "10m", "trapped_area": "rural", "trapped_arrival": {"city": "30m", "rural": "45m"},
         "follow_up_within": "24h", "escalation_chain": ["backup", "manager"]}
    )
    assert policy.arrival_urgent == 600
    assert policy.arrival_within(urgent=False, trapped=True) == 45 * MIN
    assert policy.follow_up_within == DAY
    assert policy.escalation_chain == ("backup", "manager")
    with pytest.raises(ValueError, match="unknown sla settings: arrival"):
        SlaPolicy.from_config({"arrival": "5m"})


# -- SLA clocks -----------------------------------------------------------------------


def test_urgent_arrival_within_15_minutes_is_met():
    book = TicketBook()
    ticket, _ = book.open(pump_fault(), T0)
    book.arrive(ticket.id, T0 + 15 * MIN, "li")
    assert ticket.clocks["arrival"].state == "met"
    assert [e for e in book.tick(T0 + 2 * HOUR) if e.body["clock"] == "arrival"] == []


def test_urgent_arrival_after_15_minutes_is_breached():
    book = TicketBook()
    ticket, _ = book.open(pump_fault(), T0)
    events = book.tick(T0 + 15 * MIN)
    assert ("sla_breached", "arrival") in [(e.type, e.body["clock"]) for e in events]
    book.arrive(ticket.id, T0 + 16 * MIN, "li")
    assert ticket.clocks["arrival"].state == "breached"


def test_normal_arrival_has_30_minutes():
    book = TicketBook()
    ticket, _ = book.open(TicketRequest(device="ahu_1", fault="fan_mismatch", category="hvac"), T0)
    assert ticket.clocks["arrival"].deadline == T0 + 30 * MIN
    assert "sla_breached" not in types(book.tick(T0 + 29 * MIN + 59))
    assert "sla_breached" in types(book.tick(T0 + 30 * MIN))


def test_follow_up_within_48_hours_of_resolution_is_met_and_later_breached():
    book = TicketBook()
    ok, _ = book.open(pump_fault(), T0)
    late, _ = book.open(TicketRequest(device="pump_b1_2", fault="trip", category="water"), T0)
    for t in (ok, late):
        book.arrive(t.id, T0 + 5 * MIN, "li")
        book.resolve(t.id, T0 + HOUR, "li")
    assert ok.clocks["follow_up"].deadline == T0 + HOUR + 48 * HOUR
    book.follow_up(ok.id, T0 + HOUR + 48 * HOUR, "service-chen")
    book.tick(T0 + HOUR + 48 * HOUR)
    assert ok.clocks["follow_up"].state == "met"
    assert late.clocks["follow_up"].state == "breached"


def test_a_task_with_no_deadline_reports_progress_every_4_hours():
    book = TicketBook()
    ticket, _ = book.open(pump_fault(), T0)
    assert "repair" not in ticket.clocks
    assert ticket.clocks["progress"].deadline == T0 + 4 * HOUR
    book.arrive(ticket.id, T0 + 10 * MIN, "li")
    assert types(book.report_progress(ticket.id, T0 + 3 * HOUR, "li", note="waiting for a valve")) == ["progress"]
    assert ticket.clocks["progress"].deadline == T0 + 7 * HOUR
    assert "sla_breached" not in types(book.tick(T0 + 5 * HOUR))
    breached = [e for e in book.tick(T0 + 7 * HOUR) if e.type == "sla_breached"]
    assert [e.body["clock"] for e in breached] == ["progress"]


def test_lighting_and_doors_have_repair_deadlines_in_days_instead_of_progress_reports():
    book = TicketBook()
    lamp, _ = book.open(TicketRequest(device="lamp_b1", fault="out", category="lighting"), T0)
    door, _ = book.open(TicketRequest(device="door_3", fault="closer", category="doors"), T0)
    assert lamp.clocks["repair"].deadline == T0 + 2 * DAY
    assert door.clocks["repair"].deadline == T0 + 2 * DAY
    assert "progress" not in lamp.clocks
    book.arrive(lamp.id, T0 + HOUR, "li")
    book.resolve(lamp.id, T0 + DAY, "li")
    assert lamp.clocks["repair"].state == "met"


def test_a_warning_goes_to_the_owner_at_80_percent_once():
    book = TicketBook()
    ticket, _ = book.open(pump_fault(owner="li", backup="zhao"), T0)
    assert book.tick(T0 + 11 * MIN) == []
    warnings = [e for e in book.tick(T0 + 12 * MIN) if e.type == "sla_warning"]
    assert [(w.body["clock"], w.body["to"], w.body["left"]) for w in warnings] == [("arrival", "li", 3 * MIN)]
    assert book.tick(T0 + 13 * MIN) == []


def test_a_clock_running_out_escalates_to_the_backup_then_the_supervisor_each_once():
    policy = SlaPolicy(contacts={"supervisor": "manager-sun"})
    book = TicketBook(policy)
    book.open(pump_fault(owner="li", backup="zhao"), T0)
    at_deadline = book.tick(T0 + 15 * MIN)
    assert [(e.type, e.body.get("to")) for e in at_deadline] == [("sla_breached", None), ("escalated", "zhao")]
    assert at_deadline[1].body["level"] == 1 and at_deadline[1].body["role"] == "backup"
    assert book.tick(T0 + 20 * MIN) == []
    second = book.tick(T0 + 30 * MIN)  # another clock length later: one level up
    assert [(e.type, e.body["to"], e.body["level"]) for e in second] == [("escalated", "manager-sun", 2)]
    assert [e for e in book.tick(T0 + 10 * HOUR) if e.body["clock"] == "arrival"] == []


def test_the_escalation_chain_and_its_pace_are_configurable():
    policy = SlaPolicy(escalation_chain=("backup", "manager", "director"), escalation_step=5 * MIN)
    book = TicketBook(policy)
    book.open(pump_fault(backup="zhao"), T0)
    events = [e for e in book.tick(T0 + 25 * MIN) if e.type == "escalated"]
    assert [e.body["to"] for e in events] == ["zhao", "manager", "director"]


def test_a_step_done_in_time_stops_its_clock_from_escalating():
    book = TicketBook()
    ticket, _ = book.open(pump_fault(backup="zhao"), T0)
    book.arrive(ticket.id, T0 + 14 * MIN, "li")
    assert [e for e in book.tick(T0 + HOUR) if e.body["clock"] == "arrival"] == []


def test_a_cancelled_ticket_says_nothing_more():
    book = TicketBook()
    ticket, _ = book.open(pump_fault(), T0)
    book.cancel(ticket.id, T0 + MIN, "dispatcher-wang")
    assert book.tick(T0 + DAY) == []
    assert ticket.clocks["arrival"].state == "stopped"


def test_a_warning_missed_while_down_is_skipped_for_the_breach():
    book = TicketBook()
    book.open(pump_fault(backup="zhao"), T0)
    assert "sla_warning" not in types(book.tick(T0 + 16 * MIN))


# -- preventive tickets from schedules ------------------------------------------------


def test_an_elevator_is_due_every_15_days_from_its_anchor():
    schedule = Schedule([ScheduleEntry("half_monthly", "lift_1", "elevator", every_days=15, start=T0)])
    assert schedule.due(T0 - 1) == []
    [request] = schedule.due(T0)
    assert (request.kind, request.device, request.fault) == (Kind.PREVENTIVE, "lift_1", "half_monthly")
    assert schedule.due(T0 + 14 * DAY) == []
    assert len(schedule.due(T0 + 15 * DAY)) == 1


def test_the_elevator_plan_has_half_monthly_quarterly_half_yearly_and_yearly_tasks():
    plan = elevator_plan("lift_1", start=T0)
    assert [(e.every_days, e.every_months) for e in plan] == [(15, None), (None, 3), (None, 6), (None, 12)]
    assert water_tank_cleaning("tank_1").every_months == 6


def test_without_an_anchor_the_first_due_is_one_cycle_after_first_seen():
    schedule = Schedule([water_tank_cleaning("tank_1")])
    assert schedule.due(T0) == []
    assert schedule.due(add_months(T0, 6) - 1) == []
    assert [r.fault for r in schedule.due(add_months(T0, 6))] == ["tank_cleaning"]


def test_monthly_cycles_follow_the_calendar_and_clamp_to_the_month_end():
    jan31 = datetime(2027, 1, 31, 8, tzinfo=UTC).timestamp()
    assert datetime.fromtimestamp(add_months(jan31, 1), UTC).date().isoformat() == "2027-02-28"
    aug = datetime(2026, 8, 15, tzinfo=UTC).timestamp()
    assert datetime.fromtimestamp(add_months(aug, 6), UTC).date().isoformat() == "2027-02-15"


def test_a_due_never_duplicates_an_active_preventive_ticket():
    book = TicketBook()
    schedule = Schedule([ScheduleEntry("half_monthly", "lift_1", "elevator", every_days=15, start=T0)])
    [request] = schedule.due(T0, active=book.active_keys())
    ticket, _ = book.open(request, T0)
    assert ticket.kind is Kind.PREVENTIVE
    assert schedule.due(T0 + 15 * DAY, active=book.active_keys()) == []  # absorbed by the active one
    book.arrive(ticket.id, T0 + 16 * DAY, "li")
    book.resolve(ticket.id, T0 + 16 * DAY, "li")
    book.close(ticket.id, T0 + 16 * DAY, "li")  # planned work needs no follow-up
    assert schedule.due(T0 + 16 * DAY, active=book.active_keys()) == []
    assert len(schedule.due(T0 + 30 * DAY, active=book.active_keys())) == 1


def test_cycles_missed_while_down_raise_one_ticket():
    schedule = Schedule([ScheduleEntry("half_monthly", "lift_1", "elevator", every_days=15, start=T0)])
    assert len(schedule.due(T0 + 50 * DAY)) == 1
    assert schedule.state["lift_1/half_monthly"]["next"] == T0 + 60 * DAY


def test_usage_entries_are_due_when_a_counter_crosses_its_next_threshold():
    schedule = Schedule([ScheduleEntry("bearing_grease", "pump_b1_1", "water", counter="run_hours", every=500)])
    assert schedule.due(T0, {"pump_b1_1": {"run_hours": 420}}) == []  # first seen: next is 500
    assert schedule.due(T0 + HOUR, {"pump_b1_1": {"run_hours": 499.9}}) == []
    [request] = schedule.due(T0 + 2 * HOUR, {"pump_b1_1": {"run_hours": 500.2}})
    assert request.source == {"schedule": "bearing_grease", "counter": "run_hours", "value": 500.2, "threshold": 500}
    assert schedule.due(T0 + 3 * HOUR, {"pump_b1_1": {"run_hours": 600}}) == []
    assert len(schedule.due(T0 + 4 * HOUR, {"pump_b1_1": {"run_hours": 1000}})) == 1


def test_start_counts_raise_a_usage_ticket_and_respect_the_active_one():
    schedule = Schedule([ScheduleEntry("contactor", "pump_b1_1", counter="starts", every=1000)])
    schedule.due(T0, {"pump_b1_1": {"starts": 10}})
    active = {("pump_b1_1", "contactor")}
    assert schedule.due(T0 + DAY, {"pump_b1_1": {"starts": 1005}}, active=active) == []
    assert schedule.due(T0 + 2 * DAY, {"pump_b1_1": {"starts": 1500}}) == []  # that crossing was absorbed


def test_a_counter_reset_rebases_the_usage_threshold():
    schedule = Schedule([ScheduleEntry("oil", "gen_1", counter="run_hours", every=100)])
    schedule.due(T0, {"gen_1": {"run_hours": 950}})
    assert schedule.due(T0 + 1, {"gen_1": {"run_hours": 3}}) == []  # counter replaced
    assert len(schedule.due(T0 + 2, {"gen_1": {"run_hours": 100}})) == 1


def test_a_schedule_entry_must_say_one_way_it_is_due():
    with pytest.raises(ValueError, match="exactly one of"):
        ScheduleEntry("x", "d", every_days=15, every_months=3)
    with pytest.raises(ValueError, match="counter needs every"):
        ScheduleEntry("x", "d", counter="starts")
