"""Alarm, ticket and maintenance commands: strict parsing with reasons, and the handler that
hands them to the rule engine, sends the engine's events on through the pipeline, replies
with the new state and audits who did what."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gateway.batch import Event
from gateway.commands.audit import AuditLog, read_entries
from gateway.commands.handler import CommandHandler
from gateway.commands.models import (
    AckAlarmCommand,
    AlarmServiceCommand,
    MaintenanceCommand,
    Rejected,
    ShelveAlarmCommand,
    UnshelveAlarmCommand,
    UpdateTicketCommand,
    parse_command,
)
from gateway.config.models import SiteConfig

NOW = 1_795_428_000.0  # 2026-11-23T10:00:00Z, the handler's clock in these tests
ALARM = "pump_b1_1.low_outlet_pressure"


def _cmd(**fields: Any) -> bytes:
    return json.dumps(fields, ensure_ascii=False).encode()


# --- parsing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("fields", "expected"), [
    ({"type": "ack_alarm", "alarm": ALARM, "comment": "已派人", "by": "刘工"},
     AckAlarmCommand(id="r", type="ack_alarm", alarm=ALARM, comment="已派人", by="刘工")),
    ({"type": "shelve_alarm", "alarm": ALARM, "for": "2h", "reason": "传感器待更换"},
     ShelveAlarmCommand(id="r", type="shelve_alarm", alarm=ALARM, **{"for": 7200.0},
                        reason="传感器待更换")),
    ({"type": "shelve_alarm", "alarm": ALARM, "for": 90},
     ShelveAlarmCommand(id="r", type="shelve_alarm", alarm=ALARM, **{"for": 90.0})),
    ({"type": "shelve_alarm", "alarm": ALARM, "until": "2026-11-23T18:00:00+08:00"},
     ShelveAlarmCommand(id="r", type="shelve_alarm", alarm=ALARM, until="2026-11-23T10:00:00Z")),
    ({"type": "shelve_alarm", "alarm": ALARM, "for": "7d"},
     ShelveAlarmCommand(id="r", type="shelve_alarm", alarm=ALARM, **{"for": 7 * 86400.0})),
    ({"type": "unshelve_alarm", "alarm": ALARM},
     UnshelveAlarmCommand(id="r", type="unshelve_alarm", alarm=ALARM)),
    ({"type": "alarm_service", "alarm": ALARM, "in_service": False, "comment": "换传感器"},
     AlarmServiceCommand(id="r", type="alarm_service", alarm=ALARM, in_service=False,
                         comment="换传感器")),
    ({"type": "update_ticket", "ticket": "T-20261123-0007", "step": "dispatch", "owner": "李工",
      "backup": "赵工"},
     UpdateTicketCommand(id="r", type="update_ticket", ticket="T-20261123-0007", step="dispatch",
                         owner="李工", backup="赵工")),
    ({"type": "update_ticket", "ticket": "T-1", "step": "note", "note": "配件已到"},
     UpdateTicketCommand(id="r", type="update_ticket", ticket="T-1", step="note", note="配件已到")),
    ({"type": "maintenance", "device": "pump_b1_2", "on": True, "for": "4h", "reason": "换密封"},
     MaintenanceCommand(id="r", type="maintenance", device="pump_b1_2", on=True,
                        **{"for": 14400.0}, reason="换密封")),
    ({"type": "maintenance", "device": "pump_b1_2", "on": False},
     MaintenanceCommand(id="r", type="maintenance", device="pump_b1_2", on=False)),
], ids=lambda v: v["type"] if isinstance(v, dict) else "")
def test_each_rule_command_parses_into_its_model(fields: dict[str, Any], expected: Any) -> None:
    assert parse_command(_cmd(id="r", **fields)) == expected


@pytest.mark.parametrize(("fields", "reason"), [
    ({"type": "ack_alarm"}, "alarm is missing"),
    ({"type": "ack_alarm", "alarm": ""}, "alarm: String should have at least 1 character"),
    ({"type": "ack_alarm", "alarm": 7}, "alarm: Input should be a valid string"),
    ({"type": "ack_alarm", "alarm": ALARM, "note": "x"},
     "unknown field 'note'; ack_alarm takes id, by, type, alarm, comment"),
    ({"type": "ack_alarm", "alarm": ALARM, "comment": "x" * 2001}, "comment: String should have at most 2000"),
    ({"type": "shelve_alarm", "alarm": ALARM},
     'shelve_alarm needs for (a duration such as "2h") or until (an ISO-8601 time)'),
    ({"type": "shelve_alarm", "alarm": ALARM, "for": "2h", "until": "2026-11-23T18:00:00Z"},
     "give for (a duration) or until (a time), not both"),
    ({"type": "shelve_alarm", "alarm": ALARM, "for": "8d"},
     "for: 8 days is longer than a shelve may last (7 days); take the alarm out of service"),
    ({"type": "shelve_alarm", "alarm": ALARM, "for": 7 * 86400 + 1}, "longer than a shelve may last"),
    ({"type": "shelve_alarm", "alarm": ALARM, "for": "2 hours"}, "for: '2 hours' is not a duration"),
    ({"type": "shelve_alarm", "alarm": ALARM, "for": True}, 'for: expected a duration such as "30m"'),
    ({"type": "shelve_alarm", "alarm": ALARM, "for": 0}, "for: 0 is not a positive duration"),
    ({"type": "shelve_alarm", "alarm": ALARM, "until": "2026-11-23T18:00:00"},
     "has no time zone; add Z (UTC) or an offset such as +08:00"),
    ({"type": "shelve_alarm", "alarm": ALARM, "until": "tomorrow"}, "'tomorrow' is not an ISO-8601 time"),
    ({"type": "shelve_alarm", "alarm": ALARM, "until": 1795428000}, "until: expected an ISO-8601 time"),
    ({"type": "shelve_alarm", "alarm": ALARM, "for": "1h", "duration": "1h"},
     "unknown field 'duration'; shelve_alarm takes id, by, type, alarm, for, until, reason"),
    ({"type": "unshelve_alarm", "alarm": ALARM, "reason": "x"},
     "unknown field 'reason'; unshelve_alarm takes id, by, type, alarm"),
    ({"type": "alarm_service", "alarm": ALARM}, "in_service is missing"),
    ({"type": "alarm_service", "alarm": ALARM, "in_service": "false"},
     "in_service: Input should be a valid boolean"),
    ({"type": "update_ticket", "ticket": "T-1", "step": "dispatch"},
     "dispatch needs owner: who takes the ticket"),
    ({"type": "update_ticket", "ticket": "T-1", "step": "resolve", "backup": "赵工"},
     "owner and backup go with step dispatch, not resolve"),
    ({"type": "update_ticket", "ticket": "T-1", "step": "note"}, "step note needs the note's text"),
    ({"type": "update_ticket", "ticket": "T-1", "step": "finish"},
     "step: Input should be 'dispatch', 'arrive', 'progress', 'resolve', 'follow_up', 'close', "
     "'cancel' or 'note'"),
    ({"type": "update_ticket", "ticket": "T-1", "step": "close", "state": "closed"},
     "unknown field 'state'; update_ticket takes id, by, type, ticket, step, note, owner, backup"),
    ({"type": "update_ticket", "step": "close"}, "ticket is missing"),
    ({"type": "maintenance", "device": "pump_b1_2"}, "on is missing"),
    ({"type": "maintenance", "device": "pump_b1_2", "on": "yes"}, "on: Input should be a valid boolean"),
    ({"type": "maintenance", "device": "pump_b1_2", "on": False, "for": "1h"},
     "for goes with on: true; ending maintenance takes no duration"),
    ({"type": "maintenance", "device": "pump_b1_2", "on": True, "for": "soon"},
     "for: 'soon' is not a duration"),
    ({"type": "maintenance", "device": "pump_b1_2", "on": True, "until": "2026-11-24T00:00:00Z"},
     "unknown field 'until'; maintenance takes id, by, type, device, on, for, reason"),
])
def test_a_malformed_rule_command_is_refused_with_what_would_be_right(
    fields: dict[str, Any], reason: str
) -> None:
    parsed = parse_command(_cmd(id="r1", by="刘工", **fields))
    assert isinstance(parsed, Rejected), parsed
    assert (parsed.request_id, parsed.type, parsed.by) == ("r1", fields["type"], "刘工")
    assert reason in parsed.reason


# --- the handler with a fake engine ------------------------------------------------------------


class FakeEngine:
    """Records each call; returns the events a real engine would, or refuses like one."""

    def __init__(self, refuse: str | None = None, fail: Exception | None = None) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.refuse = refuse
        self.fail = fail
        self.ticket_view: list[dict[str, Any]] = []

    def _done(self, call: tuple[Any, ...], produced: list[Event]) -> list[Event]:
        self.calls.append(call)
        if self.refuse is not None:
            raise ValueError(self.refuse)
        if self.fail is not None:
            raise self.fail
        return produced

    @staticmethod
    def _alarm_events(transition: str, state: str, by: str) -> list[Event]:
        return [
            Event("alarm_event", NOW, "pump_b1_1",
                  {"alarm": ALARM, "transition": transition, "state": state, "by": by}),
            Event("alarm_state", NOW, "pump_b1_1", {"alarm": ALARM, "state": state, "closed": False}),
        ]

    def acknowledge(self, alarm_id: str, by: str, comment: str | None = None) -> list[Event]:
        return self._done(("acknowledge", alarm_id, by, comment),
                          self._alarm_events("acknowledged", "active_acknowledged", by))

    def shelve(self, alarm_id: str, by: str, *, until: float,
               reason: str | None = None) -> list[Event]:
        return self._done(("shelve", alarm_id, by, until, reason),
                          self._alarm_events("shelved", "shelved", by))

    def unshelve(self, alarm_id: str, by: str) -> list[Event]:
        return self._done(("unshelve", alarm_id, by),
                          self._alarm_events("unshelved", "active_unacknowledged", by))

    def set_in_service(self, alarm_id: str, in_service: bool, by: str,
                       comment: str | None = None) -> list[Event]:
        return self._done(("set_in_service", alarm_id, in_service, by, comment),
                          self._alarm_events("out_of_service", "out_of_service", by))

    def update_ticket(self, ticket_id: str, step: str, by: str, *, note: str = "",
                      owner: str | None = None, backup: str | None = None) -> list[Event]:
        closed = step in ("close", "cancel")
        produced = [] if step == "note" else [
            Event("ticket_event", NOW, "pump_b1_1", {"ticket": ticket_id, "event": step}),
            Event("ticket_state", NOW, "pump_b1_1",
                  {"ticket": ticket_id, "state": step, "owner": owner, "closed": closed}),
        ]
        return self._done(("update_ticket", ticket_id, step, by, note, owner, backup), produced)

    def set_maintenance(self, device: str, on: bool, by: str, *, duration: float | None = None,
                        reason: str | None = None) -> list[Event]:
        until = "2026-11-23T14:00:00.000Z" if on else None
        produced = [Event("maintenance", NOW, device, {"maintenance": on, "until": until, "by": by})]
        return self._done(("set_maintenance", device, on, by, duration, reason), produced)

    def alarm(self, alarm_id: str) -> dict[str, Any]:
        return {"alarm": alarm_id, "state": "active_acknowledged", "closed": False}

    def tickets(self) -> list[dict[str, Any]]:
        return self.ticket_view


class FakePipeline:
    def __init__(self) -> None:
        self.emitted: list[Event] = []

    def emit_event(self, event: Event) -> None:
        self.emitted.append(event)


class FakeGateway:
    def __init__(self, rules: FakeEngine | None) -> None:
        self.config = SiteConfig.model_validate({"site": {"id": "estate", "name": "测试小区"}})
        self.drivers: list[Any] = []
        self.health: dict[str, Any] = {}
        self.rules = rules
        self.pipeline = FakePipeline()

    async def reload(self, config: SiteConfig) -> dict[str, object]:
        raise AssertionError("not used")


@pytest.fixture
def audit(tmp_path: Path):
    log = AuditLog(tmp_path / "audit.jsonl")
    log.open()
    yield log
    log.close()


def _handler(audit: AuditLog, engine: FakeEngine | None) -> tuple[CommandHandler, FakeGateway]:
    gateway = FakeGateway(engine)
    handler = CommandHandler(gateway, None, audit, via="gw-client", clock=lambda: NOW)
    return handler, gateway


async def _run(handler: CommandHandler, **fields: Any) -> dict[str, Any]:
    reply = await handler.handle(_cmd(**fields))
    assert reply is not None
    return json.loads(reply.payload())


async def test_an_ack_reaches_the_engine_and_its_events_go_on_in_order(audit: AuditLog) -> None:
    engine = FakeEngine()
    handler, gateway = _handler(audit, engine)
    reply = await _run(handler, id="a1", type="ack_alarm", alarm=ALARM, comment="已派人", by="刘工")
    assert reply["ok"] is True
    assert reply["result"] == {"alarm": ALARM, "state": "active_acknowledged", "closed": False}
    assert engine.calls == [("acknowledge", ALARM, "刘工", "已派人")]
    assert [e.type for e in gateway.pipeline.emitted] == ["alarm_event", "alarm_state"]
    (entry,) = read_entries(audit.path)
    assert (entry["who"], entry["via"], entry["type"], entry["target"], entry["outcome"]) == (
        "刘工", "gw-client", "ack_alarm", ALARM, "accepted")
    assert entry["value"] == {"comment": "已派人"}


async def test_a_command_without_by_acts_as_the_connection_it_came_on(audit: AuditLog) -> None:
    engine = FakeEngine()
    handler, _ = _handler(audit, engine)
    await _run(handler, id="a2", type="ack_alarm", alarm=ALARM)
    assert engine.calls == [("acknowledge", ALARM, "gw-client", None)]
    assert read_entries(audit.path)[0]["who"] == "gw-client"


async def test_a_local_command_acts_as_the_cli_user_it_came_from(audit: AuditLog) -> None:
    engine = FakeEngine()
    handler, _ = _handler(audit, engine)
    reply = await handler.handle(_cmd(id="a3", type="unshelve_alarm", alarm=ALARM), via="cli:ops")
    assert reply is not None and reply.ok
    assert engine.calls == [("unshelve", ALARM, "cli:ops")]


async def test_a_shelve_for_a_duration_ends_that_long_after_now(audit: AuditLog) -> None:
    engine = FakeEngine()
    handler, _ = _handler(audit, engine)
    reply = await _run(handler, id="s1", type="shelve_alarm", alarm=ALARM, **{"for": "2h"},
                       reason="传感器待更换", by="刘工")
    assert reply["ok"] is True
    assert engine.calls == [("shelve", ALARM, "刘工", NOW + 7200, "传感器待更换")]
    entry = read_entries(audit.path)[0]
    assert entry["value"] == {"for": 7200.0, "reason": "传感器待更换",
                              "until": "2026-11-23T12:00:00.000Z"}


async def test_a_shelve_until_a_zoned_time_ends_at_that_instant(audit: AuditLog) -> None:
    engine = FakeEngine()
    handler, _ = _handler(audit, engine)
    reply = await _run(handler, id="s2", type="shelve_alarm", alarm=ALARM,
                       until="2026-11-23T20:00:00+08:00")  # 12:00 UTC
    assert reply["ok"] is True
    assert engine.calls == [("shelve", ALARM, "gw-client", NOW + 7200, None)]


@pytest.mark.parametrize(("until", "reason"), [
    ("2026-11-23T09:59:59Z", "until 2026-11-23T09:59:59.000Z is not in the future"),
    ("2026-11-23T10:00:00Z", "is not in the future"),
    ("2026-12-01T10:00:00Z", "is 8.0 days away; a shelve lasts at most 7 days"),
])
async def test_a_shelve_until_the_past_or_beyond_a_week_is_refused_before_the_engine(
    audit: AuditLog, until: str, reason: str
) -> None:
    engine = FakeEngine()
    handler, gateway = _handler(audit, engine)
    reply = await _run(handler, id="s3", type="shelve_alarm", alarm=ALARM, until=until)
    assert reply["ok"] is False and reason in reply["error"]
    assert engine.calls == [] and gateway.pipeline.emitted == []
    entry = read_entries(audit.path)[0]
    assert entry["outcome"] == "refused" and entry["value"] == {"until": until.replace("Z", ".000Z")}


async def test_taking_an_alarm_out_of_service_passes_in_service_false(audit: AuditLog) -> None:
    engine = FakeEngine()
    handler, _ = _handler(audit, engine)
    reply = await _run(handler, id="o1", type="alarm_service", alarm=ALARM, in_service=False,
                       comment="液位计更换", by="李工")
    assert reply["ok"] is True and reply["result"]["alarm"] == ALARM
    assert engine.calls == [("set_in_service", ALARM, False, "李工", "液位计更换")]
    assert read_entries(audit.path)[0]["value"] == {"in_service": False, "comment": "液位计更换"}


async def test_a_dispatch_names_the_owner_and_replies_with_the_ticket_state(audit: AuditLog) -> None:
    engine = FakeEngine()
    handler, gateway = _handler(audit, engine)
    reply = await _run(handler, id="t1", type="update_ticket", ticket="T-20261123-0007",
                       step="dispatch", owner="李工", backup="赵工", note="带备用密封圈", by="调度-王")
    assert reply["ok"] is True
    assert reply["result"] == {"ticket": "T-20261123-0007", "state": "dispatch", "owner": "李工",
                               "closed": False}
    assert engine.calls == [
        ("update_ticket", "T-20261123-0007", "dispatch", "调度-王", "带备用密封圈", "李工", "赵工")]
    assert [e.type for e in gateway.pipeline.emitted] == ["ticket_event", "ticket_state"]
    entry = read_entries(audit.path)[0]
    assert entry["target"] == "T-20261123-0007"
    assert entry["value"] == {"step": "dispatch", "note": "带备用密封圈", "owner": "李工",
                              "backup": "赵工"}


async def test_closing_a_ticket_replies_with_its_closed_state(audit: AuditLog) -> None:
    engine = FakeEngine()  # its view no longer lists the ticket, as the engine forgets it
    handler, _ = _handler(audit, engine)
    reply = await _run(handler, id="t2", type="update_ticket", ticket="T-1", step="close")
    assert reply["ok"] is True and reply["result"]["closed"] is True


async def test_a_note_without_events_replies_with_the_engines_view_of_the_ticket(
    audit: AuditLog,
) -> None:
    engine = FakeEngine()
    engine.ticket_view = [{"ticket": "T-0", "state": "open"}, {"ticket": "T-1", "state": "on_site"}]
    handler, gateway = _handler(audit, engine)
    reply = await _run(handler, id="t3", type="update_ticket", ticket="T-1", step="note",
                       note="配件已到")
    assert reply["ok"] is True and reply["result"] == {"ticket": "T-1", "state": "on_site"}
    assert gateway.pipeline.emitted == []


async def test_maintenance_passes_its_duration_and_replies_with_the_mode(audit: AuditLog) -> None:
    engine = FakeEngine()
    handler, gateway = _handler(audit, engine)
    reply = await _run(handler, id="m1", type="maintenance", device="pump_b1_2", on=True,
                       **{"for": "4h"}, reason="更换机械密封", by="李工")
    assert reply["ok"] is True
    assert reply["result"] == {"device": "pump_b1_2", "maintenance": True,
                               "until": "2026-11-23T14:00:00.000Z", "by": "李工"}
    assert engine.calls == [("set_maintenance", "pump_b1_2", True, "李工", 14400.0, "更换机械密封")]
    assert [e.type for e in gateway.pipeline.emitted] == ["maintenance"]
    entry = read_entries(audit.path)[0]
    assert entry["target"] == "pump_b1_2"
    assert entry["value"] == {"on": True, "for": 14400.0, "reason": "更换机械密封"}


async def test_ending_maintenance_passes_no_duration(audit: AuditLog) -> None:
    engine = FakeEngine()
    handler, _ = _handler(audit, engine)
    reply = await _run(handler, id="m2", type="maintenance", device="pump_b1_2", on=False)
    assert reply["ok"] is True and reply["result"]["maintenance"] is False
    assert engine.calls == [("set_maintenance", "pump_b1_2", False, "gw-client", None, None)]


@pytest.mark.parametrize("fields", [
    {"type": "ack_alarm", "alarm": ALARM},
    {"type": "shelve_alarm", "alarm": ALARM, "for": "1h"},
    {"type": "unshelve_alarm", "alarm": ALARM},
    {"type": "alarm_service", "alarm": ALARM, "in_service": True},
    {"type": "update_ticket", "ticket": "T-1", "step": "arrive"},
    {"type": "maintenance", "device": "pump_b1_2", "on": True},
], ids=lambda f: f["type"])
async def test_the_engines_refusal_is_the_reply_and_nothing_is_emitted(
    audit: AuditLog, fields: dict[str, Any]
) -> None:
    engine = FakeEngine(refuse="alarm pump_b1_1.low_outlet_pressure is normal: there is nothing to do")
    handler, gateway = _handler(audit, engine)
    reply = await _run(handler, id="x1", **fields)
    assert reply["ok"] is False
    assert reply["error"] == "alarm pump_b1_1.low_outlet_pressure is normal: there is nothing to do"
    assert "result" not in reply
    assert len(engine.calls) == 1 and gateway.pipeline.emitted == []
    entry = read_entries(audit.path)[0]
    assert entry["outcome"] == "refused" and entry["reason"] == reply["error"]


async def test_a_gateway_without_rules_refuses_rule_commands(audit: AuditLog) -> None:
    handler, _ = _handler(audit, None)
    reply = await _run(handler, id="n1", type="ack_alarm", alarm=ALARM)
    assert reply["ok"] is False and reply["error"].startswith("this gateway runs no rules")
    assert read_entries(audit.path)[0]["outcome"] == "refused"


async def test_an_engine_bug_fails_the_command_not_the_handler(audit: AuditLog) -> None:
    handler, gateway = _handler(audit, FakeEngine(fail=RuntimeError("store closed")))
    reply = await _run(handler, id="b1", type="ack_alarm", alarm=ALARM)
    assert reply["ok"] is False and "internal error" in reply["error"]
    assert gateway.pipeline.emitted == []
    assert read_entries(audit.path)[0]["outcome"] == "failed"


async def test_a_redelivered_rule_command_is_answered_again_but_not_rerun(audit: AuditLog) -> None:
    engine = FakeEngine()
    handler, gateway = _handler(audit, engine)
    first = await _run(handler, id="d1", type="ack_alarm", alarm=ALARM)
    again = await _run(handler, id="d1", type="ack_alarm", alarm=ALARM)
    assert first == again and first["ok"] is True
    assert len(engine.calls) == 1 and len(gateway.pipeline.emitted) == 2


async def test_a_malformed_rule_command_never_reaches_the_engine(audit: AuditLog) -> None:
    engine = FakeEngine()
    handler, _ = _handler(audit, engine)
    reply = await _run(handler, id="p1", type="update_ticket", ticket="T-1", step="dispatch")
    assert reply["ok"] is False and "dispatch needs owner" in reply["error"]
    assert engine.calls == []
    assert read_entries(audit.path)[0]["type"] == "update_ticket"
