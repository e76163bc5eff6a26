"""The rule engine's external alarms, which patrols (and other stages) raise: the same life
cycle as a rule's alarm, kept across restarts with the owner's context, refused where
the id is a rule's or another owner's, not suppressed by a device's maintenance mode."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.batch import Event
from gateway.config.loader import load_site
from gateway.config.models import SiteConfig
from rules.engine.engine import RuleEngine

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_795_428_000.0
ALARM = "patrol.plant_rooms.roof_tank"


@pytest.fixture(scope="module")
def config() -> SiteConfig:
    return load_site(ROOT / "config" / "site.yaml")


@pytest.fixture
def engine(config: SiteConfig, tmp_path: Path):
    engine = RuleEngine(config, tmp_path, clock=lambda: T0)
    engine.open()
    yield engine
    engine.close()


def _raise(engine: RuleEngine, now: float = T0, **changes) -> list:
    fields = {"alarm_id": ALARM, "device": "patrol_roof_tank", "severity": "minor",
              "message": "巡更漏检: 屋顶水箱 {未打卡}", "owner": "patrol", "name": "巡更漏检 屋顶水箱",
              "context": {"round_start": now - 4 * 3600}, **changes}
    return engine.raise_external(fields.pop("alarm_id"), fields.pop("device"), fields.pop("severity"),
                                 fields.pop("message"), now=now, **fields)


def test_an_external_alarm_is_raised_once_and_shown_like_a_rules(engine: RuleEngine) -> None:
    first = _raise(engine)
    again = _raise(engine, now=T0 + 60)

    assert [e.body["transition"] for e in first if e.type == "alarm_event"] == ["raised"]
    assert [e.type for e in again] == []  # the same message: nothing new to say
    alarm = engine.alarm(ALARM)
    assert (alarm["state"], alarm["severity"], alarm["device"]) == (
        "active_unacknowledged", "minor", "patrol_roof_tank")
    assert alarm["message"] == "巡更漏检: 屋顶水箱 {未打卡}"  # braces are text, not a template


def test_a_new_message_on_an_active_alarm_republishes_its_state(engine: RuleEngine) -> None:
    _raise(engine)
    out = _raise(engine, now=T0 + 60, message="巡更漏检: 第2轮")

    assert [e.type for e in out] == ["alarm_state"] and out[0].body["message"] == "巡更漏检: 第2轮"


def test_clear_returns_it_and_ack_closes_it(engine: RuleEngine) -> None:
    _raise(engine)
    returned = engine.clear_external(ALARM, now=T0 + 60)
    closed = engine.acknowledge(ALARM, "监控中心 刘工", now=T0 + 120)

    assert [e.body["transition"] for e in returned if e.type == "alarm_event"] == ["returned"]
    assert closed[-1].body["closed"] is True
    assert engine.clear_external("patrol.nothing.here") == []


def test_the_owner_lists_its_alarms_with_their_context(engine: RuleEngine) -> None:
    _raise(engine)

    listed = engine.external_alarms("patrol")
    assert listed[ALARM]["active"] is True and listed[ALARM]["context"] == {"round_start": T0 - 14400}
    assert engine.external_alarms("kpi") == {}


def test_a_rules_alarm_id_or_another_owners_is_refused(engine: RuleEngine) -> None:
    with pytest.raises(ValueError, match="already a rule's"):
        _raise(engine, alarm_id="access_b1_gate.door_forced")
    _raise(engine)
    with pytest.raises(ValueError, match="belongs to patrol, not kpi"):
        _raise(engine, owner="kpi")


def test_maintenance_mode_of_the_device_does_not_suppress_it(engine: RuleEngine) -> None:
    _raise(engine)
    engine.set_maintenance("patrol_roof_tank", True, "李工", now=T0 + 10)

    assert engine.alarm(ALARM)["state"] == "active_unacknowledged"


def test_an_external_alarm_and_its_context_survive_a_restart(config: SiteConfig, tmp_path: Path) -> None:
    engine = RuleEngine(config, tmp_path, clock=lambda: T0)
    engine.open()
    _raise(engine)
    engine.shelve(ALARM, "监控中心 刘工", until=T0 + 3600, now=T0 + 5)
    engine.close()

    again = RuleEngine(config, tmp_path, clock=lambda: T0 + 10)
    out = again.open()
    # not taken for an alarm whose rule is gone (which would clear its retained state)
    assert not [e for e in out if isinstance(e, Event) and e.body.get("alarm") == ALARM]
    assert again.alarm(ALARM)["state"] == "shelved"
    assert again.external_alarms("patrol")[ALARM]["context"] == {"round_start": T0 - 14400}
    forgotten = again.forget_external(ALARM, now=T0 + 20)
    assert [e.body for e in forgotten] == [{"alarm": ALARM, "closed": True}]
    again.close()

    third = RuleEngine(config, tmp_path, clock=lambda: T0 + 30)
    third.open()
    assert ALARM not in {a["alarm"] for a in third.alarms()}
    third.close()
