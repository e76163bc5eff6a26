"""The alarm life cycle (ISA-18.2): every transition, delays, modes, chattering, messages."""

from __future__ import annotations

import pytest

from rules.alarms import (
    Alarm,
    AlarmDefinition,
    AlarmError,
    AlarmState,
    EventType,
    Severity,
    check_template,
    render_message,
)

S = AlarmState
E = EventType


def alarm(**overrides) -> Alarm:
    fields = dict(
        id="pump_b1_1.low_outlet_pressure", device="pump_b1_1", severity="major",
        message="出水压力低 {outlet_pressure:.2f} MPa", chatter_limit=None,
    )
    fields.update(overrides)
    return Alarm(AlarmDefinition(**fields))


def kinds(events) -> list[tuple[EventType, AlarmState]]:
    return [(e.type, e.state) for e in events]


def raised(at: float = 0.0, **overrides) -> Alarm:
    a = alarm(**overrides)
    assert kinds(a.update(at, True)) == [(E.RAISED, S.ACTIVE_UNACKNOWLEDGED)]
    return a


# --- the process states ----------------------------------------------------------------


def test_a_new_alarm_is_normal_and_stays_so_while_the_condition_is_false():
    a = alarm()
    assert a.state == S.NORMAL
    assert a.update(0, False) == []
    assert a.tick(100) == []
    assert a.state == S.NORMAL


def test_condition_true_raises_an_unacknowledged_alarm_with_its_values():
    a = alarm()
    events = a.update(10, True, {"outlet_pressure": 0.123})
    assert kinds(events) == [(E.RAISED, S.ACTIVE_UNACKNOWLEDGED)]
    event = events[0]
    assert (event.alarm, event.device, event.severity, event.ts) == (
        "pump_b1_1.low_outlet_pressure", "pump_b1_1", Severity.MAJOR, 10)
    assert event.message == "出水压力低 0.12 MPa"
    assert a.raised_at == 10


def test_a_condition_that_stays_true_raises_only_once():
    a = raised()
    assert a.update(1, True) == []
    assert a.update(2, True) == []


def test_acknowledging_an_active_alarm_makes_it_active_acknowledged():
    a = raised()
    events = a.acknowledge(5, by="张工", comment="已派人")
    assert kinds(events) == [(E.ACKNOWLEDGED, S.ACTIVE_ACKNOWLEDGED)]
    assert (events[0].by, events[0].comment) == ("张工", "已派人")
    assert (a.acknowledged_at, a.acknowledged_by) == (5, "张工")


def test_an_acknowledged_alarm_whose_condition_clears_is_cleared_to_normal():
    a = raised()
    a.acknowledge(5, by="op")
    assert kinds(a.update(9, False)) == [(E.CLEARED, S.NORMAL)]


def test_an_unacknowledged_alarm_whose_condition_clears_waits_for_acknowledgement():
    a = raised()
    assert kinds(a.update(9, False)) == [(E.RETURNED, S.RETURNED_UNACKNOWLEDGED)]
    assert kinds(a.acknowledge(12, by="op")) == [(E.ACKNOWLEDGED, S.NORMAL)]


def test_a_returned_alarm_whose_condition_comes_back_is_raised_again():
    a = raised()
    a.update(9, False)
    assert kinds(a.update(20, True)) == [(E.RAISED, S.ACTIVE_UNACKNOWLEDGED)]
    assert a.raised_at == 20


def test_a_new_raise_needs_a_new_acknowledgement():
    a = raised()
    a.acknowledge(1, by="op")
    a.update(2, False)
    a.update(3, True)
    assert a.state == S.ACTIVE_UNACKNOWLEDGED
    assert a.acknowledged_by is None


def test_unknown_condition_keeps_every_state():
    a = alarm()
    assert a.update(0, None) == [] and a.state == S.NORMAL
    a.update(1, True)
    assert a.update(2, None) == [] and a.state == S.ACTIVE_UNACKNOWLEDGED
    a.acknowledge(3, by="op")
    assert a.update(4, None) == [] and a.state == S.ACTIVE_ACKNOWLEDGED
    b = raised()
    b.update(1, False)
    assert b.update(2, None) == [] and b.state == S.RETURNED_UNACKNOWLEDGED


def test_unknown_condition_does_not_cancel_a_running_delay():
    a = alarm(on_delay=30)
    a.update(0, True)
    assert a.update(20, None) == []
    assert kinds(a.update(30, None)) == [(E.RAISED, S.ACTIVE_UNACKNOWLEDGED)]


# --- on-delay and off-delay --------------------------------------------------------------


