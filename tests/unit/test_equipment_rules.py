"""The rules and maintenance plans shipped with the example site, driven through the engine.

Every test loads the real example configuration (config/site.yaml with its profiles,
devices and site rule files), feeds the rule engine batches shaped like the device's
points on a clock the test moves, and checks what the monitoring centre would receive:
the alarm (id, state, severity, message) and, where the rule opens one, the ticket
(priority, grade, category, and its `due` under the SLA policy of rules/tickets/sla.py).

Each test names the rules it pins with `@pins(profile, rule)`; the last tests fail when
a shipped rule has no test here, so a new rule comes with one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from gateway.batch import Batch, Event, Quality
from gateway.config.loader import load_site
from gateway.config.models import SiteConfig
from rules.compile import compile_rules
from rules.engine.engine import RuleEngine
from rules.tickets.schedule import add_months
from rules.tickets.sla import iso

ROOT = Path(__file__).resolve().parents[2]
SITE = ROOT / "config" / "site.yaml"
SITE_RULES_KEY = "site_rules"  # what @pins calls the site rule files
SHANGHAI = ZoneInfo("Asia/Shanghai")
# Monday 23 November 2026, 10:00 on site (02:00 UTC): an ordinary working morning.
START = datetime(2026, 11, 23, 10, 0, tzinfo=SHANGHAI).timestamp()
MINUTE, HOUR, DAY = 60.0, 3600.0, 86400.0

PINNED: set[tuple[str, str]] = set()


def pins(profile: str, *rules: str) -> Callable:
    """Mark a test as the one pinning these rules of a profile (or of the site rules)."""
    PINNED.update((profile, rule) for rule in rules)
    return lambda test: test


# -- the example site ------------------------------------------------------------------

@pytest.fixture(scope="module")
def config() -> SiteConfig:
    return load_site(SITE)


class Site:
    """The example site's rule engine, on a clock the test moves, and all it said."""

    def __init__(self, config: SiteConfig, data_dir: Path) -> None:
        self.now = START
        self.engine = RuleEngine(config, data_dir, clock=lambda: self.now)
        self.out: list[Batch | Event] = list(self.engine.open())

    def read(self, device: str, **values: Any) -> None:
        """One poll of `device` answered now with these points (a subset is fine)."""
        batch = Batch(device, self.now, tuple(values), list(values.values()))
        self.out += self.engine.process(batch)

    def fail(self, device: str, *points: str) -> None:
        """One poll of `device` that got no answer."""
        self.out += self.engine.process(Batch.failed(device, self.now, points, Quality.COMM_FAILURE))

    def wait(self, seconds: float, step: float = 1.0) -> None:
        """Move the clock on by `seconds`, ticking the engine every `step`."""
        end = self.now + seconds
        while self.now < end:
            self.now = min(end, self.now + step)
            self.out += self.engine.tick(self.now)

    def keep(self, device: str, seconds: float, every: float, **values: Any) -> None:
        """Poll `device` every `every` seconds for `seconds` with the same answer, ticking
        in between (the first poll is now, the last at now + seconds)."""
        end = self.now + seconds
        self.read(device, **values)
        while self.now < end:
            self.wait(min(every, end - self.now))
            self.read(device, **values)

    # -- what came out --------------------------------------------------------------

    def alarm_events(self, alarm: str, transition: str | None = None) -> list[dict[str, Any]]:
        return [e.body for e in self.out if isinstance(e, Event) and e.type == "alarm_event"
                and e.body["alarm"] == alarm
                and (transition is None or e.body["transition"] == transition)]

    def raised(self, alarm: str) -> dict[str, Any]:
        """The one `raised` event of `alarm`."""
        raised = self.alarm_events(alarm, "raised")
        assert len(raised) == 1, f"{alarm} raised {len(raised)} times: {self.alarm_events(alarm)}"
        return raised[0]

    def state(self, alarm: str) -> str:
        return self.engine.alarm(alarm)["state"]

    def opened(self, device: str, fault: str) -> list[dict[str, Any]]:
        """The `opened` ticket events for this device and fault."""
        return [e.body for e in self.out if isinstance(e, Event) and e.type == "ticket_event"
                and e.body["event"] == "opened" and e.body["device"] == device
                and e.body["state"]["fault"] == fault]

    def ticket(self, device: str, fault: str) -> dict[str, Any]:
        """The latest `ticket_state` of the ticket for this device and fault."""
        states = [e.body for e in self.out if isinstance(e, Event) and e.type == "ticket_state"
                  and e.body["device"] == device and e.body["fault"] == fault]
        assert states, f"no ticket for {device} {fault}"
        return states[-1]

    def no_ticket(self, device: str, fault: str) -> bool:
        return not any(isinstance(e, Event) and e.type == "ticket_state"
                       and e.body["device"] == device and e.body["fault"] == fault
                       for e in self.out)

    def derived(self, device: str, point: str) -> list[Any]:
        """Values of a derived point, in the order the engine produced them."""
        return [b.values[b.points.index(point)] for b in self.out
                if isinstance(b, Batch) and b.device == device and point in b.points]


@pytest.fixture
def site(config: SiteConfig, tmp_path: Path) -> Iterable[Site]:
    site = Site(config, tmp_path)
    yield site
    site.engine.close()


def assert_alarm(site: Site, alarm: str, severity: str, *words: str) -> dict[str, Any]:
    """`alarm` was raised once, with this severity, its message holding `words`."""
    raised = site.raised(alarm)
    assert raised["state"] == "active_unacknowledged"
    assert raised["severity"] == severity
    for word in words:
        assert word in raised["message"], f"{word!r} not in {raised['message']!r}"
    return raised


def assert_ticket(site: Site, device: str, fault: str, *, opened: float, due_in: float,
                  priority: str, category: str, grade: str = "general",
                  kind: str = "corrective") -> dict[str, Any]:
    """The ticket for `device` and `fault`: opened at `opened`, due `due_in` seconds later."""
    ticket = site.ticket(device, fault)
    assert ticket["state"] == "open"
    assert ticket["kind"] == kind
    assert ticket["category"] == category
    assert ticket["priority"] == priority
    assert ticket["grade"] == grade
    assert ticket["emergency_plan"] is (grade == "major")
    assert ticket["opened"] == iso(opened)
    assert ticket["due"] == iso(opened + due_in)
    return ticket


# -- normal readings of each device, for tests to change a few points of -------------

PUMP = dict(frequency=38.0, current=10.2, outlet_pressure=0.452, running=1, fault_code=0,
            remote=True, dry_run=False, run_hours=3200, starts=512, setpoint_pressure=0.45)
LIFT = dict(floor=1, direction=0, door_state=0, running=False, in_service=True, door_zone=True,
            alarm_button=False, passengers_trapped=False, fault=False, inspection=False,
            fire_service=False, overload=False, fault_code=0, speed=0.0)
LIFT_BOX = dict(floor=1, direction=0, door_state=0, running=False, door_zone=True, speed=0.0,
                load=0, mode=0, passenger_present=False, passengers_trapped=False,
                alarm_button=False, fault_code=0)
SUMP = dict(level=0.8, level_percent=26.7, high_level=False, low_level=False,
            pump1_running=False, pump2_running=False, pump1_fault=False, pump2_fault=False,
            pump1_relay=False, pump2_relay=False, auto_mode=True, start_level=1.2, stop_level=0.5)
FIRE = {**{f"zone{n}_{kind}": False for n in range(1, 9) for kind in ("fire", "fault", "supervisory")},
        "fire_alarm": False, "panel_fault": False, "supervisory": False, "mains_fault": False,
        "battery_fault": False, "silenced": False, "auto_linkage": True, "linkage_active": False,
        "fire_count": 0, "fault_count": 0}
ACCESS = dict(door_state=0, door_forced=False, door_held_open=False, door_open_time=0,
              lock_released=False, barrier_state=0, vehicle_present=False, tamper=False)
