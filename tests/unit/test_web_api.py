"""What the status page shows, read from a real running gateway (test_web_site.py)."""

from __future__ import annotations

import time

import pytest
from test_web_site import ALARM, running_site, until

from gateway.web.api import format_value, page_state


async def test_devices_are_grouped_by_building_then_system_and_disabled_ones_left_out() -> None:
    async with running_site() as site:
        state = page_state(site.gateway)
    shown = [(b["building"], s["system"], [d["id"] for d in s["devices"]])
             for b in state["buildings"] for s in b["systems"]]
    assert shown == [("1号楼", "water_supply", ["pump_1"]), ("", "water_supply", ["pump_2"])]
    (pump,) = state["buildings"][0]["systems"][0]["devices"]
    assert (pump["name"], pump["floor"], pump["room"]) == ("1号楼生活水泵", "B1", "水泵房")
    assert state["buildings"][1]["systems"][0]["devices"][0]["name"] == "pump_2"  # no name: its id


async def test_a_device_that_does_not_answer_is_offline_with_its_points_failed() -> None:
    async with running_site() as site:
        state = page_state(site.gateway)
    pump = state["buildings"][0]["systems"][0]["devices"][0]
    assert pump["online"] is False
    assert "cannot connect" in pump["last_error"]
    assert [(p["point"], p["value"], p["text"], p["quality"]) for p in pump["points"]] == [
        ("outlet_pressure", None, "", "comm_failure"), ("fault_code", None, "", "comm_failure")]


async def test_a_live_value_is_the_latest_reading_with_its_unit_name_and_meaning() -> None:
    async with running_site() as site:
        site.read(outlet_pressure=0.352, fault_code=11)
        state = page_state(site.gateway)
    points = {p["point"]: p for p in state["buildings"][0]["systems"][0]["devices"][0]["points"]}
    assert points["outlet_pressure"] | {"age": 0} == {
        "point": "outlet_pressure", "name": "出水压力", "value": 0.352, "text": "0.352",
        "unit": "MPa", "quality": "good", "age": 0}
    assert (points["fault_code"]["value"], points["fault_code"]["text"]) == (11, "11 电机过载")


async def test_an_active_alarm_is_listed_with_its_device_and_can_be_acknowledged() -> None:
    async with running_site() as site:
        site.read(outlet_pressure=0.12, fault_code=0)
        await until(lambda: site.gateway.rules.alarms(active_only=True), "the alarm")
        (alarm,) = page_state(site.gateway)["alarms"]
    assert alarm["alarm"] == ALARM and alarm["state"] == "active_unacknowledged"
    assert alarm["message"] == "出水压力低 0.12 MPa" and alarm["severity"] == "major"
    assert (alarm["device_name"], alarm["building"], alarm["can_ack"]) == ("1号楼生活水泵", "1号楼", True)


async def test_alarms_are_listed_the_most_severe_first() -> None:
    async with running_site() as site:
        alarms = [{"alarm": "a", "severity": "minor", "raised_at": "2026-01-01T00:00:03Z"},
                  {"alarm": "b", "severity": "critical", "raised_at": "2026-01-01T00:00:01Z"},
                  {"alarm": "c", "severity": "minor", "raised_at": "2026-01-01T00:00:05Z"}]
        site.gateway.rules.alarms = lambda active_only: alarms  # type: ignore[method-assign]
        shown = [a["alarm"] for a in page_state(site.gateway)["alarms"]]
    assert shown == ["b", "c", "a"]  # then the newest first


async def test_an_open_tickets_sla_clock_counts_down_on_the_rule_engines_clock() -> None:
    shift = [0.0]
    async with running_site(clock=lambda: time.time() + shift[0]) as site:
        site.read(outlet_pressure=0.12, fault_code=0)
        await until(lambda: site.gateway.rules.tickets(open_only=True), "the ticket")
        (ticket,) = page_state(site.gateway)["tickets"]
        assert ticket["priority"] == "urgent" and ticket["title"] == "生活水泵出水压力低"
        arrival = next(c for c in ticket["clocks"] if c["clock"] == "arrival")
        assert arrival["seconds_left"] == pytest.approx(15 * 60, abs=5)  # water: 15 minutes
        assert ticket["due_in"] == arrival["seconds_left"]

        shift[0] = 1000.0  # the engine's clock moves on past the deadline
        (ticket,) = page_state(site.gateway)["tickets"]
    arrival = next(c for c in ticket["clocks"] if c["clock"] == "arrival")
    assert arrival["seconds_left"] == pytest.approx(-100, abs=5)  # overdue


async def test_the_outbox_and_sinks_come_from_the_gateways_status() -> None:
    async with running_site() as site:
        site.read(outlet_pressure=0.4, fault_code=0)
        await site.gateway.outbox.flush()
        state = page_state(site.gateway)
        status = site.gateway.status()
    assert state["outbox"]["committed_seq"] >= 1
    assert state["outbox"]["max_size"] == status["outbox"]["max_size"]
    assert [s["sink"] for s in state["sinks"]] == ["history"]
    assert state["health"] == {"state": "DEGRADED", "reasons": ["2 devices offline: pump_1, pump_2"]}


@pytest.mark.parametrize(("value", "text"), [
    (0.35200000000000004, "0.352"), (12.0, "12"), (0.0, "0"), (-1.25, "-1.25"), (7, "7"),
    (True, "1"), ("关门", "关门"),
])
def test_readings_are_shown_as_people_read_them(value: object, text: str) -> None:
    assert format_value(value) == text