def test_on_delay_raises_only_after_the_condition_held_for_the_delay():
    a = alarm(on_delay=30)
    assert a.update(0, True) == []
    assert a.update(29, True) == []
    assert a.state == S.NORMAL
    assert kinds(a.update(30, True)) == [(E.RAISED, S.ACTIVE_UNACKNOWLEDGED)]


def test_on_delay_expires_on_a_tick_without_a_new_value():
    a = alarm(on_delay=30)
    a.update(0, True)
    assert a.tick(29.9) == []
    assert kinds(a.tick(30)) == [(E.RAISED, S.ACTIVE_UNACKNOWLEDGED)]


def test_a_blip_shorter_than_the_on_delay_raises_nothing():
    a = alarm(on_delay=30)
    a.update(0, True)
    assert a.update(10, False) == []
    assert a.tick(100) == []
    assert a.state == S.NORMAL


def test_the_on_delay_restarts_after_a_blip():
    a = alarm(on_delay=30)
    a.update(0, True)
    a.update(10, False)
    a.update(20, True)
    assert a.tick(49) == []
    assert kinds(a.tick(50)) == [(E.RAISED, S.ACTIVE_UNACKNOWLEDGED)]


def test_off_delay_keeps_the_alarm_active_until_the_condition_stayed_false():
    a = raised(off_delay=60)
    assert a.update(10, False) == []
    assert a.state == S.ACTIVE_UNACKNOWLEDGED
    assert kinds(a.tick(70)) == [(E.RETURNED, S.RETURNED_UNACKNOWLEDGED)]


def test_a_dip_shorter_than_the_off_delay_keeps_the_alarm_raised():
    a = raised(off_delay=60)
    a.update(10, False)
    assert a.update(40, True) == []
    assert a.tick(200) == []
    assert a.state == S.ACTIVE_UNACKNOWLEDGED


# --- shelving ---------------------------------------------------------------------------


def test_shelving_hides_an_active_alarm_until_its_expiry():
    a = raised()
    events = a.shelve(10, until=3600, by="op", reason="传感器待更换")
    assert kinds(events) == [(E.SHELVED, S.SHELVED)]
    assert events[0].details == {"until": 3600}
    assert events[0].comment == "传感器待更换"
    assert a.state_dict()["shelved_until"] == 3600


def test_a_shelved_alarm_announces_no_raise_or_return():
    a = alarm()
    a.shelve(0, until=1000, by="op")
    assert a.update(10, True) == []
    assert a.update(20, False) == []
    assert a.update(30, True) == []
    assert a.state == S.SHELVED


def test_an_expired_shelve_returns_an_active_alarm_unacknowledged():
    a = raised()
    a.acknowledge(1, by="op")
    a.shelve(2, until=100, by="op")
    assert a.tick(99) == []
    events = a.tick(100)
    assert kinds(events) == [(E.UNSHELVED, S.ACTIVE_UNACKNOWLEDGED)]
    assert events[0].details == {"expired": True} and events[0].by is None


def test_an_expired_shelve_returns_a_cleared_alarm_to_normal():
    a = raised()
    a.shelve(2, until=100, by="op")
    a.update(50, False)
    assert kinds(a.tick(100)) == [(E.UNSHELVED, S.NORMAL)]


def test_unshelving_returns_the_alarm_to_the_state_its_condition_implies():
    a = alarm()
    a.shelve(0, until=1000, by="op")
    a.update(10, True)
    events = a.unshelve(20, by="李工")
    assert kinds(events) == [(E.UNSHELVED, S.ACTIVE_UNACKNOWLEDGED)]
    assert events[0].by == "李工"
    assert a.raised_at == 20


def test_shelving_a_shelved_alarm_moves_its_expiry():
    a = alarm()
    a.shelve(0, until=100, by="op")
    a.shelve(50, until=500, by="op")
    assert a.tick(100) == []
    assert kinds(a.tick(500)) == [(E.UNSHELVED, S.NORMAL)]


def test_a_command_after_the_shelve_expired_sees_the_expiry_first():
    a = alarm()
    a.shelve(0, until=100, by="op")
    a.update(10, True)
    events = a.acknowledge(150, by="op")
    assert kinds(events) == [
        (E.UNSHELVED, S.ACTIVE_UNACKNOWLEDGED), (E.ACKNOWLEDGED, S.ACTIVE_ACKNOWLEDGED)]


# --- suppression by design (maintenance mode) ------------------------------------------


def test_suppression_hides_raise_events_while_the_device_is_in_maintenance():
    a = alarm()
    assert kinds(a.suppress(0, True)) == [(E.SUPPRESSED, S.SUPPRESSED)]
    assert a.update(10, True) == []
    assert a.state == S.SUPPRESSED
    assert a.state_dict()["active"] is True


