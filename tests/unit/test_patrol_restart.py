"""Patrols across restarts: visits, judged rounds, the missed-checkpoint alarm and the IO
inputs' states come back from patrol.db and the engine's stores; a round that ended while
the gateway was down is judged when it starts again; compliance is read from patrol.db
with no gateway running."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_patrol_stage import LI, ROOF_ALARM, ZHANG, Patrols, at, patrol_config

from gateway.batch import Batch, Event
from gateway.config.models import SiteConfig
from gateway.patrol import read_compliance


@pytest.fixture
def config(tmp_path: Path) -> SiteConfig:
    return patrol_config(tmp_path / "site")


def test_visits_before_a_restart_count_in_the_round_judged_after_it(config: SiteConfig,
                                                                    tmp_path: Path) -> None:
    site = Patrols(config, tmp_path / "data", at(23, 7, 50))
    site.until(at(23, 8, 30))
    site.walk(LI, "pump_room", "power_room")
    site.restart(at(23, 10, 0))
    site.until(at(23, 12, 0))

    [judged] = site.rounds()
    assert [v["checkpoint"] for v in judged["visited"]] == ["pump_room", "power_room"]
    assert judged["missed"] == ["roof_tank"]
    site.stop()


def test_the_alarm_and_compliance_survive_a_restart(config: SiteConfig, tmp_path: Path) -> None:
    site = Patrols(config, tmp_path / "data", at(23, 7, 50))
    site.until(at(23, 8, 30))
    site.walk(LI, "pump_room", "power_room")
    site.until(at(23, 12, 0))
    before = site.compliance(at(23, 0), at(24, 0))
    site.restart(at(23, 12, 30))

    assert site.engine.alarm(ROOF_ALARM)["state"] == "active_unacknowledged"
    assert site.compliance(at(23, 0), at(24, 0)) == before
    assert site.rounds() == [site.rounds()[0]]  # the judged round is not judged again

    site.swipe("roof_tank", ZHANG)  # a visit after the restart still returns it
    assert site.engine.alarm(ROOF_ALARM)["state"] == "returned_unacknowledged"
    site.stop()
    assert read_compliance(tmp_path / "data", at(23, 0), at(24, 0)) == [before]


def test_a_round_that_ended_while_the_gateway_was_down_is_judged_at_start(config: SiteConfig,
                                                                        tmp_path: Path) -> None:
    site = Patrols(config, tmp_path / "data", at(23, 7, 50))
    site.until(at(23, 8, 30))
    site.walk(LI, "pump_room", "power_room")
    site.stop()

    site.now = at(23, 17, 0)  # down from 08:40 to 17:00: rounds 1 and 2 ended meanwhile
    site.out = []
    site.start()

    assert [(r["round"], r["missed"]) for r in site.rounds()] == [
        (1, ["roof_tank"]), (2, ["pump_room", "power_room", "roof_tank"])]
    raised = [(b["alarm"], b["transition"]) for b in site.events("alarm_event")]
    assert raised == [(ROOF_ALARM, "raised"), ("patrol.plant_rooms.pump_room", "raised"),
                      ("patrol.plant_rooms.power_room", "raised")]
    assert site.engine.alarm("patrol.plant_rooms.pump_room")["raised_at"] == "2026-11-23T08:00:00.000Z"
    entry = site.compliance(at(23, 0), at(24, 0))
    assert (entry["rounds_expected"], entry["checkpoints_visited"], entry["checkpoints_expected"]) == (2, 2, 6)
    site.stop()


def test_an_acknowledged_alarm_stays_acknowledged_across_a_restart(config: SiteConfig,
                                                                 tmp_path: Path) -> None:
    site = Patrols(config, tmp_path / "data", at(23, 7, 50))
    site.until(at(23, 12, 1))
    site.out += site.engine.acknowledge(ROOF_ALARM, "监控中心 刘工")
    site.restart(at(23, 12, 10))

    assert site.engine.alarm(ROOF_ALARM)["state"] == "active_acknowledged"
    site.swipe("roof_tank", LI)
    assert site.engine.alarm(ROOF_ALARM)["closed"] is True
    site.stop()


def test_an_input_is_remembered_across_a_restart(config: SiteConfig, tmp_path: Path) -> None:
    site = Patrols(config, tmp_path / "data", at(23, 8, 50))
    site.feed(Batch("io_b3", site.now, ("di0",), [0]))
    site.restart(at(23, 9, 0))
    site.feed(Batch("io_b3", site.now, ("di0",), [1]))  # pressed while we were restarting
    assert site.stage.stats()["visits"] == 1

    site.restart(at(23, 9, 10))
    site.feed(Batch("io_b3", site.now, ("di0",), [1]))  # still held: no new visit
    assert site.stage.stats().get("visits", 0) == 0
    site.stop()


def test_a_plan_removed_from_the_configuration_takes_its_alarms_with_it(config: SiteConfig,
                                                                        tmp_path: Path) -> None:
    site = Patrols(config, tmp_path / "data", at(23, 7, 50))
    site.until(at(23, 12, 0))
    assert site.engine.alarm(ROOF_ALARM)["state"] == "active_unacknowledged"
    site.stop()

    patrols = config.patrols.model_copy(update={"plans": config.patrols.plans[1:]})
    site.config = config.model_copy(update={"patrols": patrols})
    site.out = []
    site.start()

    removed = [e for e in site.out if isinstance(e, Event) and e.type == "alarm_state"
               and e.body["alarm"] == ROOF_ALARM]
    assert [e.body for e in removed] == [{"alarm": ROOF_ALARM, "closed": True}]
    assert ROOF_ALARM not in {a["alarm"] for a in site.engine.alarms()}
    site.restart(at(23, 12, 30))  # and it does not come back
    assert ROOF_ALARM not in {a["alarm"] for a in site.engine.alarms()}
    site.stop()


def test_read_compliance_without_a_patrol_db_is_empty(tmp_path: Path) -> None:
    assert read_compliance(tmp_path, at(1, 0), at(30, 0)) == []
