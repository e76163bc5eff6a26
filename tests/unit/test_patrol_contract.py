"""What patrols put upstream is what docs/asyncapi.yaml says: `patrol_round` events (plain,
amended, out of order) on `events/patrol_round`, and the missed-checkpoint alarm's events
and retained state on `alarms/patrol.<plan>.<checkpoint>`."""

from __future__ import annotations

import json
from pathlib import Path

from test_patrol_stage import LI, ROOF_ALARM, Patrols, at, patrol_config
from test_upstream_rules import _published, _valid, asyncapi, schema  # noqa: F401 (fixtures)

from gateway.batch import Event


def _site(tmp_path: Path) -> Patrols:
    site = Patrols(patrol_config(tmp_path / "site"), tmp_path / "data", at(23, 7, 50))
    site.until(at(23, 8, 30))
    site.walk(LI, "pump_room", "power_room")
    site.until(at(23, 12, 5))  # roof_tank missed: raised
    site.swipe("roof_tank", LI, when=at(23, 11, 40))  # a late upload: amended, returned
    site.out += site.engine.acknowledge(ROOF_ALARM, "监控中心 刘工")  # closed
    site.until(at(23, 20, 0))  # the b2 plan: out of order and missed
    return site


def test_every_patrol_round_fits_the_contract(tmp_path: Path, schema) -> None:  # noqa: F811
    site = _site(tmp_path)
    rounds = [e for e in site.out if isinstance(e, Event) and e.type == "patrol_round"]
    site.stop()

    assert any(r.body.get("amended") for r in rounds)
    assert any(r.body["done"] for r in rounds) and any(r.body["missed"] for r in rounds)
    for item in rounds:
        topic, payload, retain = _published(item)
        assert topic == "pm/demo-estate/ipc-b1/events/patrol_round" and retain is False
        _valid(schema, "PatrolRound", json.loads(payload))
        assert not schema("Event").is_valid(json.loads(payload))  # it has its own schema


def test_the_missed_checkpoint_alarm_fits_the_alarm_schemas(tmp_path: Path, schema) -> None:  # noqa: F811
    site = _site(tmp_path)
    site.stop()
    mine = [e for e in site.out if isinstance(e, Event) and e.body.get("alarm") == ROOF_ALARM]

    assert {e.body.get("transition") for e in mine if e.type == "alarm_event"} == {
        "raised", "returned", "acknowledged"}
    for item in mine:
        topic, payload, _ = _published(item)
        if item.type == "alarm_event":
            _valid(schema, "AlarmEvent", json.loads(payload))
        elif payload:
            assert topic == f"pm/demo-estate/ipc-b1/alarms/{ROOF_ALARM}"
            _valid(schema, "AlarmState", json.loads(payload))
    # closed by the ack, raised again when round 2 missed the roof too
    assert any(e.type == "alarm_state" and e.body["closed"] for e in mine)
    assert mine[-1].body["state"] == "active_unacknowledged"