def test_leaving_maintenance_with_the_fault_still_there_raises_it_unacknowledged():
    a = raised()
    a.acknowledge(1, by="op")
    a.suppress(2, True)
    assert kinds(a.suppress(300, False)) == [(E.UNSUPPRESSED, S.ACTIVE_UNACKNOWLEDGED)]


def test_a_fault_fixed_during_maintenance_leaves_the_alarm_normal():
    a = raised()
    a.suppress(2, True)
    assert a.update(100, False) == []
    assert kinds(a.suppress(300, False)) == [(E.UNSUPPRESSED, S.NORMAL)]


def test_suppressing_twice_is_a_no_op():
    a = alarm()
    a.suppress(0, True)
    assert a.suppress(1, True) == []
    a.suppress(2, False)
    assert a.suppress(3, False) == []


def test_a_shelved_alarm_unshelved_during_maintenance_stays_suppressed():
    a = alarm()
    a.suppress(0, True)
    a.shelve(1, until=1000, by="op")
    assert a.state == S.SHELVED
    a.update(5, True)
    assert kinds(a.unshelve(10, by="op")) == [(E.UNSHELVED, S.SUPPRESSED)]
    assert kinds(a.suppress(20, False)) == [(E.UNSUPPRESSED, S.ACTIVE_UNACKNOWLEDGED)]


# --- out of service ---------------------------------------------------------------------


def test_out_of_service_hides_the_alarm_and_back_in_service_reveals_its_condition():
    a = alarm()
    events = a.out_of_service(0, True, by="op", comment="更换变送器")
    assert kinds(events) == [(E.OUT_OF_SERVICE, S.OUT_OF_SERVICE)]
    assert events[0].comment == "更换变送器"
    assert a.update(10, True) == []
    assert kinds(a.out_of_service(20, False, by="op")) == [(E.IN_SERVICE, S.ACTIVE_UNACKNOWLEDGED)]


def test_taking_a_shelved_alarm_out_of_service_ends_the_shelving():
    a = alarm()
    a.shelve(0, until=100, by="op")
    a.out_of_service(10, True, by="op")
    assert a.shelved_until is None
    assert a.tick(200) == []
    assert a.state == S.OUT_OF_SERVICE


def test_out_of_service_outranks_suppression():
    a = alarm()
    a.suppress(0, True)
    a.out_of_service(1, True, by="op")
    assert a.state == S.OUT_OF_SERVICE
    assert kinds(a.out_of_service(2, False, by="op")) == [(E.IN_SERVICE, S.SUPPRESSED)]


# --- illegal operations -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("prepare", "operation", "says"),
    [
        (lambda a: None, lambda a: a.acknowledge(10, by="op"), "is normal"),
        (lambda a: (a.update(0, True), a.acknowledge(1, by="王工")),
         lambda a: a.acknowledge(10, by="op"), "already acknowledged (by 王工)"),
        (lambda a: (a.update(0, True), a.shelve(1, 100, by="op")),
         lambda a: a.acknowledge(10, by="op"), "is shelved"),
        (lambda a: a.suppress(0, True), lambda a: a.acknowledge(10, by="op"), "is suppressed"),
        (lambda a: a.out_of_service(0, True, by="op"),
         lambda a: a.shelve(10, 100, by="op"), "out of service: it cannot be shelved"),
        (lambda a: None, lambda a: a.unshelve(10, by="op"), "is not shelved"),
        (lambda a: None, lambda a: a.shelve(10, 10, by="op"), "a time in the future"),
        (lambda a: a.out_of_service(0, True, by="op"),
         lambda a: a.out_of_service(10, True, by="op"), "already out of service"),
        (lambda a: None, lambda a: a.out_of_service(10, False, by="op"), "already in service"),
    ],
    ids=["ack-normal", "ack-twice", "ack-shelved", "ack-suppressed", "shelve-out-of-service",
         "unshelve-unshelved", "shelve-into-the-past", "out-of-service-twice", "in-service-twice"],
)
def test_illegal_operations_are_refused_with_a_reason_and_change_nothing(prepare, operation, says):
    a = alarm()
    prepare(a)
    before = a.snapshot()
    with pytest.raises(AlarmError, match=says.replace("(", r"\(").replace(")", r"\)")) as caught:
        operation(a)
    assert a.id in str(caught.value)
    assert a.snapshot() == before


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        ({"on_delay": -1}, "cannot be negative"),
        ({"chatter_limit": 0}, "at least 1"),
        ({"message": "压力 {x.__class__}"}, "plain point name"),
        ({"message": "压力 {0}"}, "name the point"),
        ({"message": "压力 {x"}, "message template"),
        ({"severity": "high"}, "high"),
    ],
)
def test_a_bad_definition_is_refused_when_it_is_built(overrides, says):
    with pytest.raises(ValueError, match=says):
        alarm(**overrides)


