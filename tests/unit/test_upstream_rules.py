"""Alarms and tickets upstream: where each rule event goes (topic, retain, an empty payload
that deletes a closed one), and that what real alarms and tickets produce is what
docs/asyncapi.yaml says, field for field. Also that the documented commands are the ones
the gateway parses."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from gateway.batch import Event
from gateway.commands.models import TICKET_STEPS, Rejected, UpdateTicketCommand, parse_command
from gateway.sinks import contract
from rules.alarms import Alarm, AlarmDefinition
from rules.engine import events
from rules.engine.commands import TICKET_STEPS as ENGINE_TICKET_STEPS
from rules.tickets import Grade, Kind, SlaPolicy, TicketBook, TicketRequest

ROOT = Path(__file__).resolve().parents[2]
DOC_URI = "urn:test:asyncapi"
IDENTITY = contract.Identity("demo-estate", "ipc-b1")
TOPICS = contract.Topics.of("pm", "demo-estate", "ipc-b1")
T0 = 1_795_428_000.0  # 2026-11-23T10:00:00Z


@pytest.fixture(scope="module")
def asyncapi() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docs" / "asyncapi.yaml").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def schema(asyncapi: dict[str, Any]):
    """`schema(name)`: a validator for components/schemas/<name> of the AsyncAPI document."""
    registry = Registry().with_resource(
        DOC_URI, Resource.from_contents(asyncapi, default_specification=DRAFT7)
    )

    def validator(name: str) -> jsonschema.Draft7Validator:
        return jsonschema.Draft7Validator(
            {"$ref": f"{DOC_URI}#/components/schemas/{name}"}, registry=registry
        )

    return validator


def _published(item: Event, seq: int = 7) -> tuple[str, bytes, bool]:
    return contract.event_message(TOPICS, IDENTITY, f"3fa2c1d0:{seq}", seq, item)


def _valid(schema, name: str, body: dict[str, Any]) -> None:
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in schema(name).iter_errors(body)]
    assert not errors, f"{body.get('type')} {body.get('transition') or body.get('event')}: {errors}"


# --- where each event goes ----------------------------------------------------------------


def _alarm() -> Alarm:
    return Alarm(AlarmDefinition("pump_b1_1.low_outlet_pressure", "pump_b1_1", "major",
                                 "出水压力低 {outlet_pressure:.2f} MPa", chatter_limit=None))


def test_an_open_alarm_state_is_retained_on_its_own_topic_with_the_envelope() -> None:
    alarm = _alarm()
    alarm.update(T0, True, {"outlet_pressure": 0.12})
    topic, payload, retain = _published(events.alarm_state(alarm, "出水压力低", T0), seq=18391)
    assert topic == "pm/demo-estate/ipc-b1/alarms/pump_b1_1.low_outlet_pressure"
    assert retain is True
    body = json.loads(payload)
    assert {k: body[k] for k in ("id", "seq", "site", "gateway", "device", "ts", "type")} == {
        "id": "3fa2c1d0:18391", "seq": 18391, "site": "demo-estate", "gateway": "ipc-b1",
        "device": "pump_b1_1", "ts": "2026-11-23T10:00:00.000Z", "type": "alarm_state",
    }
    assert body["alarm"] == "pump_b1_1.low_outlet_pressure"
    assert body["state"] == "active_unacknowledged" and body["closed"] is False


def test_a_closed_alarm_is_an_empty_retained_payload_that_deletes_it() -> None:
    alarm = _alarm()
    alarm.update(T0, True)
    alarm.acknowledge(T0 + 30, "张工")
    alarm.update(T0 + 60, False)  # cleared: normal, closed
    topic, payload, retain = _published(events.alarm_state(alarm, "出水压力低", T0 + 60))
    assert topic == "pm/demo-estate/ipc-b1/alarms/pump_b1_1.low_outlet_pressure"
    assert (payload, retain) == (b"", True)


def _ticket_book() -> tuple[TicketBook, str]:
    book = TicketBook()
    ticket, _ = book.open(TicketRequest("pump_b1_1", "low_outlet_pressure", category="water",
                                        title="1号生活水泵出水压力低"), T0)
    return book, ticket.id


def test_a_ticket_state_is_retained_until_the_ticket_is_closed_or_cancelled() -> None:
    book, ticket_id = _ticket_book()
    topic, payload, retain = _published(events.ticket_state(book.get(ticket_id), T0))
    assert topic == f"pm/demo-estate/ipc-b1/tickets/{ticket_id}" and retain is True
    assert json.loads(payload)["state"] == "open"
    book.cancel(ticket_id, T0 + 60, "调度-王", "误报")
    topic, payload, retain = _published(events.ticket_state(book.get(ticket_id), T0 + 60))
    assert (topic, payload, retain) == (f"pm/demo-estate/ipc-b1/tickets/{ticket_id}", b"", True)


@pytest.mark.parametrize("item", [
    Event(events.ALARM_EVENT, T0, "pump_b1_1", {"alarm": "a", "transition": "raised"}),
    Event(events.TICKET_EVENT, T0, "pump_b1_1", {"ticket": "T-1", "event": "closed"}),
    Event(events.MAINTENANCE, T0, "pump_b1_1", {"maintenance": True, "until": None}),
    events.alarm_flood(T0, True, 12, 600.0),
], ids=lambda item: item.type)
def test_events_go_to_their_type_not_retained(item: Event) -> None:
    topic, payload, retain = _published(item)
    assert topic == f"pm/demo-estate/ipc-b1/events/{item.type}" and retain is False
    assert json.loads(payload)["type"] == item.type


def test_device_status_stays_retained_on_its_device_topic() -> None:
    topic, _, retain = _published(Event("device_status", T0, "pump_b1_1", {"online": True}))
    assert (topic, retain) == ("pm/demo-estate/ipc-b1/status/pump_b1_1", True)


def test_ids_that_would_be_wildcards_become_safe_topic_levels() -> None:
    assert TOPICS.alarm("pump+1.low#") == "pm/demo-estate/ipc-b1/alarms/pump_1.low_"
    assert TOPICS.ticket("T/1") == "pm/demo-estate/ipc-b1/tickets/T_1"


@pytest.mark.parametrize("item", [
    Event(events.ALARM_STATE, T0, "pump_b1_1", {"state": "normal", "closed": False}),
    Event(events.TICKET_STATE, T0, "pump_b1_1", {"ticket": "", "closed": True}),
], ids=["alarm-without-id", "ticket-with-empty-id"])
def test_a_state_that_names_nothing_is_refused_rather_than_misplaced(item: Event) -> None:
    with pytest.raises(ValueError, match="without a"):
        _published(item)


# --- what real alarms and tickets produce fits the schemas ---------------------------------


def _alarm_walk() -> Iterator[tuple[Alarm, list[Any], float]]:
    """Every transition of the life cycle, each with the alarm as it left it."""
    alarm = Alarm(AlarmDefinition("tank_b1.high_level", "tank_b1", "minor", "水箱高水位 {level:.0f}%",
                                  chatter_limit=2, chatter_window=60.0))
    steps = [
        (1.0, lambda t: alarm.update(t, True, {"level": 96})),  # raised
        (2.0, lambda t: alarm.acknowledge(t, "张工", "已派人")),  # acknowledged
        (3.0, lambda t: alarm.update(t, False)),  # cleared
        (4.0, lambda t: alarm.update(t, True)),  # raised
        (5.0, lambda t: alarm.update(t, False)),  # returned
        (6.0, lambda t: alarm.update(t, True)),  # chattering (third activation)
        (100.0, lambda t: alarm.tick(t)),  # calmed down
        (101.0, lambda t: alarm.shelve(t, t + 3600, "张工", "传感器待更换")),  # shelved
        (102.0, lambda t: alarm.unshelve(t, "张工")),  # unshelved by an operator
        (103.0, lambda t: alarm.shelve(t, t + 10, "张工")),
        (200.0, lambda t: alarm.tick(t)),  # unshelved: expired
        (201.0, lambda t: alarm.suppress(t, True)),  # suppressed (maintenance)
        (202.0, lambda t: alarm.suppress(t, False)),  # unsuppressed
        (203.0, lambda t: alarm.out_of_service(t, True, "李工", "液位计更换")),
        (204.0, lambda t: alarm.out_of_service(t, False, "李工")),  # in service
    ]
    for offset, step in steps:
        now = T0 + offset
        yield alarm, step(now), now


def test_every_alarm_transition_and_the_state_it_leaves_fit_the_contract(asyncapi, schema) -> None:
    transitions = set()
    for alarm, happened, now in _alarm_walk():
        for event in happened:
            transitions.add(str(event.type))
            topic, payload, retain = _published(events.alarm_event(event, "水箱高水位"))
            assert topic.endswith("/events/alarm_event") and not retain
            _valid(schema, "AlarmEvent", json.loads(payload))
        topic, payload, retain = _published(events.alarm_state(alarm, "水箱高水位", now))
        if payload:
            _valid(schema, "AlarmState", json.loads(payload))
        else:
            assert str(alarm.state) == "normal"
    body = asyncapi["components"]["schemas"]["AlarmEvent"]["allOf"][1]
    # the walk covers every transition the contract lists
    assert transitions == set(body["properties"]["transition"]["enum"])


def _ticket_walk() -> Iterator[tuple[TicketBook, list[Any], float]]:
    """Every ticket event: the steps, recurrence, SLA warning, breach and escalation."""
    book = TicketBook(SlaPolicy(contacts={"supervisor": "孙经理"}))
    t = T0
    ticket, happened = book.open(TicketRequest("pump_b1_1", "low_outlet_pressure", category="water",
                                               grade=Grade.MAJOR, title="出水压力低"), t)
    yield book, happened, t
    yield book, book.open(TicketRequest("pump_b1_1", "low_outlet_pressure"), t + 5)[1], t + 5
    yield book, book.dispatch(ticket.id, t + 60, "调度-王", owner="李工", backup="赵工"), t + 60
    yield book, book.tick(t + 13 * 60), t + 13 * 60  # sla_warning on the 15 min arrival clock
    yield book, book.tick(t + 31 * 60), t + 31 * 60  # sla_breached, escalated (twice)
    yield book, book.arrive(ticket.id, t + 32 * 60, "李工", "到场"), t + 32 * 60
    yield book, book.report_progress(ticket.id, t + 40 * 60, "李工", "等配件"), t + 40 * 60
    book.add_note(ticket.id, t + 41 * 60, "李工", "配件已到")
    yield book, book.resolve(ticket.id, t + 50 * 60, "李工", "更换止回阀"), t + 50 * 60
    yield book, book.follow_up(ticket.id, t + 90 * 60, "客服-陈", "业主满意"), t + 90 * 60
    yield book, book.close(ticket.id, t + 91 * 60, "调度-王"), t + 91 * 60
    plan, happened = book.open(TicketRequest("lift_b1_1", "elevator_plan", kind=Kind.PREVENTIVE,
                                             category="lift"), t)
    yield book, happened, t
    yield book, book.cancel(plan.id, t + 60, "调度-王", "并入年检"), t + 60


def test_every_ticket_event_and_state_fit_the_contract(schema) -> None:
    kinds = set()
    states = 0
    for book, happened, now in _ticket_walk():
        for event in happened:
            kinds.add(event.type)
            topic, payload, retain = _published(events.ticket_event(event))
            assert topic.endswith("/events/ticket_event") and not retain
            _valid(schema, "TicketEvent", json.loads(payload))
        for ticket in book.changed():
            _, payload, _ = _published(events.ticket_state(ticket, now))
            if payload:
                states += 1
                _valid(schema, "TicketState", json.loads(payload))
            else:
                assert ticket.status.value in ("closed", "cancelled")
    assert kinds == {"opened", "recurred", "dispatched", "sla_warning", "sla_breached", "escalated",
                     "arrived", "progress", "resolved", "followed_up", "closed", "cancelled"}
    assert states >= 8


@pytest.mark.parametrize("item", [
    events.maintenance("pump_b1_2", True, T0 + 4 * 3600, T0, by="李工", reason="更换机械密封"),
    events.maintenance("pump_b1_2", False, None, T0, by="李工"),
    events.maintenance("pump_b1_2", False, None, T0, expired=True),
], ids=["on", "off", "expired"])
def test_maintenance_events_fit_the_contract(schema, item: Event) -> None:
    _valid(schema, "Maintenance", json.loads(_published(item)[1]))


@pytest.mark.parametrize("flood", [True, False])
def test_alarm_flood_events_fit_the_contract(schema, flood: bool) -> None:
    _valid(schema, "AlarmFlood", json.loads(_published(events.alarm_flood(T0, flood, 12, 600.0))[1]))


def test_the_generic_event_schema_leaves_the_listed_types_to_their_own(schema) -> None:
    body = json.loads(_published(events.alarm_flood(T0, True, 1, 60.0))[1])
    assert not schema("Event").is_valid(body)
    assert schema("Event").is_valid({**body, "type": "door_forced"})


# --- the documented commands are the parsed ones --------------------------------------------


def _documented_commands(asyncapi: dict[str, Any]) -> list[dict[str, Any]]:
    examples = [e["payload"] for e in asyncapi["components"]["messages"]["command"]["examples"]]
    text = (ROOT / "docs" / "upstream.md").read_text(encoding="utf-8")
    blocks = re.findall(r"<!-- message: command -->\s*```json\n(.*?)```", text, re.S)
    return examples + [json.loads(block) for block in blocks]


def test_every_documented_command_parses_and_fits_the_schema(asyncapi, schema) -> None:
    documented = _documented_commands(asyncapi)
    assert {c["type"] for c in documented} >= {
        "ack_alarm", "shelve_alarm", "unshelve_alarm", "alarm_service", "update_ticket",
        "maintenance",
    }
    for command in documented:
        parsed = parse_command(json.dumps(command).encode())
        assert not isinstance(parsed, Rejected), f"{command}: {parsed}"
        assert schema("Command").is_valid(command), command


@pytest.mark.parametrize("command", [
    {"type": "ack_alarm"},
    {"type": "ack_alarm", "alarm": "a.b", "colour": "red"},
    {"type": "shelve_alarm", "alarm": "a.b"},
    {"type": "shelve_alarm", "alarm": "a.b", "for": "2h", "until": "2026-11-23T18:00:00Z"},
    {"type": "shelve_alarm", "alarm": "a.b", "for": 700000},
    {"type": "shelve_alarm", "alarm": "a.b", "for": "2 hours"},
    {"type": "shelve_alarm", "alarm": "a.b", "until": "2026-11-23T18:00:00"},
    {"type": "unshelve_alarm", "alarm": "a.b", "for": "1h"},
    {"type": "alarm_service", "alarm": "a.b"},
    {"type": "alarm_service", "alarm": "a.b", "in_service": "no"},
    {"type": "update_ticket", "ticket": "T-1", "step": "dispatch"},
    {"type": "update_ticket", "ticket": "T-1", "step": "arrive", "owner": "李工"},
    {"type": "update_ticket", "ticket": "T-1", "step": "fly"},
    {"type": "update_ticket", "ticket": "T-1", "step": "note"},
    {"type": "update_ticket", "ticket": "T-1", "step": "note", "note": "  "},
    {"type": "maintenance", "device": "pump_1"},
    {"type": "maintenance", "device": "pump_1", "on": False, "for": "1h"},
    {"type": "maintenance", "device": "pump_1", "on": True, "for": -5},
], ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items())[:60])
def test_the_schema_and_the_parser_refuse_the_same_commands(schema, command: dict[str, Any]) -> None:
    payload = {"id": "req-1", **command}
    assert isinstance(parse_command(json.dumps(payload).encode()), Rejected)
    assert not schema("Command").is_valid(payload)


def test_ticket_steps_are_the_same_in_the_command_the_schema_and_the_engine(asyncapi) -> None:
    model_steps = UpdateTicketCommand.model_fields["step"].annotation.__args__  # Literal[...]
    schema_steps = asyncapi["components"]["schemas"]["UpdateTicketCommand"]["properties"]["step"]["enum"]
    assert tuple(model_steps) == TICKET_STEPS == tuple(schema_steps) == ENGINE_TICKET_STEPS