DOORS = dict(door1_open=False, door2_open=False, door3_open=False, door4_open=False,
             door5_open=False, door6_open=False, exit_button=False, tamper=False,
             lock_release=False, sounder=False)
AHU = dict(supply_air_temp=16.1, return_air_temp=25.0, supply_air_temp_setpoint=16.0,
           fan_command=True, fan_status=True, filter_dp=135.0, chw_valve=42.0, hw_valve=0.0,
           alarm_state=1)
HX = dict(primary_supply_temp=95.0, primary_return_temp=45.0, secondary_supply_temp=50.1,
          secondary_return_temp=40.0, secondary_supply_setpoint=50.0, pump_command=True,
          pump_status=True, secondary_supply_pressure=420.0, heat_power=700.0)
METER_3P = dict(voltage_l1=228.0, voltage_l2=227.5, voltage_l3=228.4, current_l1=80.0,
                current_l2=76.0, current_l3=83.0, total_power=52.0, power_factor=0.93,
                frequency=50.0)
METER_1P = dict(voltage=224.0, current=0.7, active_power=150.0, apparent_power=166.7,
                reactive_power=72.6, power_factor=0.9, frequency=50.0)


# -- booster_pump ----------------------------------------------------------------------

@pins("booster_pump", "low_outlet_pressure")
def test_low_outlet_pressure_after_its_on_delay_raises_a_major_alarm_and_an_urgent_water_ticket(site):
    site.keep("pump_b1_1", 10, 2, **PUMP)
    burst = {**PUMP, "frequency": 50.0, "current": 22.5, "outlet_pressure": 0.151}  # low_pressure
    began = site.now + 2
    site.wait(2)
    site.keep("pump_b1_1", 28, 2, **burst)  # 28 s: under the 30 s on-delay
    assert site.alarm_events("pump_b1_1.low_outlet_pressure") == []
    site.keep("pump_b1_1", 4, 2, **burst)
    assert_alarm(site, "pump_b1_1.low_outlet_pressure", "major",
                 "出水压力低 0.15 MPa", "设定 0.45 MPa", "频率 50.0 Hz")
    assert_ticket(site, "pump_b1_1", "low_outlet_pressure", opened=began + 30, due_in=15 * MINUTE,
                  priority="urgent", category="water")
    # the deadband: 0.22 MPa is neither low (< 0.20) nor back (> 0.25)
    site.keep("pump_b1_1", 20, 2, **{**burst, "outlet_pressure": 0.22})
    assert site.state("pump_b1_1.low_outlet_pressure") == "active_unacknowledged"
    site.keep("pump_b1_1", 4, 2, **PUMP)
    assert site.alarm_events("pump_b1_1.low_outlet_pressure", "returned")
    assert site.state("pump_b1_1.low_outlet_pressure") == "returned_unacknowledged"


@pins("booster_pump", "pump_trip")
def test_a_pump_trip_raises_at_once_with_the_drive_code_and_opens_an_urgent_water_ticket(site):
    site.keep("pump_b1_1", 10, 2, **PUMP)
    site.wait(2)
    tripped = {**PUMP, "running": 0, "fault_code": 11, "frequency": 0.0, "current": 0.0,
               "outlet_pressure": 0.30}
    site.read("pump_b1_1", **tripped)
    assert_alarm(site, "pump_b1_1.pump_trip", "major", "Err11", "0.30 MPa")
    assert_ticket(site, "pump_b1_1", "pump_trip", opened=site.now, due_in=15 * MINUTE,
                  priority="urgent", category="water")
    # the pressure decays to the static head: the trip is the alarm, not a second one
    site.keep("pump_b1_1", 120, 2, **{**tripped, "outlet_pressure": 0.18})
    assert site.alarm_events("pump_b1_1.low_outlet_pressure") == []
    assert site.no_ticket("pump_b1_1", "low_outlet_pressure")


@pins("booster_pump", "short_cycling", "starts_per_hour")
def test_seven_starts_within_an_hour_is_short_cycling_with_a_normal_ticket_for_the_pressure_tank(site):
    site.read("pump_b1_1", **{**PUMP, "running": 0})
    for _ in range(6):
        site.wait(4 * MINUTE, step=30)
        site.read("pump_b1_1", **{**PUMP, "running": 1})
        site.wait(4 * MINUTE, step=30)
        site.read("pump_b1_1", **{**PUMP, "running": 0})
    assert site.derived("pump_b1_1", "starts_per_hour")[-1] == 6
    assert site.alarm_events("pump_b1_1.short_cycling") == []
    site.wait(4 * MINUTE, step=30)
    site.read("pump_b1_1", **{**PUMP, "running": 1})  # the seventh start, 52 minutes in
    assert site.derived("pump_b1_1", "starts_per_hour")[-1] == 7
    assert_alarm(site, "pump_b1_1.short_cycling", "minor", "1小时内启动 7 次", "累计启动 512 次")
    # water, but planned work: the rule says normal, so 30 minutes and not 15
    assert_ticket(site, "pump_b1_1", "short_cycling", opened=site.now, due_in=30 * MINUTE,
                  priority="normal", category="water")
    # half an hour later the first three starts have left the window
    site.wait(30 * MINUTE, step=60)
    assert site.derived("pump_b1_1", "starts_per_hour")[-1] == 4
    assert site.state("pump_b1_1.short_cycling") == "returned_unacknowledged"


def test_the_pump_service_ticket_opens_when_the_run_hours_reach_the_next_2000(site):
    site.read("pump_b1_1", **{**PUMP, "run_hours": 1999})
    site.wait(60)
    assert site.no_ticket("pump_b1_1", "pump_service_2000h")
    site.read("pump_b1_1", **{**PUMP, "run_hours": 2000})
    site.wait(1)
    ticket = site.ticket("pump_b1_1", "pump_service_2000h")
    assert ticket["kind"] == "preventive"
    assert ticket["category"] == "water"
    assert ticket["due"] == iso(site.now + 7 * DAY)


# -- elevator (Modbus) -------------------------------------------------------------------

STUCK = {**LIFT, "floor": 7, "door_zone": False, "alarm_button": True, "passengers_trapped": True,
         "fault": True, "in_service": False, "fault_code": 1}  # the elevator_stuck scenario


@pins("elevator", "passengers_trapped")
def test_passengers_trapped_raises_a_critical_alarm_and_an_urgent_rescue_ticket(site):
    site.keep("lift_b1_1", 5, 1, **{**LIFT, "floor": 7, "running": True, "door_zone": False, "speed": 1.75})
    site.wait(1)
    site.read("lift_b1_1", **STUCK)
    assert_alarm(site, "lift_b1_1.passengers_trapped", "critical",
                 "电梯困人", "停在 7 层附近", "报警按钮 1", "故障代码 1")
    # trapped passengers: the rescuer's 30 minutes in a city (TSG T5002-2017), not 15
    ticket = assert_ticket(site, "lift_b1_1", "passengers_trapped", opened=site.now,
                           due_in=30 * MINUTE, priority="urgent", category="elevator", grade="major")
    assert ticket["sla"]["arrival"]["deadline"] == iso(site.now + 30 * MINUTE)
    assert ticket["title"] == "电梯困人救援"
    opened = site.opened("lift_b1_1", "passengers_trapped")
    assert len(opened) == 1 and opened[0]["emergency_plan"] is True
    # the rescue: wound to the landing, doors open
    site.keep("lift_b1_1", 30, 1, **STUCK)
    site.read("lift_b1_1", **{**LIFT, "floor": 7, "door_state": 1})
    assert site.state("lift_b1_1.passengers_trapped") == "returned_unacknowledged"


