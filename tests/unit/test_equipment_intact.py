"""Intact-rate groups: a group whose working share falls below its target raises
`<group>.intact_rate` in the rule engine (acknowledged, retained and restored like any
alarm), and returns it when the share is back; the group's rate by day is the pooled
availability of its members."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
from test_equipment_kpi import D0, FAULTS, H, M, Script

from gateway.batch import Event
from gateway.config.kpi_models import IntactGroup, KpiConfig, check_kpi
from gateway.config.loader import load_site
from gateway.config.models import SiteConfig
from gateway.equipment.kpi import pooled
from gateway.equipment.site_kpis import groups, site_kpis, subjects, timelines
from gateway.equipment.store import ReadOnlyLedger
from rules.engine.engine import RuleEngine

ROOT = Path(__file__).resolve().parents[2]
PUMPS = IntactGroup(id="b1_pumps", name="1号楼水泵", devices=["pump_b1_1", "sump_b1_1"])


@functools.cache
def example_site() -> SiteConfig:
    return load_site(ROOT / "config" / "site.yaml")


def with_groups(*groups: IntactGroup, target: float = 0.95) -> SiteConfig:
    config = example_site()
    return config.model_copy(update={"kpi": KpiConfig(groups=list(groups), intact_target=target)})


class Engine:
    """The site's rule engine on the script's clock; reopened like after a restart."""

    def __init__(self, config: SiteConfig, data_dir: Path, script: Script) -> None:
        self.config, self.data_dir, self.script = config, data_dir, script
        self.engine = self._open()

    def _open(self) -> RuleEngine:
        engine = RuleEngine(self.config, self.data_dir, clock=lambda: self.script.now)
        engine.open()
        return engine

    def restart(self) -> None:
        self.engine.close()
        self.engine = self._open()


def alarm_events(items: list, alarm: str) -> list[Event]:
    return [e for e in items if isinstance(e, Event) and e.type == "alarm_event" and e.body["alarm"] == alarm]


def pumps_site(tmp_path: Path, group: IntactGroup = PUMPS) -> tuple[Script, Engine]:
    config = with_groups(group)
    script = Script(config, tmp_path, D0)
    engine = Engine(config, tmp_path, script)
    script.stage_args = {"alarms": lambda: engine.engine}
    script.start()
    script.at(D0 + 1).online("pump_b1_1", True).online("sump_b1_1", True)
    return script, engine


def test_an_intact_rate_dropping_below_target_raises_its_alarm_and_returns_it_when_back(
    tmp_path: Path
) -> None:
    s, engine = pumps_site(tmp_path)
    assert alarm_events(s.at(D0 + 2).tick(), "b1_pumps.intact_rate") == []

    s.at(D0 + H).alarm("pump_b1_1", "pump_trip", "major", True)  # one of two pumps out: 50 %
    [raised] = alarm_events(s.at(D0 + H + 1).tick(), "b1_pumps.intact_rate")
    assert raised.body["transition"] == "raised" and raised.device == "b1_pumps"
    assert raised.body["severity"] == "minor"
    assert "1号楼水泵 完好率 50.0% 低于目标 95%: 1/2 台正常" in raised.body["message"]
    assert "1号楼生活水泵 1#" in raised.body["message"]  # says which pump is out
    shown = engine.engine.alarm("b1_pumps.intact_rate")
    assert shown["state"] == "active_unacknowledged" and shown["device"] == "b1_pumps"

    s.at(D0 + 2 * H).alarm("pump_b1_1", "pump_trip", "major", False)
    [returned] = alarm_events(s.at(D0 + 2 * H + 1).tick(), "b1_pumps.intact_rate")
    assert returned.body["transition"] == "returned"
    assert alarm_events(s.at(D0 + 2 * H + 2).tick(), "b1_pumps.intact_rate") == []


def test_an_offline_or_maintained_member_counts_as_not_working(tmp_path: Path) -> None:
    s, engine = pumps_site(tmp_path)
    s.at(D0 + H).online("sump_b1_1", False)
    assert [e.body["transition"] for e in alarm_events(s.at(D0 + H + 1).tick(), "b1_pumps.intact_rate")] == ["raised"]
    s.at(D0 + 2 * H).online("sump_b1_1", True).maintenance("pump_b1_1", True)
    items = s.at(D0 + 2 * H + 1).tick()
    assert alarm_events(items, "b1_pumps.intact_rate") == []  # still below: no second raise
    assert "停用: 1号楼生活水泵 1#" in engine.engine.alarm("b1_pumps.intact_rate")["message"]


def test_a_group_with_a_delay_raises_only_after_it(tmp_path: Path) -> None:
    delayed = PUMPS.model_copy(update={"delay": 10 * M})
    s, _ = pumps_site(tmp_path, delayed)
    s.at(D0 + H).alarm("pump_b1_1", "pump_trip", "major", True)
    assert alarm_events(s.at(D0 + H + 5 * M).tick(), "b1_pumps.intact_rate") == []
    assert len(alarm_events(s.at(D0 + H + 10 * M + 1).tick(), "b1_pumps.intact_rate")) == 1


def test_a_lower_target_tolerates_what_the_default_does_not(tmp_path: Path) -> None:
    lamps = IntactGroup(id="lamps", name="lamps", devices=["pump_b1_1", "sump_b1_1"], target=0.5)
    s, _ = pumps_site(tmp_path, lamps)
    s.at(D0 + H).alarm("pump_b1_1", "pump_trip", "major", True)  # 50 % is not below 50 %
    assert alarm_events(s.at(D0 + H + 1).tick(), "lamps.intact_rate") == []


def test_the_alarm_survives_a_restart_and_is_not_raised_twice(tmp_path: Path) -> None:
    s, engine = pumps_site(tmp_path)
    s.at(D0 + H).alarm("pump_b1_1", "pump_trip", "major", True)
    s.at(D0 + H + 1).tick()
    s.at(D0 + H + 2).stop()
    engine.restart()
    s.at(D0 + H + 60).start()
    s.at(D0 + H + 61).online("pump_b1_1", True).online("sump_b1_1", True)
    assert alarm_events(s.at(D0 + H + 62).tick(), "b1_pumps.intact_rate") == []  # still raised
    assert engine.engine.alarm("b1_pumps.intact_rate")["state"] == "active_unacknowledged"
    s.at(D0 + 2 * H).alarm("pump_b1_1", "pump_trip", "major", False)
    assert [e.body["transition"] for e in alarm_events(s.at(D0 + 2 * H + 1).tick(),
                                                         "b1_pumps.intact_rate")] == ["returned"]


def test_a_group_taken_out_of_the_configuration_takes_its_alarm_with_it(tmp_path: Path) -> None:
    s, engine = pumps_site(tmp_path)
    s.at(D0 + H).alarm("pump_b1_1", "pump_trip", "major", True)
    s.at(D0 + H + 1).tick()
    s.at(D0 + H + 2).stop()
    config = with_groups()
    engine.config = s.config = config
    engine.restart()
    before = len(s.out)
    s.at(D0 + H + 60).start()  # the first tick of the new stage tidies up
    s.at(D0 + H + 61).tick()
    assert [e.body for e in s.out[before:] if isinstance(e, Event) and e.type == "alarm_state"
            and e.body.get("alarm") == "b1_pumps.intact_rate"] == [{"alarm": "b1_pumps.intact_rate", "closed": True}]
    assert engine.engine.external_alarms("kpi") == {}


def test_the_daily_intact_rate_is_the_pooled_availability_of_the_members(tmp_path: Path) -> None:
    s, _ = pumps_site(tmp_path)
    s.at(D0 + 6 * H).alarm("pump_b1_1", "pump_trip", "major", True)
    s.at(D0 + 12 * H).alarm("pump_b1_1", "pump_trip", "major", False)
    s.at(D0 + 24 * H).tick()

    config = s.config
    with ReadOnlyLedger(tmp_path) as reader:
        subjects_ = subjects(config)
        lines = timelines(reader, subjects_, D0, D0 + 24 * H, FAULTS)
    kpis = site_kpis(subjects_, groups(config), lines, D0, D0 + 24 * H)
    [group] = kpis.groups
    # each pump observed 24 h less 1 s; the trip took 6 h of one: (2·86399 − 21600) / (2·86399)
    assert group.rate == pytest.approx((2 * 86399 - 6 * H) / (2 * 86399))
    assert group.below is True
    assert group.rate == pooled("x", [kpis.devices["pump_b1_1"], kpis.devices["sump_b1_1"]]).availability
    day = [e for e in s.events("kpi") if e.body["label"] == "2026-10-05"][0]
    assert day.body["groups"][0] == {"group": "b1_pumps", "name": "1号楼水泵", "target": 0.95,
                                     "rate": round(group.rate, 6), "below": True, "devices": 2}


def test_a_group_naming_a_device_that_does_not_exist_is_a_located_config_error() -> None:
    config = with_groups(IntactGroup(id="lamps", devices=["pump_b1_9"]),
                         IntactGroup(id="pump_b1_1", system="elevator"),
                         IntactGroup(id="none", system="lighting"))
    issues = [str(i) for i in check_kpi(config, None, config.devices, config.profiles)]
    assert any("kpi.groups[0].devices[0]: no device 'pump_b1_9'; did you mean pump_b1_1?" in i for i in issues)
    assert any("kpi.groups[1].id: 'pump_b1_1' is already a device id" in i for i in issues)
    assert any("kpi.groups[2].system: no profile has system 'lighting'" in i for i in issues)
    with pytest.raises(ValueError, match="needs devices:, system:, building:"):
        IntactGroup(id="empty")
    with pytest.raises(ValueError):
        IntactGroup(id="x", devices=["a"], target=1.5)


def test_the_stage_refuses_groups_the_site_does_not_have(tmp_path: Path) -> None:
    from gateway.equipment.stage import EquipmentStage

    with pytest.raises(ValueError, match="no device 'pump_b1_9'"):
        EquipmentStage(with_groups(IntactGroup(id="lamps", devices=["pump_b1_9"])), tmp_path)