# --- chattering -------------------------------------------------------------------------


def chatter(a: Alarm, times: list[float]) -> list:
    events = []
    for t in times:
        events += a.update(t, True)
        events += a.update(t + 1, False)
    return events


def test_more_than_n_activations_in_the_window_flag_chattering_once_with_the_count():
    a = alarm(chatter_limit=3, chatter_window=60)
    events = chatter(a, [0, 10, 20, 30, 40, 50])
    types = [e.type for e in events]
    assert types == [E.RAISED, E.RETURNED] * 3 + [E.CHATTERING]
    flag = events[-1]
    assert flag.details == {"chattering": True, "count": 4}
    assert flag.state == S.ACTIVE_UNACKNOWLEDGED
    assert a.chattering and a.state_dict()["chattering"] is True


def test_chattering_ends_after_a_quiet_window_and_says_so():
    a = alarm(chatter_limit=3, chatter_window=60)
    chatter(a, [0, 10, 20, 30])
    assert a.tick(89) == []
    events = a.tick(90)
    assert [(e.type, e.details) for e in events] == [
        (E.CHATTERING, {"chattering": False, "count": 0})]
    assert events[0].state == S.RETURNED_UNACKNOWLEDGED
    assert kinds(a.update(100, True)) == [(E.RAISED, S.ACTIVE_UNACKNOWLEDGED)]


def test_activations_spread_wider_than_the_window_are_not_chattering():
    a = alarm(chatter_limit=3, chatter_window=60)
    events = chatter(a, [0, 30, 60, 90, 120])
    assert E.CHATTERING not in [e.type for e in events]


def test_a_chattering_alarm_can_still_be_acknowledged():
    a = alarm(chatter_limit=1, chatter_window=60)
    chatter(a, [0, 10])
    assert kinds(a.acknowledge(12, by="op")) == [(E.ACKNOWLEDGED, S.NORMAL)]


def test_chattering_detection_is_off_without_a_limit():
    a = alarm(chatter_limit=None)
    events = chatter(a, list(range(0, 100, 5)))
    assert E.CHATTERING not in [e.type for e in events]


def test_a_blip_filtered_by_the_on_delay_does_not_count_as_chattering():
    a = alarm(chatter_limit=1, chatter_window=60, on_delay=5)
    events = chatter(a, [0, 10, 20])
    assert events == []


# --- messages ---------------------------------------------------------------------------


def test_messages_render_chinese_text_and_format_specs():
    values = {"outlet_pressure": 0.1234, "水位": 87.5, "floor": 3}
    assert render_message("出水压力低 {outlet_pressure:.2f} MPa", values) == "出水压力低 0.12 MPa"
    assert render_message("集水井水位 {水位:.0f}%", values) == "集水井水位 88%"
    assert render_message("电梯困人，{floor:d} 层 {{紧急}}", values) == "电梯困人，3 层 {紧急}"


def test_a_missing_value_renders_as_a_question_mark_and_a_misfit_as_is():
    assert render_message("压力 {p:.2f}", {}) == "压力 ?"
    assert render_message("状态 {s:.2f}", {"s": "故障"}) == "状态 故障"


def test_a_template_names_its_points():
    assert check_template("{a:.1f} 和 {b} {{c}}") == {"a", "b"}


def test_the_message_follows_the_latest_values():
    a = alarm()
    a.update(0, True, {"outlet_pressure": 0.15})
    assert a.state_dict()["message"] == "出水压力低 0.15 MPa"
    events = a.update(5, False, {"outlet_pressure": 0.31})
    assert events[0].message == "出水压力低 0.31 MPa"


# --- what upstream sees -----------------------------------------------------------------


def test_the_state_dict_is_the_retained_message_body():
    a = raised(at=100)
    a.acknowledge(130, by="op")
    assert a.state_dict() == {
        "id": "pump_b1_1.low_outlet_pressure", "device": "pump_b1_1",
        "state": "active_acknowledged", "severity": "major", "message": "出水压力低 ? MPa",
        "active": True, "raised_at": 100, "acknowledged_at": 130, "acknowledged_by": "op",
        "shelved_until": None, "chattering": False, "last_change": 130,
    }


def test_an_event_body_carries_the_transition_and_its_details():
    a = alarm()
    event = a.shelve(5, until=65, by="op", reason="误报")[0]
    assert event.to_dict() == {
        "alarm": "pump_b1_1.low_outlet_pressure", "device": "pump_b1_1",
        "transition": "shelved", "state": "shelved", "severity": "major",
        "message": "出水压力低 ? MPa", "ts": 5, "by": "op", "comment": "误报", "until": 65,
    }