@pins("elevator", "passengers_trapped")
def test_a_car_standing_outside_a_door_zone_for_a_minute_is_taken_for_passengers_trapped(site):
    site.keep("lift_b1_1", 5, 1, **{**LIFT, "running": True, "door_zone": False, "speed": 1.75})
    stopped = {**LIFT, "floor": 12, "door_zone": False}  # no flag, no bell: a silent stop
    site.wait(1)
    began = site.now
    site.keep("lift_b1_1", 50, 1, **stopped)
    assert site.alarm_events("lift_b1_1.passengers_trapped") == []
    site.keep("lift_b1_1", 12, 1, **stopped)
    assert_alarm(site, "lift_b1_1.passengers_trapped", "critical", "停在 12 层附近", "平层 0")
    # a minute after the car stopped (its last moving sample a second before `began`)
    assert site.engine.alarm("lift_b1_1.passengers_trapped")["raised_at"] in (
        iso(began + 59), iso(began + 60))
    assert site.ticket("lift_b1_1", "passengers_trapped")["priority"] == "urgent"


@pins("elevator", "passengers_trapped")
def test_a_normal_stop_at_a_landing_or_an_inspection_stop_is_not_passengers_trapped(site):
    site.keep("lift_b1_1", 120, 1, **{**LIFT, "floor": 9, "door_zone": True})
    site.keep("lift_b1_1", 120, 1, **{**LIFT, "floor": 9, "door_zone": False, "inspection": True,
                                      "in_service": False})
    assert site.alarm_events("lift_b1_1.passengers_trapped") == []
    assert site.alarm_events("lift_b1_1.out_of_service") == []


@pins("elevator", "safety_fault")
def test_an_overspeed_event_raises_a_critical_safety_fault_with_an_urgent_ticket(site):
    site.read("lift_b1_1", **LIFT)
    site.wait(1)
    site.read("lift_b1_1", **{**LIFT, "floor": 14, "fault": True, "fault_code": 5, "door_zone": True})
    assert_alarm(site, "lift_b1_1.safety_fault", "critical", "故障代码 5", "停在 14 层")
    assert_ticket(site, "lift_b1_1", "safety_fault", opened=site.now, due_in=15 * MINUTE,
                  priority="urgent", category="elevator")


@pins("elevator", "out_of_service")
def test_a_lift_out_of_service_for_two_minutes_raises_a_major_alarm_and_a_repair_ticket(site):
    site.read("lift_b1_1", **LIFT)
    site.wait(1)
    down = {**LIFT, "floor": 3, "in_service": False, "fault": True, "fault_code": 8}
    began = site.now
    site.keep("lift_b1_1", 110, 1, **down)
    assert site.alarm_events("lift_b1_1.out_of_service") == []
    site.keep("lift_b1_1", 12, 1, **down)
    assert_alarm(site, "lift_b1_1.out_of_service", "major", "停在 3 层", "故障 1", "故障代码 8")
    assert_ticket(site, "lift_b1_1", "out_of_service", opened=began + 2 * MINUTE, due_in=30 * MINUTE,
                  priority="normal", category="elevator")


def test_the_elevator_maintenance_plan_follows_tsg_t5002(site):
    first: dict[tuple[str, str], float] = {}
    while site.now < add_months(START, 12) + DAY:
        site.wait(DAY, step=DAY)
        for body in (e.body for e in site.out if isinstance(e, Event) and e.type == "ticket_state"):
            first.setdefault((body["device"], body["fault"]), site.now)
    for lift in ("lift_b1_1", "lift_b2_1_box"):
        assert first[(lift, "elevator_half_monthly")] == START + 15 * DAY
        assert first[(lift, "elevator_quarterly")] == add_months(START, 3)
        assert first[(lift, "elevator_half_yearly")] == add_months(START, 6)
        assert first[(lift, "elevator_yearly")] == add_months(START, 12)
        assert first[(lift, "elevator_statutory_inspection")] == add_months(START, 12)
    half_monthly = [b for b in site.engine.tickets() if b["fault"] == "elevator_half_monthly"]
    assert {t["kind"] for t in half_monthly} == {"preventive"}
    inspection = site.ticket("lift_b1_1", "elevator_statutory_inspection")
    assert inspection["due"] == iso(add_months(START, 12) + 30 * DAY)  # applied for a month ahead


# -- elevator_iot_box (MQTT) -------------------------------------------------------------

BOX_TRAPPED = {**LIFT_BOX, "floor": 11, "door_zone": False, "mode": 3, "passenger_present": True,
               "passengers_trapped": True, "alarm_button": True, "fault_code": 1}  # lift_trapped


@pins("elevator_iot_box", "passengers_trapped")
def test_the_iot_box_reporting_trapped_passengers_raises_a_critical_alarm_and_a_rescue_ticket(site):
    site.keep("lift_b2_1_box", 10, 5, **LIFT_BOX)
    site.wait(1)
    site.read("lift_b2_1_box", **BOX_TRAPPED)
    assert_alarm(site, "lift_b2_1_box.passengers_trapped", "critical",
                 "电梯困人", "停在 11 层附近", "轿厢有人 1", "故障代码 1")
    assert_ticket(site, "lift_b2_1_box", "passengers_trapped", opened=site.now, due_in=30 * MINUTE,
                  priority="urgent", category="elevator", grade="major")
    site.keep("lift_b2_1_box", 20, 5, **BOX_TRAPPED)  # a status every 5 s while stuck
    site.read("lift_b2_1_box", **{**LIFT_BOX, "floor": 11, "door_state": 1, "passenger_present": True})
    assert site.state("lift_b2_1_box.passengers_trapped") == "returned_unacknowledged"


@pins("elevator_iot_box", "passengers_trapped")
def test_the_iot_box_car_stopped_outside_a_landing_for_a_minute_is_taken_for_passengers_trapped(site):
    site.keep("lift_b2_1_box", 10, 2, **{**LIFT_BOX, "running": True, "door_zone": False, "speed": 1.5})
    site.wait(2)
    site.keep("lift_b2_1_box", 50, 5, **{**LIFT_BOX, "floor": 4, "door_zone": False})
    assert site.alarm_events("lift_b2_1_box.passengers_trapped") == []
    site.keep("lift_b2_1_box", 15, 5, **{**LIFT_BOX, "floor": 4, "door_zone": False})
    assert_alarm(site, "lift_b2_1_box.passengers_trapped", "critical", "停在 4 层附近", "轿厢有人 0")


@pins("elevator_iot_box", "out_of_service")
def test_a_lift_locked_out_for_two_minutes_is_out_of_service(site):
    site.read("lift_b2_1_box", **LIFT_BOX)
    site.wait(1)
    began = site.now
    site.keep("lift_b2_1_box", 115, 5, **{**LIFT_BOX, "mode": 4})
    assert site.alarm_events("lift_b2_1_box.out_of_service") == []
    site.keep("lift_b2_1_box", 10, 5, **{**LIFT_BOX, "mode": 4})
    assert_alarm(site, "lift_b2_1_box.out_of_service", "major", "运行模式 4", "停在 1 层")
    assert_ticket(site, "lift_b2_1_box", "out_of_service", opened=began + 2 * MINUTE,
                  due_in=30 * MINUTE, priority="normal", category="elevator")
    # inspection (1) and fire service (2) are on purpose
    site.keep("lift_b2_1_box", 5, 5, **LIFT_BOX)
    site.keep("lift_b2_1_box", 300, 5, **{**LIFT_BOX, "mode": 1})
    assert len(site.alarm_events("lift_b2_1_box.out_of_service", "raised")) == 1


@pins("elevator_iot_box", "weak_signal")
def test_a_weak_4g_signal_over_ten_minutes_raises_a_minor_alarm_without_a_ticket(site):
    site.keep("lift_b2_1_box", 10 * MINUTE, 30, signal=24, uptime=86400)
    site.keep("lift_b2_1_box", 10 * MINUTE, 30, signal=7, uptime=87000)
    assert_alarm(site, "lift_b2_1_box.weak_signal", "minor", "CSQ 7")
    assert site.no_ticket("lift_b2_1_box", "weak_signal")
    site.keep("lift_b2_1_box", 10 * MINUTE, 30, signal=20, uptime=87600)
    assert site.state("lift_b2_1_box.weak_signal") == "returned_unacknowledged"


