"""The equipment ledger: which events become entries, that entries are append-only and
chained, that they go upstream in the contract's shape (and again after a crash), and
warranty notices."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jsonschema
import pytest
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7
from test_equipment_kpi import D0, LIFT, H, Script
from test_equipment_monthly_report import example_site

from gateway.batch import Event
from gateway.energy.periods import Calendar
from gateway.equipment.ledger import Recorder
from gateway.equipment.store import Entry, EquipmentStore, ReadOnlyLedger
from gateway.equipment.warranty import warranty_notices
from gateway.sinks import contract
from rules.engine import events
from rules.tickets import Kind, TicketBook, TicketRequest

ROOT = Path(__file__).resolve().parents[2]
DOC = "urn:test:asyncapi"


def kinds(entries: list[Entry]) -> list[str]:
    return [e.kind for e in entries]


def test_status_is_written_when_it_changes_and_the_first_good_read_commissions() -> None:
    r = Recorder()
    online = Event("device_status", D0, LIFT, {"online": True})
    assert kinds(r.entries_for(online)) == ["commissioned", "online"]
    assert r.entries_for(Event("device_status", D0 + 60, LIFT, {"online": True})) == []  # every minute
    assert kinds(r.entries_for(Event("device_status", D0 + 90, LIFT, {"online": False,
                                                                       "last_error": "timeout"}))) == ["offline"]
    r.new_session()  # a restart: the first status is written again, but commissioning was once
    assert kinds(r.entries_for(online)) == ["online"]
    assert r.entries_for(Event("device_status", D0, LIFT, {"online": None})) == []


def test_ticket_steps_and_a_closed_planned_ticket_are_entries() -> None:
    r = Recorder()
    book = TicketBook()
    ticket, opened = book.open(TicketRequest(LIFT, "elevator_half_monthly", kind=Kind.PREVENTIVE,
                                             title="电梯半月维保", complete_within=86400), D0)
    steps = [*opened, *book.arrive(ticket.id, D0 + H, "维保 王工"),
             *book.resolve(ticket.id, D0 + 2 * H, "维保 王工", "更换门刀"),
             *book.close(ticket.id, D0 + 3 * H, "调度")]
    entries = [e for step in steps for e in r.entries_for(events.ticket_event(step))]
    assert kinds(entries) == ["ticket_opened", "ticket_arrived", "ticket_resolved", "ticket_closed"]
    assert entries[0].body["kind"] == "preventive" and entries[2].body["note"] == "更换门刀"
    state = events.ticket_state(book.get(ticket.id), D0 + 3 * H)
    [done] = r.entries_for(state)
    assert (done.kind, done.ref, done.body["task"], done.body["by"]) == (
        "maintenance_done", ticket.id, "elevator_half_monthly", "维保 王工")
    assert r.entries_for(state) == []  # once per ticket


def test_meter_swaps_and_maintenance_mode_are_entries_and_the_rest_is_not() -> None:
    r = Recorder(ignore_types=("equipment_event",))
    swap = Event("meter_event", D0, "meter_b1_main", {"point": "energy_import", "kind": "replaced",
                                                      "raw": 0.2, "old_final": 98765.4, "by": "电工 张"})
    [entry] = r.entries_for(swap)
    assert (entry.kind, entry.ref, entry.body["old_final"]) == ("meter_replaced", "energy_import", 98765.4)
    on = events.maintenance(LIFT, True, D0 + H, D0, by="李工", reason="年检")
    assert kinds(r.entries_for(on)) == ["maintenance_on"]
    assert kinds(r.entries_for(events.maintenance(LIFT, False, None, D0 + H, expired=True))) == ["maintenance_off"]
    assert r.entries_for(events.maintenance(LIFT, False, None, D0 + H)) == []  # already off
    assert r.entries_for(events.alarm_flood(D0, True, 12, 600.0)) == []
    assert r.entries_for(Event("equipment_event", D0, LIFT, {})) == []


def test_the_ledger_refuses_to_be_edited_and_an_edit_behind_its_back_shows(tmp_path: Path) -> None:
    store = EquipmentStore(tmp_path / "equipment.db")
    store.append([Entry(D0, LIFT, "online"), Entry(D0 + 1, LIFT, "offline", None, {"last_error": "x"})], D0)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        store._db.execute("UPDATE entries SET kind = 'online' WHERE seq = 2")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        store._db.execute("DELETE FROM entries")
    assert store.verify() == (2, None)
    store.close()
    db = sqlite3.connect(tmp_path / "equipment.db")  # someone with the file and sqlite3
    db.execute("DROP TRIGGER entries_no_update")
    db.execute("UPDATE entries SET body = '{\"last_error\": \"nothing\"}' WHERE seq = 2")
    db.commit()
    db.close()
    with ReadOnlyLedger(tmp_path) as reader:
        assert reader.verify() == (2, 2)


def test_gateway_equipment_verify_and_the_device_card(tmp_path: Path, capsys) -> None:
    from gateway.cli import main

    s = Script(example_site(), tmp_path, D0).start()
    s.at(D0 + 10).online(LIFT, True)
    s.at(D0 + H).alarm(LIFT, "out_of_service", "major", True)
    s.at(D0 + 2 * H).stop()
    config = str(ROOT / "config" / "site.yaml")
    assert main(["equipment", "--verify", "-c", config, "--data-dir", str(tmp_path)]) == 0
    assert "equipment ledger intact" in capsys.readouterr().out
    assert main(["equipment", LIFT, "-c", config, "--data-dir", str(tmp_path), "--lang", "zh"]) == 0
    out = capsys.readouterr().out
    assert "日立电梯" in out and "HT-2021-E0318" in out and "投运 (首次读数正常)" in out
    assert "告警" in out and "lift_b1_1.out_of_service" in out
    assert main(["equipment", "lift_b1_9", "-c", config, "--data-dir", str(tmp_path)]) == 1
    assert "did you mean lift_b1_1?" in capsys.readouterr().err
    assert main(["equipment", "-c", config, "--data-dir", str(tmp_path / "nowhere")]) == 2


def test_entries_go_upstream_in_order_and_again_after_a_crash(tmp_path: Path) -> None:
    s = Script(example_site(), tmp_path, D0).start()
    s.at(D0 + 10).online(LIFT, True)
    sent = [e.body["entry"] for e in s.at(D0 + 11).tick()
            if isinstance(e, Event) and e.type == "equipment_event"]
    s.at(D0 + 20).online(LIFT, False)  # written, not yet handed on: then the process dies
    assert s.stage is not None
    s.stage._store.close()  # type: ignore[union-attr]
    s.stage = None
    s.at(D0 + 60).start()
    again = [e for e in s.events("equipment_event") if e.body["entry"] > sent[-1]]
    assert [e.body["kind"] for e in again] == ["offline"]
    assert sent == sorted(sent) and len(sent) >= 2


async def test_entries_observed_on_the_event_loop_share_one_transaction(tmp_path: Path) -> None:
    from gateway.equipment.stage import FLUSH_AFTER

    config = example_site()
    s = Script(config, tmp_path, D0).start()
    assert s.stage is not None and s.stage._store is not None
    store = s.stage._store
    appends: list[int] = []  # the entries of each transaction
    append = store.append

    def counted(entries: list[Entry], now: float) -> None:
        appends.append(len(entries))
        append(entries, now)

    store.append = counted  # type: ignore[method-assign]
    devices = [d.id for d in config.devices if d.enabled][:5]
    for device in devices:  # devices coming online at a start: each a commissioned and an online
        s.at(D0 + 10).online(device, True)
    assert appends == []  # queued, not yet written: the loop is not blocked per event
    await asyncio.sleep(FLUSH_AFTER * 2)
    assert appends == [2 * len(devices)]
    s.at(D0 + 20).online(devices[0], False)  # queued again; the tick writes it before it hands on
    sent = [e.body["kind"] for e in s.at(D0 + 21).tick()
            if isinstance(e, Event) and e.type == "equipment_event"]
    assert appends == [2 * len(devices), 1] and sent.count("online") == len(devices) and sent[-1] == "offline"


def test_a_warranty_ending_within_30_days_is_noticed_once() -> None:
    config = example_site()
    calendar = Calendar(config.site.timezone)
    # pump_b1_1's warranty ends 2024-06-17: noticed from 18 May (30 days before its end)
    end = datetime(2024, 6, 18, tzinfo=ZoneInfo(config.site.timezone)).timestamp()
    before = warranty_notices(config, calendar, end - 31 * 86400, ())
    assert "pump_b1_1" not in {e.device for e in before}
    [soon] = [e for e in warranty_notices(config, calendar, end - 10 * 86400, ()) if e.device == "pump_b1_1"]
    assert (soon.kind, soon.ref, soon.body["days_left"]) == ("warranty_ending", "2024-06-17", 10)
    known = {("pump_b1_1", "warranty_ending", "2024-06-17")}
    assert "pump_b1_1" not in {e.device for e in warranty_notices(config, calendar, end - 9 * 86400, known)}
    [ended] = [e for e in warranty_notices(config, calendar, end + 1, known) if e.device == "pump_b1_1"]
    assert ended.kind == "warranty_ended"
    assert date.fromisoformat(ended.ref) == config.devices[0].asset.warranty_end


# --- the contract ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def schema():
    doc = yaml.safe_load((ROOT / "docs" / "asyncapi.yaml").read_text(encoding="utf-8"))
    registry = Registry().with_resource(DOC, Resource.from_contents(doc, default_specification=DRAFT7))

    def errors(name: str, body: dict[str, Any]) -> list[str]:
        validator = jsonschema.Draft7Validator({"$ref": f"{DOC}#/components/schemas/{name}"},
                                               registry=registry)
        return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(body)]
    return errors


def published(item: Event) -> tuple[str, dict[str, Any]]:
    topics = contract.Topics.of("pm", "demo-estate", "ipc-b1")
    topic, payload, retain = contract.event_message(
        topics, contract.Identity("demo-estate", "ipc-b1"), "3fa2c1d0:7", 7, item)
    assert retain is False
    return topic, json.loads(payload)


def test_what_the_stage_sends_fits_the_contract(tmp_path: Path, schema) -> None:
    from test_equipment_kpi import the_scripted_day
    from test_equipment_service import the_month_so_far

    the_month_so_far(tmp_path)
    s = the_scripted_day(example_site(), tmp_path)
    s.at(D0 + 24 * H + 60).tick()
    kinds_seen = set()
    for event in s.events("equipment_event"):
        topic, body = published(event)
        assert topic == "pm/demo-estate/ipc-b1/events/equipment_event"
        assert not schema("EquipmentEvent", body), (body, schema("EquipmentEvent", body))
        assert schema("Event", body)  # the generic schema leaves it to its own
        kinds_seen.add(body["kind"])
    assert {"commissioned", "online", "offline", "alarm_raised", "alarm_cleared",
            "maintenance_on", "maintenance_off", "warranty_ended"} <= kinds_seen
    [day] = s.events("kpi")
    topic, body = published(day)
    assert topic == "pm/demo-estate/ipc-b1/events/kpi"
    assert not schema("Kpi", body), schema("Kpi", body)
    assert body["service"]["arrival"]["urgent"]["rate"] == 0.5
    assert body["overall"]["devices"] == len(body["devices"])
