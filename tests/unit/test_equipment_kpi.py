"""Availability, failures, MTBF and MTTR from a scripted day of one lift, checked against
numbers worked out by hand; the day is played through the equipment stage (events in the
shapes the health watch and the rule engine make them), across a gateway restart.

The day, 5 October 2026 on site (Asia/Shanghai):

    00:00:00  gateway starts                 (status unknown for 10 s)
    00:00:10  lift online, first good read   → commissioned
    02:00     out_of_service raised (major)  ┐ failure 1: 30 min
    02:30     cleared                        ┘
    08:00     offline                        ┐ 20 min offline
    08:20     online                         ┘
    12:00     maintenance mode on            ┐ 60 min maintenance
    12:30     safety_fault raised (critical) │ ┐ failure 2: 45 min,
    13:00     maintenance mode off           ┘ │ of which 15 min counted as fault
    13:15     safety_fault cleared             ┘
    20:00     short_cycling raised (minor)   ┐ minor: not a failure
    20:10     cleared                        ┘
    22:00     gateway stops                  ┐ 30 min 5 s unknown
    22:30     gateway starts again           │
    22:30:05  lift online                    ┘

Hand-computed: unknown 10 s + 1805 s = 1815 s; maintenance 3600 s; fault 1800 + 900 =
2700 s; offline 1200 s; up = 86400 − 1815 − 3600 − 2700 − 1200 = 77085 s; observed =
84585 s; availability = 77085 / 84585 = 0.911331796…; failures 2; MTBF = 77085 / 2 s =
10.70625 h; MTTR = (1800 + 2700) / 2 s = 37.5 min.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from gateway.batch import Batch, Event
from gateway.config.loader import load_site
from gateway.config.models import SiteConfig
from gateway.equipment.kpi import device_kpi
from gateway.equipment.site_kpis import timelines
from gateway.equipment.stage import EquipmentStage
from gateway.equipment.store import ReadOnlyLedger
from gateway.health import DeviceHealth
from rules.alarms import Alarm, AlarmDefinition
from rules.engine import events

ROOT = Path(__file__).resolve().parents[2]
SHANGHAI = ZoneInfo("Asia/Shanghai")
D0 = datetime(2026, 10, 5, tzinfo=SHANGHAI).timestamp()
H, M = 3600.0, 60.0
LIFT = "lift_b1_1"
FAULTS = ("critical", "major")


@pytest.fixture(scope="module")
def site() -> SiteConfig:
    return load_site(ROOT / "config" / "site.yaml")


class Script:
    """The equipment stage on a clock the test sets, fed events shaped as the gateway makes them."""

    def __init__(self, config: SiteConfig, data_dir: Path, start: float, **stage: Any) -> None:
        self.config, self.data_dir = config, data_dir
        self.now = start
        self.stage_args = stage
        self.out: list[Batch | Event] = []
        self.alarms: dict[str, Alarm] = {}
        self.health: dict[str, DeviceHealth] = {}
        self.stage: EquipmentStage | None = None

    def at(self, t: float) -> Script:
        self.now = t
        return self

    def start(self) -> Script:
        self.stage = EquipmentStage(self.config, self.data_dir, clock=lambda: self.now, **self.stage_args)
        self.out += self.stage.open()
        self.health = {}  # a new process: every device's status unknown again
        return self

    def stop(self) -> Script:
        assert self.stage is not None
        self.out += self.stage.tick(self.now)
        self.stage.close()
        self.stage = None
        return self

    def tick(self) -> list[Batch | Event]:
        assert self.stage is not None
        items = self.stage.tick(self.now)
        self.out += items
        return items

    def emit(self, event: Event | None) -> None:
        assert self.stage is not None and event is not None
        self.stage.observe(event)

    def online(self, device: str, up: bool) -> Script:
        health = self.health.setdefault(device, DeviceHealth(device, offline_after=1))
        self.emit(health.good(0.01, self.now) if up else health.failed("comm_failure", "timeout", self.now))
        return self

    def alarm(self, device: str, rule: str, severity: str, active: bool) -> Script:
        alarm = self.alarms.setdefault(f"{device}.{rule}", Alarm(AlarmDefinition(
            f"{device}.{rule}", device, severity, rule, chatter_limit=None)))
        alarm.update(self.now, active)
        self.emit(events.alarm_state(alarm, rule, self.now))
        return self

    def maintenance(self, device: str, on: bool) -> Script:
        self.emit(events.maintenance(device, on, self.now + 4 * H if on else None, self.now, by="李工"))
        return self

    def events(self, kind: str) -> list[Event]:
        return [e for e in self.out if isinstance(e, Event) and e.type == kind]


def the_scripted_day(config: SiteConfig, data_dir: Path) -> Script:
    s = Script(config, data_dir, D0).start()
    s.at(D0 + 10).online(LIFT, True)
    s.at(D0 + 2 * H).alarm(LIFT, "out_of_service", "major", True)
    s.at(D0 + 2.5 * H).alarm(LIFT, "out_of_service", "major", False)
    s.at(D0 + 8 * H).online(LIFT, False)
    s.at(D0 + 8 * H + 20 * M).online(LIFT, True)
    s.at(D0 + 12 * H).maintenance(LIFT, True)
    s.at(D0 + 12.5 * H).alarm(LIFT, "safety_fault", "critical", True)
    s.at(D0 + 13 * H).maintenance(LIFT, False)
    s.at(D0 + 13.25 * H).alarm(LIFT, "safety_fault", "critical", False)
    s.at(D0 + 20 * H).alarm(LIFT, "short_cycling", "minor", True)
    s.at(D0 + 20 * H + 10 * M).alarm(LIFT, "short_cycling", "minor", False)
    s.at(D0 + 22 * H).stop()
    s.at(D0 + 22.5 * H).start()
    s.at(D0 + 22.5 * H + 5).online(LIFT, True)
    return s


def lift_day(data_dir: Path, start: float = D0, end: float = D0 + 24 * H):
    with ReadOnlyLedger(data_dir) as reader:
        return device_kpi(timelines(reader, [LIFT], start, end, FAULTS)[LIFT])


def test_availability_mtbf_and_mttr_of_the_scripted_day_match_the_hand_computed_figures(
    site: SiteConfig, tmp_path: Path
) -> None:
    the_scripted_day(site, tmp_path).at(D0 + 24 * H).tick()

    k = lift_day(tmp_path)
    assert k.seconds == {"up": 77085.0, "maintenance": 3600.0, "fault": 2700.0, "offline": 1200.0,
                         "unknown": 1815.0}
    assert k.observed == 84585.0
    assert k.availability == pytest.approx(77085 / 84585)
    assert round(k.availability, 6) == 0.911332
    assert len(k.failures) == 2  # the minor alarm is not a failure
    assert k.mtbf == pytest.approx(10.70625 * H)
    assert k.mttr == pytest.approx(37.5 * M)
    assert [(f.start - D0, f.duration, f.alarms) for f in k.failures] == [
        (2 * H, 30 * M, ["out_of_service"]), (12.5 * H, 45 * M, ["safety_fault"])]


def test_the_periods_out_say_why(site: SiteConfig, tmp_path: Path) -> None:
    the_scripted_day(site, tmp_path).at(D0 + 24 * H).tick()

    outages = [((o.start - D0) / H, (o.end - D0) / H, o.reasons, o.alarms) for o in lift_day(tmp_path).outages]
    assert outages == [
        (2.0, 2.5, ["fault"], ["out_of_service"]),
        (8.0, 8 + 1 / 3, ["offline"], []),
        (12.0, 13.25, ["maintenance", "fault"], ["safety_fault"]),  # one period, both reasons
    ]


def test_two_alarms_of_one_trip_are_one_failure_from_the_first_raise_to_the_last_clear(
    site: SiteConfig, tmp_path: Path
) -> None:
    s = Script(site, tmp_path, D0).start()
    s.at(D0 + 1).online("pump_b1_1", True)
    s.at(D0 + H).alarm("pump_b1_1", "pump_trip", "major", True)
    s.at(D0 + H + 30).alarm("pump_b1_1", "low_outlet_pressure", "major", True)
    s.at(D0 + H + 20 * M).alarm("pump_b1_1", "pump_trip", "major", False)
    s.at(D0 + H + 25 * M).alarm("pump_b1_1", "low_outlet_pressure", "major", False)
    s.at(D0 + 2 * H).tick()

    with ReadOnlyLedger(tmp_path) as reader:
        k = device_kpi(timelines(reader, ["pump_b1_1"], D0, D0 + 2 * H, FAULTS)["pump_b1_1"])
    [failure] = k.failures
    assert (failure.start, failure.duration) == (D0 + H, 25 * M)
    assert failure.alarms == ["pump_trip", "low_outlet_pressure"]
    assert k.seconds["fault"] == 25 * M and k.mttr == 25 * M


def test_an_sla_alarm_is_a_late_ticket_not_a_failed_device(site: SiteConfig, tmp_path: Path) -> None:
    s = Script(site, tmp_path, D0).start()
    s.at(D0 + 1).online(LIFT, True)
    s.at(D0 + H).alarm(LIFT, "sla_out_of_service", "major", True)
    s.at(D0 + 2 * H).tick()

    k = lift_day(tmp_path, D0, D0 + 2 * H)
    assert k.failures == [] and k.seconds["fault"] == 0


def test_a_failure_still_open_counts_but_has_no_repair_time_yet(site: SiteConfig, tmp_path: Path) -> None:
    s = Script(site, tmp_path, D0).start()
    s.at(D0 + 1).online(LIFT, True)
    s.at(D0 + 10 * H).alarm(LIFT, "out_of_service", "major", True)
    s.at(D0 + 12 * H).tick()

    k = lift_day(tmp_path, D0, D0 + 12 * H)
    assert len(k.failures) == 1 and k.failures[0].end is None
    assert k.mttr is None and k.mtbf == pytest.approx((10 * H - 1) / 1)


def test_a_closed_day_is_sent_as_a_kpi_event_and_readings_after_a_restart_too(
    site: SiteConfig, tmp_path: Path
) -> None:
    s = the_scripted_day(site, tmp_path)
    s.at(D0 + 23 * H).stop()  # down over midnight: the day closes while nobody runs
    s.at(D0 + 26 * H).start()

    [kpi] = [e for e in s.events("kpi") if e.body["label"] == "2026-10-05"]
    assert kpi.body["period"] == "day" and kpi.ts == D0 + 24 * H
    lift = kpi.body["devices"][LIFT]
    # the gateway stopped at 23:00 this time: 3600 s more unknown, 3600 s less up
    assert lift["availability"] == round(73485 / 80985, 6)
    assert (lift["failures"], lift["mtbf_h"], lift["mttr_h"]) == (2, round(73485 / 2 / H, 4), 0.625)
    assert lift["down_h"] == {"maintenance": 1.0, "fault": 0.75, "offline": 0.3333}
    readings = {b.device: dict(zip(b.points, b.values, strict=True)) for b in s.out
                if isinstance(b, Batch) and b.ts == D0}
    assert readings[LIFT]["availability_day"] == pytest.approx(73485 / 80985)
    assert readings[LIFT]["failures_day"] == 2
    assert readings["lifts"]["intact_target_day"] == 0.95
    assert readings[site.site.id]["availability_day"] == pytest.approx(73485 / 80985)
    # sent once: a later tick and a later restart do not send the day again
    s.at(D0 + 27 * H).tick()
    s.at(D0 + 27 * H).stop().start()
    assert len([e for e in s.events("kpi") if e.body["label"] == "2026-10-05"]) == 1


def test_the_last_day_of_a_month_closes_the_month_too(site: SiteConfig, tmp_path: Path) -> None:
    end_of_october = datetime(2026, 10, 31, 23, 0, tzinfo=SHANGHAI).timestamp()
    s = Script(site, tmp_path, end_of_october).start()
    s.at(end_of_october + 1).online(LIFT, True)
    s.at(end_of_october + 2 * H).tick()

    labels = [(e.body["period"], e.body["label"]) for e in s.events("kpi")]
    assert labels == [("day", "2026-10-31"), ("month", "2026-10")]
    month = s.events("kpi")[1]
    assert month.body["devices"][LIFT]["up_h"] == round((H - 1) / H, 4)
    assert any(isinstance(b, Batch) and "availability_month" in b.points for b in s.out)


def test_the_ledger_and_its_figures_survive_a_restart_of_the_stage(site: SiteConfig, tmp_path: Path) -> None:
    s = the_scripted_day(site, tmp_path)
    # during the second session the lift faults again; the new stage knows nothing of
    # the first but what equipment.db kept
    s.at(D0 + 23 * H).alarm(LIFT, "out_of_service", "major", True)
    s.at(D0 + 23.5 * H).stop().start()
    s.at(D0 + 23.5 * H + 1).online(LIFT, True)
    s.at(D0 + 23.75 * H).alarm(LIFT, "out_of_service", "major", False)  # cleared after the restart
    s.at(D0 + 24 * H).tick()

    k = lift_day(tmp_path)
    assert len(k.failures) == 3
    assert k.failures[-1].start == D0 + 23 * H and k.failures[-1].duration == 0.75 * H
    assert s.stage is not None and s.stage.recorder.active == {}