# -- sump_level ----------------------------------------------------------------------------

@pins("sump_level", "high_level")
def test_a_sump_at_its_high_float_raises_a_critical_flood_alarm_and_an_urgent_major_ticket(site):
    site.keep("sump_b1_1", 10, 2, **SUMP)
    storm = {**SUMP, "level": 2.23, "level_percent": 74.3, "high_level": True, "pump1_running": True,
             "pump2_running": True, "pump1_relay": True, "pump2_relay": True}  # sump_high
    site.wait(2)
    site.read("sump_b1_1", **storm)
    assert_alarm(site, "sump_b1_1.high_level", "critical",
                 "集水井高液位 2.23 m (74%)", "1号泵运行 1", "2号泵运行 1")
    assert_ticket(site, "sump_b1_1", "high_level", opened=site.now, due_in=15 * MINUTE,
                  priority="urgent", category="drainage", grade="major")
    # the float drops at 2.2 m; the alarm waits for 2.0 m
    site.keep("sump_b1_1", 20, 2, **{**storm, "level": 2.1, "high_level": False})
    assert site.state("sump_b1_1.high_level") == "active_unacknowledged"
    site.keep("sump_b1_1", 4, 2, **{**storm, "level": 1.9, "high_level": False})
    assert site.state("sump_b1_1.high_level") == "returned_unacknowledged"


@pins("sump_level", "pump_failed_to_start")
def test_a_sump_pump_whose_relay_is_on_but_does_not_run_for_30_s_failed_to_start(site):
    site.keep("sump_b1_1", 10, 2, **SUMP)
    site.wait(2)
    called = {**SUMP, "level": 1.25, "pump1_relay": True, "pump1_running": False}
    began = site.now
    site.keep("sump_b1_1", 28, 2, **called)
    assert site.alarm_events("sump_b1_1.pump_failed_to_start") == []
    site.keep("sump_b1_1", 4, 2, **called)
    assert_alarm(site, "sump_b1_1.pump_failed_to_start", "major", "液位 1.25 m (启泵液位 1.20 m)",
                 "1号泵 命令 1 运行 0", "2号泵 命令 0 运行 0")
    assert_ticket(site, "sump_b1_1", "pump_failed_to_start", opened=began + 30, due_in=15 * MINUTE,
                  priority="urgent", category="drainage")


@pins("sump_level", "pump_failed_to_start")
def test_a_sump_over_its_start_level_with_no_pump_running_in_automatic_mode_failed_to_start(site):
    site.keep("sump_b1_1", 10, 2, **SUMP)
    site.keep("sump_b1_1", 40, 2, **{**SUMP, "level": 1.35})  # 0.15 m past the start level
    assert_alarm(site, "sump_b1_1.pump_failed_to_start", "major", "液位 1.35 m")
    # in manual mode the relays do what the gateway wrote: no pump is expected
    site.keep("sump_b1_1", 4, 2, **{**SUMP, "level": 0.6, "pump1_running": True, "pump1_relay": True})
    site.keep("sump_b1_1", 60, 2, **{**SUMP, "level": 1.35, "auto_mode": False})
    assert len(site.alarm_events("sump_b1_1.pump_failed_to_start", "raised")) == 1


@pins("sump_level", "pump_fault")
def test_a_sump_pump_overload_trip_raises_a_major_alarm_and_a_drainage_ticket(site):
    site.read("sump_b1_1", **SUMP)
    site.wait(2)
    site.read("sump_b1_1", **{**SUMP, "pump2_fault": True})
    assert_alarm(site, "sump_b1_1.pump_fault", "major", "1号泵 0, 2号泵 1", "液位 0.80 m")
    assert_ticket(site, "sump_b1_1", "pump_fault", opened=site.now, due_in=30 * MINUTE,
                  priority="normal", category="drainage")


def test_the_sump_plan_cleans_the_pit_every_six_months_and_services_pumps_by_run_hours(site):
    site.read("sump_b1_1", **SUMP, pump1_run_hours=1998.5, pump2_run_hours=612.0)
    site.wait(HOUR, step=60)
    site.read("sump_b1_1", **SUMP, pump1_run_hours=2000.1, pump2_run_hours=612.0)
    site.wait(1)
    service = site.ticket("sump_b1_1", "pump1_service_2000h")
    assert (service["kind"], service["category"]) == ("preventive", "drainage")
    assert site.no_ticket("sump_b1_1", "pump2_service_2000h")
    site.wait(add_months(START, 6) - site.now, step=DAY)
    cleaning = site.ticket("sump_b1_1", "sump_pit_cleaning")
    assert cleaning["opened"] == iso(add_months(START, 6))
    assert cleaning["due"] == iso(add_months(START, 6) + 7 * DAY)


# -- fire_panel ----------------------------------------------------------------------------

@pins("fire_panel", "fire_alarm")
def test_a_fire_alarm_raises_at_once_a_critical_alarm_and_a_major_fire_ticket(site):
    site.keep("fire_panel_main", 5, 1, **FIRE)
    site.wait(1)
    site.read("fire_panel_main", **{**FIRE, "zone3_fire": True, "fire_alarm": True, "fire_count": 1,
                                    "linkage_active": True})  # the fire_alarm scenario
    assert_alarm(site, "fire_panel_main.fire_alarm", "critical",
                 "火警 1 处", "防区1-8: 00100000", "联动启动 1")
    assert_ticket(site, "fire_panel_main", "fire_alarm", opened=site.now, due_in=15 * MINUTE,
                  priority="urgent", category="fire", grade="major")
    site.read("fire_panel_main", **FIRE)  # the panel is reset
    assert site.state("fire_panel_main.fire_alarm") == "returned_unacknowledged"


@pins("fire_panel", "panel_fault")
def test_a_fire_panel_on_battery_for_30_s_raises_a_major_fault_with_a_fire_ticket(site):
    site.read("fire_panel_main", **FIRE)
    site.wait(1)
    mains_lost = {**FIRE, "panel_fault": True, "mains_fault": True, "fault_count": 1}
    began = site.now
    site.keep("fire_panel_main", 25, 1, **mains_lost)
    assert site.alarm_events("fire_panel_main.panel_fault") == []
    site.keep("fire_panel_main", 6, 1, **mains_lost)
    assert_alarm(site, "fire_panel_main.panel_fault", "major", "故障 1 处", "主电故障 1", "备电故障 0",
                 "防区1-8故障: 00000000")
    assert_ticket(site, "fire_panel_main", "panel_fault", opened=began + 30, due_in=30 * MINUTE,
                  priority="normal", category="fire")


@pins("fire_panel", "supervisory")
def test_a_supervisory_signal_for_30_s_raises_a_major_alarm_naming_the_zone(site):
    site.read("fire_panel_main", **FIRE)
    site.wait(1)
    site.keep("fire_panel_main", 31, 1, **{**FIRE, "supervisory": True, "zone7_supervisory": True})
    assert_alarm(site, "fire_panel_main.supervisory", "major", "防区1-8: 00000010", "喷淋阀门")
    assert site.ticket("fire_panel_main", "supervisory")["category"] == "fire"


@pins("fire_panel", "linkage_manual")
def test_a_fire_panel_left_in_manual_for_an_hour_raises_a_minor_alarm(site):
    site.read("fire_panel_main", **FIRE)
    site.wait(1)
    site.read("fire_panel_main", **{**FIRE, "auto_linkage": False})
    site.wait(59 * MINUTE, step=60)
    assert site.alarm_events("fire_panel_main.linkage_manual") == []
    site.wait(2 * MINUTE, step=60)
    assert_alarm(site, "fire_panel_main.linkage_manual", "minor", "手动状态")
    assert site.no_ticket("fire_panel_main", "linkage_manual")


# -- access_controller (MQTT) -------------------------------------------------------------

@pins("access_controller", "door_forced")
def test_a_door_forced_at_the_access_controller_raises_a_major_alarm_and_an_urgent_security_ticket(site):
    site.read("access_b1_gate", **ACCESS)
    site.wait(30)
    site.read("access_b1_gate", **{**ACCESS, "door_state": 1, "door_forced": True, "door_open_time": 1})
    assert_alarm(site, "access_b1_gate.door_forced", "major", "门禁强行开门", "已开 1 s")
    assert_ticket(site, "access_b1_gate", "door_forced", opened=site.now, due_in=15 * MINUTE,
                  priority="urgent", category="security")
    site.wait(8)  # pushed shut; the flag stays latched until the guard resets it
    site.read("access_b1_gate", **{**ACCESS, "door_forced": True})
    assert site.state("access_b1_gate.door_forced") == "active_unacknowledged"
    site.read("access_b1_gate", **ACCESS)
    assert site.state("access_b1_gate.door_forced") == "returned_unacknowledged"


@pins("access_controller", "door_held_open")
def test_a_door_open_for_two_minutes_at_the_access_controller_is_held_open(site):
    site.read("access_b1_gate", **ACCESS)
    site.wait(1)
    began = site.now
    for seconds in range(0, 150, 30):  # a status with each 30 s heartbeat
        site.read("access_b1_gate", **{**ACCESS, "door_state": 1, "lock_released": seconds < 5,
                                       "door_held_open": seconds >= 30, "door_open_time": seconds})
        if seconds == 90:
            assert site.alarm_events("access_b1_gate.door_held_open") == []
        site.wait(30)
    assert_alarm(site, "access_b1_gate.door_held_open", "minor", "门禁开门超时")
    assert site.engine.alarm("access_b1_gate.door_held_open")["raised_at"] == iso(began + 120)
    assert site.no_ticket("access_b1_gate", "door_held_open")


@pins("access_controller", "card_denied_burst")
def test_five_refused_cards_within_a_minute_raise_a_minor_alarm_without_the_card_number(site):
    swipe = dict(card_result=1, card_no="3A7F12C9", card_reader=1, deny_reason=0)
    site.read("access_b1_gate", **swipe)
    for _ in range(4):  # card_denied_burst: a blacklisted card every second or two
        site.wait(2)
        site.read("access_b1_gate", **{**swipe, "card_result": 0, "card_no": "BADC0FFE", "deny_reason": 4})
    assert site.alarm_events("access_b1_gate.card_denied_burst") == []
    site.wait(2)
    site.read("access_b1_gate", **{**swipe, "card_result": 0, "card_no": "BADC0FFE", "deny_reason": 4})
    raised = assert_alarm(site, "access_b1_gate.card_denied_burst", "minor", "原因代码 4", "读卡器 1")
    assert "BADC0FFE" not in raised["message"] and "0FFE" not in raised["message"]


@pins("access_controller", "tamper")
def test_an_opened_access_controller_enclosure_raises_a_major_tamper_alarm(site):
    site.read("access_b1_gate", **ACCESS)
    site.wait(30)
    site.read("access_b1_gate", **{**ACCESS, "tamper": True})
    assert_alarm(site, "access_b1_gate.tamper", "major", "防拆报警")


# -- door_contact_io -----------------------------------------------------------------------

@pins("door_contact_io", "door_forced")
def test_door_1_opened_without_a_lock_release_is_forced_and_opens_an_urgent_security_ticket(site):
    site.keep("door_b1_io", 10, 1, **DOORS)
    # a resident: card, release, the door opens a second later and closes after 6 s
    site.wait(1)
    site.keep("door_b1_io", 1, 1, **{**DOORS, "lock_release": True})
    site.wait(1)
    site.keep("door_b1_io", 3, 1, **{**DOORS, "lock_release": True, "door1_open": True})
    site.wait(1)
    site.keep("door_b1_io", 3, 1, **{**DOORS, "door1_open": True})
    site.wait(1)
    site.keep("door_b1_io", 20, 1, **DOORS)
    assert site.alarm_events("door_b1_io.door_forced") == []
    # door_forced: open with no release and no exit button
    site.wait(1)
    site.read("door_b1_io", **{**DOORS, "door1_open": True})
    assert_alarm(site, "door_b1_io.door_forced", "major", "强行打开")
    assert_ticket(site, "door_b1_io", "door_forced", opened=site.now, due_in=15 * MINUTE,
                  priority="urgent", category="security")
    site.keep("door_b1_io", 30, 1, **{**DOORS, "door1_open": True})
    assert site.state("door_b1_io.door_forced") == "active_unacknowledged"
    site.read("door_b1_io", **DOORS)
    assert site.state("door_b1_io.door_forced") == "returned_unacknowledged"


@pins("door_contact_io", "door1_held_open")
def test_the_unit_door_open_for_two_minutes_is_held_open(site):
    site.keep("door_b1_io", 5, 1, **{**DOORS, "lock_release": True})
    site.wait(1)
    site.keep("door_b1_io", 110, 1, **{**DOORS, "door1_open": True})
    assert site.alarm_events("door_b1_io.door1_held_open") == []
    site.keep("door_b1_io", 15, 1, **{**DOORS, "door1_open": True})
    assert_alarm(site, "door_b1_io.door1_held_open", "minor", "单元门", "超过2分钟")
    assert site.alarm_events("door_b1_io.door_forced") == []


@pins("door_contact_io", "fire_door_open")
def test_the_fire_escape_door_open_for_five_minutes_raises_a_minor_alarm(site):
    site.read("door_b1_io", **DOORS)
    site.wait(1)
    site.keep("door_b1_io", 4 * MINUTE, 1, **{**DOORS, "door2_open": True})
    assert site.alarm_events("door_b1_io.fire_door_open") == []
    site.keep("door_b1_io", 70, 1, **{**DOORS, "door2_open": True})
    assert_alarm(site, "door_b1_io.fire_door_open", "minor", "消防通道门", "常闭防火门")


@pins("door_contact_io", "roof_door_open")
def test_the_roof_door_open_for_five_minutes_raises_a_major_alarm(site):
    site.read("door_b1_io", **DOORS)
    site.wait(1)
    site.keep("door_b1_io", 4 * MINUTE, 1, **{**DOORS, "door4_open": True})
    assert site.alarm_events("door_b1_io.roof_door_open") == []
    site.keep("door_b1_io", 70, 1, **{**DOORS, "door4_open": True})
    assert_alarm(site, "door_b1_io.roof_door_open", "major", "屋顶门")


@pins("door_contact_io", "tamper")
def test_an_opened_io_module_enclosure_raises_a_major_tamper_alarm(site):
    site.read("door_b1_io", **DOORS)
    site.wait(1)
    site.read("door_b1_io", **{**DOORS, "tamper": True})
    assert_alarm(site, "door_b1_io.tamper", "major", "防拆")


# -- emergency_button (MQTT) -------------------------------------------------------------

@pins("emergency_button", "emergency_call")
def test_an_emergency_call_raises_a_critical_alarm_and_an_urgent_ticket_until_reset_on_site(site):
    site.read("sos_b3_1201", sos_pending=False, battery=86, battery_voltage=2.93, rssi=-81)
    site.wait(20)
    site.read("sos_b3_1201", sos=True, press_count=3)  # emergency_call
    assert_alarm(site, "sos_b3_1201.emergency_call", "critical", "紧急呼叫", "累计按键 3 次")
    assert_ticket(site, "sos_b3_1201", "emergency_call", opened=site.now, due_in=15 * MINUTE,
                  priority="urgent", category="emergency_call")
    for _ in range(6):  # repeated every 10 s, the heartbeat says an alarm is pending
        site.wait(10)
        site.read("sos_b3_1201", sos=True, press_count=3)
    site.read("sos_b3_1201", sos_pending=True, battery=86, battery_voltage=2.93, rssi=-81)
    site.wait(10)
    site.read("sos_b3_1201", sos=False, press_count=3)  # reset on site
    assert site.state("sos_b3_1201.emergency_call") == "active_unacknowledged"  # pending yet
    site.read("sos_b3_1201", sos_pending=False, battery=86, battery_voltage=2.93, rssi=-81)
    assert site.state("sos_b3_1201.emergency_call") == "returned_unacknowledged"
    assert len(site.alarm_events("sos_b3_1201.emergency_call", "raised")) == 1


@pins("emergency_button", "emergency_call")
def test_a_pending_call_in_the_heartbeat_raises_the_emergency_call_when_the_press_was_missed(site):
    site.read("sos_b3_1201", sos_pending=True, battery=80, battery_voltage=2.9, rssi=-90)
    assert_alarm(site, "sos_b3_1201.emergency_call", "critical", "紧急呼叫", "累计按键 ? 次")


@pins("emergency_button", "battery_low")
def test_a_button_battery_under_20_percent_raises_a_minor_alarm_and_a_battery_ticket(site):
    site.read("sos_b3_1201", sos_pending=False, battery=21, battery_voltage=2.5, rssi=-85)
    site.wait(60)
    site.read("sos_b3_1201", sos_pending=False, battery=19, battery_voltage=2.41, rssi=-85)
    assert_alarm(site, "sos_b3_1201.battery_low", "minor", "电量低 19% (2.41 V)")
    ticket = assert_ticket(site, "sos_b3_1201", "battery_low", opened=site.now, due_in=30 * MINUTE,
                           priority="normal", category="general")
    assert ticket["sla"]["repair"]["deadline"] == iso(site.now + 2 * DAY)


# -- ahu (BACnet) --------------------------------------------------------------------------

@pins("ahu", "fan_mismatch")
def test_an_ahu_fan_commanded_on_without_running_for_a_minute_raises_a_major_alarm(site):
    site.read("ahu_b1_1", **AHU)
    site.wait(30, step=5)
    site.read("ahu_b1_1", fan_status=False, alarm_state=2)  # fan_fail: one COV notification
    began = site.now
    site.wait(55, step=5)
    assert site.alarm_events("ahu_b1_1.fan_mismatch") == []
    site.wait(10, step=5)
    assert_alarm(site, "ahu_b1_1.fan_mismatch", "major", "命令 1 与运行状态 0")
    assert_ticket(site, "ahu_b1_1", "fan_mismatch", opened=began + 60, due_in=30 * MINUTE,
                  priority="normal", category="hvac")


@pins("ahu", "filter_clogged")
def test_a_clogged_ahu_filter_raises_a_warning_and_a_preventive_replace_filter_ticket(site):
    site.read("ahu_b1_1", **AHU)
    site.wait(10, step=5)
    site.read("ahu_b1_1", filter_dp=371.0, alarm_state=3)  # filter_clogged
    began = site.now
    site.wait(9 * MINUTE, step=10)
    assert site.alarm_events("ahu_b1_1.filter_clogged") == []
    site.wait(MINUTE + 10, step=10)
    assert_alarm(site, "ahu_b1_1.filter_clogged", "warning", "过滤网压差 371 Pa")
    ticket = assert_ticket(site, "ahu_b1_1", "filter_replacement", opened=began + 10 * MINUTE,
                           due_in=3 * DAY, priority="normal", category="hvac", kind="preventive")
    assert ticket["title"] == "更换过滤网 replace filter"
    assert "arrival" not in ticket["sla"]
    # overnight the fan stops and the pressure drop falls to nothing: the filter is no cleaner
    site.read("ahu_b1_1", fan_command=False, fan_status=False, filter_dp=0.0)
    site.wait(HOUR, step=60)
    assert site.state("ahu_b1_1.filter_clogged") == "active_unacknowledged"
    site.read("ahu_b1_1", fan_command=True, fan_status=True, filter_dp=126.0, alarm_state=1)  # new
    assert site.state("ahu_b1_1.filter_clogged") == "returned_unacknowledged"


@pins("ahu", "supply_temp_off_setpoint")
def test_ahu_supply_air_4_k_off_setpoint_for_15_minutes_raises_a_minor_alarm_and_a_ticket(site):
    site.read("ahu_b1_1", **AHU)
    site.wait(10, step=5)
    site.read("ahu_b1_1", supply_air_temp=20.0, alarm_state=4)  # supply_drift
    began = site.now
    site.wait(14 * MINUTE, step=10)
    assert site.alarm_events("ahu_b1_1.supply_temp_off_setpoint") == []
    site.wait(MINUTE + 10, step=10)
    assert_alarm(site, "ahu_b1_1.supply_temp_off_setpoint", "minor",
                 "送风温度 20.0 °C 偏离设定 16.0 °C", "冷水阀 42%")
    assert_ticket(site, "ahu_b1_1", "supply_temp_off_setpoint", opened=began + 15 * MINUTE,
                  due_in=30 * MINUTE, priority="normal", category="hvac")


# -- heat_exchange_station (BACnet) --------------------------------------------------------

@pins("heat_exchange_station", "pump_mismatch")
def test_a_circulation_pump_commanded_on_that_does_not_run_raises_a_major_alarm(site):
    site.read("hx_station_1", **HX)
    site.wait(10, step=5)
    site.read("hx_station_1", pump_status=False)
    site.wait(65, step=5)
    assert_alarm(site, "hx_station_1.pump_mismatch", "major", "命令 1 与运行状态 0", "二次供水 50.1 °C")
    assert site.ticket("hx_station_1", "pump_mismatch")["category"] == "hvac"


@pins("heat_exchange_station", "supply_temp_off_setpoint")
def test_a_station_supply_6_k_off_setpoint_for_15_minutes_raises_a_minor_alarm(site):
    site.read("hx_station_1", **HX)
    site.wait(10, step=5)
    site.read("hx_station_1", secondary_supply_temp=56.0)  # supply_drift
    site.wait(14 * MINUTE, step=10)
    assert site.alarm_events("hx_station_1.supply_temp_off_setpoint") == []
    site.wait(MINUTE + 10, step=10)
    assert_alarm(site, "hx_station_1.supply_temp_off_setpoint", "minor",
                 "二次供水 56.0 °C 偏离设定 50.0 °C", "一次供水 95.0 °C")
    site.read("hx_station_1", secondary_supply_temp=51.0)
    assert site.state("hx_station_1.supply_temp_off_setpoint") == "returned_unacknowledged"


@pins("heat_exchange_station", "secondary_pressure_low")
def test_secondary_pressure_falling_with_the_pump_running_is_a_leak_with_an_urgent_ticket(site):
    site.read("hx_station_1", **HX)
    site.wait(10, step=5)
    site.read("hx_station_1", secondary_supply_pressure=280.0)
    began = site.now
    site.wait(5 * MINUTE + 10, step=10)
    assert_alarm(site, "hx_station_1.secondary_pressure_low", "major", "二次供水压力低 280 kPa")
    assert_ticket(site, "hx_station_1", "secondary_pressure_low", opened=began + 5 * MINUTE,
                  due_in=15 * MINUTE, priority="urgent", category="hvac")


# -- energy_meter_3p ---------------------------------------------------------------------

@pins("energy_meter_3p", "meter_silent")
def test_a_three_phase_meter_silent_for_five_minutes_raises_a_minor_alarm_and_a_normal_ticket(site):
    site.read("meter_b1_main", **METER_3P, energy_import=123456.7)
    last = site.now
    while site.now < last + 6 * MINUTE:  # meter_silent: every poll goes unanswered
        site.wait(5)
        site.fail("meter_b1_main", *METER_3P)
        if site.now % 60 == last % 60:
            site.fail("meter_b1_main", "energy_import", "energy_export", "serial_number")
    assert site.alarm_events("meter_b1_main.meter_silent") == []
    site.wait(MINUTE + 5, step=5)
    assert_alarm(site, "meter_b1_main.meter_silent", "minor", "最后读数 123456.7 kWh")
    # stale from the first tick past five minutes (every 5 s here), then the 2-minute delay
    assert_ticket(site, "meter_b1_main", "meter_silent", opened=last + 5 * MINUTE + 5 + 2 * MINUTE,
                  due_in=30 * MINUTE, priority="normal", category="power")


def test_a_meter_read_within_two_minutes_of_start_up_is_not_silent(site):
    site.wait(50)
    for meter, values in (("meter_b1_main", METER_3P), ("meter_b1_lighting", METER_1P)):
        site.read(meter, **values, energy_import=1000.0)
    site.read("water_b1_main", total_volume=52345.67, flow_rate=1.2)
    site.wait(4 * MINUTE)
    for meter in ("meter_b1_main", "meter_b1_lighting", "water_b1_main"):
        assert site.alarm_events(f"{meter}.meter_silent") == []


@pins("energy_meter_3p", "phase_loss")
def test_a_lost_phase_raises_a_critical_alarm_and_an_urgent_power_ticket_with_the_emergency_plan(site):
    site.keep("meter_b1_main", 10, 5, **METER_3P)
    lost = {**METER_3P, "voltage_l2": 3.0, "current_l2": 0.0}
    began = site.now + 5
    site.wait(5)
    site.keep("meter_b1_main", 15, 5, **lost)
    assert_alarm(site, "meter_b1_main.phase_loss", "critical", "B相 3 V", "A相 228 V")
    assert_ticket(site, "meter_b1_main", "phase_loss", opened=began + 10, due_in=15 * MINUTE,
                  priority="urgent", category="power", grade="major")
    assert site.alarm_events("meter_b1_main.voltage_out_of_range") == []


@pins("energy_meter_3p", "voltage_out_of_range")
def test_a_phase_voltage_under_198_v_for_five_minutes_raises_a_minor_alarm_without_a_ticket(site):
    site.keep("meter_b1_main", 10, 5, **METER_3P)
    site.keep("meter_b1_main", 4 * MINUTE, 5, **{**METER_3P, "voltage_l1": 192.0})
    assert site.alarm_events("meter_b1_main.voltage_out_of_range") == []
    site.keep("meter_b1_main", 70, 5, **{**METER_3P, "voltage_l1": 192.0})
    assert_alarm(site, "meter_b1_main.voltage_out_of_range", "minor", "A相 192 V", "198-242 V")
    assert site.no_ticket("meter_b1_main", "voltage_out_of_range")
    site.keep("meter_b1_main", 60, 5, **{**METER_3P, "voltage_l1": 200.0})  # in the deadband
    assert site.state("meter_b1_main.voltage_out_of_range") == "active_unacknowledged"
    site.keep("meter_b1_main", 10, 5, **METER_3P)
    assert site.state("meter_b1_main.voltage_out_of_range") == "returned_unacknowledged"


@pins("energy_meter_3p", "current_imbalance")
def test_phase_currents_30_percent_apart_for_15_minutes_raise_an_imbalance_with_a_normal_ticket(site):
    site.keep("meter_b1_main", 10, 5, **METER_3P)
    lopsided = {**METER_3P, "current_l1": 100.0, "current_l2": 68.0, "current_l3": 95.0}
    began = site.now + 10
    site.wait(10, step=5)
    site.keep("meter_b1_main", 14 * MINUTE, 10, **lopsided)
    assert site.alarm_events("meter_b1_main.current_imbalance") == []
    site.keep("meter_b1_main", 70, 10, **lopsided)
    assert_alarm(site, "meter_b1_main.current_imbalance", "minor", "A相 100 A, B相 68 A, C相 95 A")
    assert_ticket(site, "meter_b1_main", "current_imbalance", opened=began + 15 * MINUTE,
                  due_in=30 * MINUTE, priority="normal", category="power")


@pins("energy_meter_3p", "low_power_factor")
def test_an_hourly_power_factor_under_090_raises_a_warning(site):
    site.keep("meter_b1_main", 30 * MINUTE, 60, **METER_3P)
    site.wait(60, step=60)
    began = site.now
    # 31 readings at 0.93 before: the tenth at 0.80 (nine minutes in) takes the hour's mean
    # under 0.90, then the 10-minute delay
    site.keep("meter_b1_main", 15 * MINUTE, 60, **{**METER_3P, "power_factor": 0.80})
    assert site.alarm_events("meter_b1_main.low_power_factor") == []
    site.keep("meter_b1_main", 10 * MINUTE, 60, **{**METER_3P, "power_factor": 0.80})
    assert_alarm(site, "meter_b1_main.low_power_factor", "warning", "当前 0.80")
    assert site.engine.alarm("meter_b1_main.low_power_factor")["raised_at"] == iso(began + 19 * MINUTE)
    assert site.no_ticket("meter_b1_main", "low_power_factor")


@pins("energy_meter_3p", "counter_went_back")
def test_a_three_phase_kwh_counter_going_backwards_raises_a_minor_alarm(site):
    site.read("meter_b1_main", energy_import=123456.7, energy_export=12.0)
    site.wait(60)
    site.read("meter_b1_main", energy_import=123460.2, energy_export=12.0)
    site.wait(60)
    site.read("meter_b1_main", energy_import=0.4, energy_export=0.0)  # a new meter
    assert_alarm(site, "meter_b1_main.counter_went_back", "minor", "现为 0.4 kWh", "核对台账")


# -- energy_meter_1p ---------------------------------------------------------------------

@pins("energy_meter_1p", "meter_silent")
def test_a_single_phase_meter_silent_for_five_minutes_raises_a_minor_alarm(site):
    site.read("meter_b1_lighting", **METER_1P, energy_import=8012.3)
    last = site.now
    site.wait(6 * MINUTE, step=10)  # meter_silent: a silent meter's polls time out
    assert site.alarm_events("meter_b1_lighting.meter_silent") == []
    site.wait(MINUTE + 10, step=10)
    assert_alarm(site, "meter_b1_lighting.meter_silent", "minor", "最后读数 8012.3 kWh")
    # stale from the first tick past five minutes (every 10 s here), then the 2-minute delay
    assert_ticket(site, "meter_b1_lighting", "meter_silent", opened=last + 5 * MINUTE + 10 + 2 * MINUTE,
                  due_in=30 * MINUTE, priority="normal", category="power")


@pins("energy_meter_1p", "voltage_out_of_range")
def test_a_single_phase_voltage_over_242_v_for_five_minutes_raises_a_minor_alarm(site):
    site.keep("meter_b1_lighting", 20, 10, **METER_1P)
    site.keep("meter_b1_lighting", 5 * MINUTE + 20, 10, **{**METER_1P, "voltage": 247.0})
    assert_alarm(site, "meter_b1_lighting.voltage_out_of_range", "minor", "电压越限 247 V")
    site.keep("meter_b1_lighting", 20, 10, **METER_1P)
    assert site.state("meter_b1_lighting.voltage_out_of_range") == "returned_unacknowledged"


@pins("energy_meter_1p", "counter_went_back")
def test_a_single_phase_kwh_counter_going_backwards_raises_a_minor_alarm(site):
    site.read("meter_b1_lighting", energy_import=8012.3)
    site.wait(60)
    site.read("meter_b1_lighting", energy_import=8000.0)
    assert_alarm(site, "meter_b1_lighting.counter_went_back", "minor", "现为 8000.0 kWh")


# -- water_meter -------------------------------------------------------------------------

def _building_flow(ts: float, leak: float = 0.0) -> float:
    """m³/h of the demo building (as the simulator plays it) at `ts`, plus a leak."""
    local = datetime.fromtimestamp(ts, SHANGHAI)
    hour = local.hour + local.minute / 60

    def bump(centre: float, width: float) -> float:
        return math.exp(-(((hour - centre) / width) ** 2))

    day = 6.0 * bump(7.5, 1.3) + 3.0 * bump(12.0, 1.5) + 7.5 * bump(20.0, 1.8) + 2.0 * bump(15.0, 4.0)
    return round(0.35 + day + leak, 2)


@pins("water_meter", "meter_silent")
def test_a_silent_water_meter_raises_a_minor_alarm_and_a_normal_water_ticket(site):
    site.read("water_b1_main", total_volume=52345.67, flow_rate=1.2)
    last = site.now
    site.wait(6 * MINUTE, step=10)
    assert site.alarm_events("water_b1_main.meter_silent") == []
    site.wait(MINUTE + 10, step=10)
    assert_alarm(site, "water_b1_main.meter_silent", "minor", "最后读数 52345.67 m³")
    assert_ticket(site, "water_b1_main", "meter_silent", opened=last + 5 * MINUTE + 10 + 2 * MINUTE,
                  due_in=30 * MINUTE, priority="normal", category="water")


@pins("water_meter", "wire_break")
def test_a_cut_pulse_wire_for_a_minute_raises_a_minor_alarm_and_a_water_ticket(site):
    site.keep("water_b1_main", 20, 10, total_volume=52345.67, wire_break=False)
    site.keep("water_b1_main", 70, 10, total_volume=52345.67, wire_break=True)
    assert_alarm(site, "water_b1_main.wire_break", "minor", "用水未计量", "52345.67 m³")
    assert site.ticket("water_b1_main", "wire_break")["priority"] == "normal"


@pins("water_meter", "magnetic_tamper")
def test_a_magnet_on_the_water_meter_raises_a_major_theft_alarm_at_once(site):
    site.read("water_b1_main", total_volume=52345.67, magnetic_tamper=False)
    site.wait(10)
    site.read("water_b1_main", total_volume=52345.67, magnetic_tamper=True)
    assert_alarm(site, "water_b1_main.magnetic_tamper", "major", "疑似盗水")
    assert_ticket(site, "water_b1_main", "magnetic_tamper", opened=site.now, due_in=30 * MINUTE,
                  priority="normal", category="water")


@pins("water_meter", "counter_went_back")
def test_a_water_counter_going_backwards_raises_a_minor_alarm(site):
    site.read("water_b1_main", total_volume=52345.67)
    site.wait(10)
    site.read("water_b1_main", total_volume=12.5)
    assert_alarm(site, "water_b1_main.counter_went_back", "minor", "现为 12.50 m³")


# -- site rules ----------------------------------------------------------------------------

@pins(SITE_RULES_KEY, "ahu_running_in_fire")
def test_an_ahu_still_running_30_s_into_a_fire_alarm_raises_a_critical_alarm_on_the_ahu(site):
    site.read("ahu_b1_1", **AHU)
    site.read("fire_panel_main", **FIRE)
    site.wait(5)
    site.read("fire_panel_main", **{**FIRE, "zone3_fire": True, "fire_alarm": True, "fire_count": 1,
                                    "linkage_active": True})
    site.wait(25)
    assert site.alarm_events("ahu_b1_1.ahu_running_in_fire") == []
    site.wait(6)
    assert_alarm(site, "ahu_b1_1.ahu_running_in_fire", "critical", "火警期间空调箱风机仍在运行",
                 "命令 1, 状态 1")
    site.read("ahu_b1_1", fan_command=False, fan_status=False)  # stopped by hand
    assert site.state("ahu_b1_1.ahu_running_in_fire") == "returned_unacknowledged"


@pins(SITE_RULES_KEY, "lift_not_recalled_in_fire")
def test_a_lift_not_in_fire_service_a_minute_after_the_linkage_started_raises_a_critical_alarm(site):
    site.read("lift_b1_1", **LIFT)
    site.read("fire_panel_main", **FIRE)
    site.wait(5)
    site.read("fire_panel_main", **{**FIRE, "zone3_fire": True, "fire_alarm": True, "fire_count": 1,
                                    "linkage_active": True})
    site.keep("lift_b1_1", 55, 1, **{**LIFT, "floor": 15, "running": True, "door_zone": False})
    assert site.alarm_events("lift_b1_1.lift_not_recalled_in_fire") == []
    site.keep("lift_b1_1", 6, 1, **{**LIFT, "floor": 14, "running": True, "door_zone": False})
    assert_alarm(site, "lift_b1_1.lift_not_recalled_in_fire", "critical", "消防返回 0", "停在 14 层",
                 "运行中 1")
    # the recall: the lift goes to fire service
    site.read("lift_b1_1", **{**LIFT, "floor": 13, "running": True, "fire_service": True})
    assert site.state("lift_b1_1.lift_not_recalled_in_fire") == "returned_unacknowledged"


def test_the_site_maintenance_plan_follows_the_cycles_of_the_service_standards(site):
    first: dict[tuple[str, str], dict[str, Any]] = {}
    while site.now < add_months(START, 12) + DAY:
        site.wait(DAY, step=DAY)
        for body in (e.body for e in site.out if isinstance(e, Event) and e.type == "ticket_state"):
            first.setdefault((body["device"], body["fault"]), body)
    expected = {
        ("water_tank_b1", "tank_cleaning"): (6, "water", 7),
        ("water_tank_b1", "water_quality_test"): (3, "water", 7),
        ("septic_tank_1", "septic_tank_check"): (3, "drainage", 7),
        ("septic_tank_1", "septic_tank_emptying"): (12, "drainage", 14),
        ("storm_sewage_pipes", "pipe_dredging"): (12, "drainage", 30),
        ("storm_sewage_wells", "well_cleaning"): (6, "drainage", 14),
        ("lightning_protection", "lightning_protection_test"): (12, "lightning", 30),
    }
    for key, (months, category, days) in expected.items():
        ticket = first[key]
        assert ticket["kind"] == "preventive", key
        assert ticket["category"] == category, key
        assert ticket["opened"] == iso(add_months(START, months)), key
        assert ticket["due"] == iso(add_months(START, months) + days * DAY), key


# -- the configuration as a whole ----------------------------------------------------------

def test_the_example_site_compiles_without_issues(config):
    compiled = compile_rules(config)
    assert compiled.issues == []
    assert any(rule.scope is None for rule in compiled.rules)  # the site rules are there
    assert {plan.device for plan in compiled.plans} >= {"water_tank_b1", "septic_tank_1",
                                                         "lightning_protection"}


def test_the_site_rule_file_is_read_with_the_site(config):
    assert [Path(f.source).name for f in config.rule_files if f.source] == ["site_rules.yaml"]


def _shipped(config: SiteConfig) -> set[tuple[str, str]]:
    profile_of = {device.id: device.profile for device in config.devices}
    # rules the energy stage generates (loss rates, night leaks) are tested in test_energy_rules.py
    return {(profile_of[rule.device] if rule.scope is not None else SITE_RULES_KEY, rule.rule.id)
            for rule in compile_rules(config).rules if rule.origin != "energy"}


def test_every_shipped_rule_has_a_test_here(config):
    missing = sorted(_shipped(config) - PINNED)
    assert missing == [], f"rules with no test in {Path(__file__).name}: {missing}"


def test_every_profile_with_rules_is_tested_here(config):
    with_rules = {profile.id for profile in config.profiles.values() if profile.rules}
    tested = {profile for profile, _ in PINNED}
    assert with_rules - tested == set()
    assert PINNED - _shipped(config) == set(), "a test pins a rule that is not shipped"
