"""Equipment status and alarm counts as readings (gateway/equipment/status_points.py), so
the dashboard in config/grafana can chart them from InfluxDB: `online` per device status,
`equipment_state` when the state the KPIs count changes, and the site's alarm counts by
severity and state whenever an alarm moves, with heartbeats and a start from the rule
engine's open alarms after a restart."""

from __future__ import annotations

from pathlib import Path

from test_equipment_intact import example_site
from test_equipment_kpi import D0, LIFT, M, Script

from gateway.batch import Batch, Event
from gateway.equipment.status_points import ALARM_POINTS, HEARTBEAT, StatusPoints
from gateway.health import DeviceHealth
from rules.alarms import Alarm, AlarmDefinition
from rules.engine import events
from rules.engine.engine import RuleEngine

SITE = "demo-estate"
UP, MAINTENANCE, OFFLINE, FAULT = 0, 1, 2, 3


def counts(batch: Batch) -> dict[str, int]:
    assert batch.device == SITE and batch.points == ALARM_POINTS
    return dict(zip(batch.points, batch.values, strict=True))


def site_batches(items: list) -> list[Batch]:
    return [b for b in items if isinstance(b, Batch) and b.device == SITE]


def states(items: list, device: str) -> list[tuple[float, int]]:
    return [(b.ts, b.values[0]) for b in items
            if isinstance(b, Batch) and b.device == device and b.points == ("equipment_state",)]


class Alarms:
    """Alarms moved through their real life cycle; each move is told to `points` as the
    rule engine tells the pipeline: the transitions, then the alarm's state."""

    def __init__(self, points: StatusPoints) -> None:
        self.points = points
        self.alarms: dict[str, Alarm] = {}

    def _alarm(self, alarm_id: str, severity: str) -> Alarm:
        device = alarm_id.partition(".")[0]
        return self.alarms.setdefault(alarm_id, Alarm(AlarmDefinition(
            alarm_id, device, severity, alarm_id, chatter_limit=None)))

    def move(self, alarm_id: str, now: float, how: str, severity: str = "major") -> None:
        alarm = self._alarm(alarm_id, severity)
        transitions = {
            "raise": lambda: alarm.update(now, True),
            "clear": lambda: alarm.update(now, False),
            "ack": lambda: alarm.acknowledge(now, "监控中心"),
            "shelve": lambda: alarm.shelve(now, now + 3600, "监控中心"),
        }[how]()
        for t in transitions:
            self.points.observe(events.alarm_event(t, alarm_id))
        self.points.observe(events.alarm_state(alarm, alarm_id, now))


def test_every_device_status_that_knows_becomes_an_online_reading_when_handed_on() -> None:
    points = StatusPoints(SITE)
    health = DeviceHealth("pump_b1_1", offline_after=1)
    points.observe(health.good(0.01, D0 + 1))  # type: ignore[arg-type]
    points.observe(health.status_event(D0 + 60))  # the periodic one
    points.observe(health.failed("comm_failure", "timeout", D0 + 61))  # type: ignore[arg-type]
    points.observe(Event("device_status", D0 + 62, "lift_b1_1", {"online": None}))  # not settled

    # stamped when taken (after the polls already stored, so the device's telemetry stays in
    # order), the latest of each point: offline since D0 + 61, said at D0 + 65
    online = [(b.device, b.ts, b.points, b.values) for b in points.take(D0 + 65)]
    assert online == [("pump_b1_1", D0 + 65, ("online",), [0])]
    assert points.take(D0 + 70) == []


def test_alarm_counts_follow_each_alarm_by_severity_and_state() -> None:
    points = StatusPoints(SITE)
    points.seed([], {}, D0)
    alarms = Alarms(points)
    [start] = site_batches(points.take(D0))
    assert counts(start) == dict.fromkeys(ALARM_POINTS, 0)

    alarms.move("pump_b1_1.pump_trip", D0 + 10, "raise", "major")
    alarms.move("lift_b1_1.passengers_trapped", D0 + 20, "raise", "critical")
    alarms.move("pump_b1_1.pump_trip", D0 + 30, "ack")
    alarms.move("sump_b1_1.high_level", D0 + 40, "raise", "minor")
    alarms.move("sump_b1_1.high_level", D0 + 50, "shelve")
    alarms.move("lift_b1_1.passengers_trapped", D0 + 60, "clear")  # returned, unacknowledged
    alarms.move("pump_b1_1.pump_trip", D0 + 70, "clear")  # acknowledged: closed

    got = [(b.ts, counts(b)) for b in site_batches(points.take(D0 + 75))]
    short = [(ts - D0, c["alarms_active_critical"], c["alarms_active_major"], c["alarms_active_minor"],
              c["alarms_active"], c["alarms_unacknowledged"], c["alarms_hidden"], c["alarms_raised"])
             for ts, c in got]
    #          t  crit major minor active unack hidden raised
    assert short == [
        (10, 0, 1, 0, 1, 1, 0, 1),
        (20, 1, 1, 0, 2, 2, 0, 1),
        (30, 1, 1, 0, 2, 1, 0, 0),
        (40, 1, 1, 1, 3, 2, 0, 1),
        (50, 1, 1, 0, 2, 1, 1, 0),
        (60, 0, 1, 0, 1, 1, 1, 0),
        (70, 0, 0, 0, 0, 1, 1, 0),
    ]
    assert all(c["alarms_active_warning"] == 0 for _, c in got)


def test_unchanged_counts_are_sent_again_only_as_a_heartbeat() -> None:
    points = StatusPoints(SITE)
    points.seed([], {}, D0)
    alarms = Alarms(points)
    points.take(D0)
    alarms.move("pump_b1_1.pump_trip", D0 + 10, "raise")
    points.take(D0 + 15)

    assert points.take(D0 + 10 + HEARTBEAT - 1) == []
    [beat] = points.take(D0 + 10 + HEARTBEAT)
    assert beat.ts == D0 + 10 + HEARTBEAT
    assert counts(beat)["alarms_active_major"] == 1 and counts(beat)["alarms_raised"] == 0


def test_changes_at_one_moment_are_one_batch_and_a_late_event_is_never_stamped_back() -> None:
    points = StatusPoints(SITE)
    points.seed([], {}, D0 + 100)
    points.take(D0 + 100)
    alarms = Alarms(points)
    alarms.move("patrol.plant_rooms.roof_tank", D0 + 50, "raise", "minor")  # judged late: ts before
    alarms.move("pump_b1_1.pump_trip", D0 + 120, "raise")
    alarms.move("pump_b1_1.low_outlet_pressure", D0 + 120, "raise")

    got = [(b.ts - D0, counts(b)["alarms_active"], counts(b)["alarms_raised"])
           for b in site_batches(points.take(D0 + 125))]
    assert got == [(100, 1, 1), (120, 3, 2)]


def test_equipment_state_follows_status_faults_and_maintenance_with_a_heartbeat(tmp_path: Path) -> None:
    s = Script(example_site(), tmp_path, D0).start()
    assert states(s.out, LIFT) == []  # no status yet: unknown, not sent
    # the stage ticks after each (as the daemon's does, every few seconds)
    s.at(D0 + 10).online(LIFT, True).tick()
    s.at(D0 + 20).alarm(LIFT, "out_of_service", "major", True).tick()
    s.at(D0 + 30).alarm(LIFT, "short_cycling", "minor", True).tick()  # not a fault severity
    s.at(D0 + 40).maintenance(LIFT, True).tick()
    s.at(D0 + 50).maintenance(LIFT, False).tick()
    s.at(D0 + 60).alarm(LIFT, "out_of_service", "major", False).tick()
    s.at(D0 + 70).online(LIFT, False).tick()
    s.at(D0 + 75).tick()

    assert states(s.out, LIFT) == [(D0 + 10, UP), (D0 + 20, FAULT), (D0 + 40, MAINTENANCE),
                                   (D0 + 50, FAULT), (D0 + 60, UP), (D0 + 70, OFFLINE)]
    online = [(b.ts, b.values) for b in s.out if isinstance(b, Batch) and b.device == LIFT
              and b.points == ("online",)]
    assert online == [(D0 + 10, [1]), (D0 + 70, [0])]
    s.at(D0 + 70 + 15 * M).tick()
    assert states(s.out, LIFT)[-1] == (D0 + 70 + 15 * M, OFFLINE)


def test_after_a_restart_the_counts_and_states_start_from_what_is_open(tmp_path: Path) -> None:
    config = example_site()
    s = Script(config, tmp_path, D0)
    engine = RuleEngine(config, tmp_path, clock=lambda: s.now)
    engine.open()
    s.stage_args = {"alarms": lambda: engine}
    s.start()
    s.at(D0 + 10).online(LIFT, True)
    for item in engine.raise_external("b1_pumps.intact_rate", "b1_pumps", "major", "泵完好率低",
                                      owner="kpi", now=s.now):
        s.emit(item)
    s.at(D0 + 20).alarm(LIFT, "out_of_service", "major", True)  # a fault in the ledger
    s.tick()
    s.at(D0 + 30).stop()
    s.out.clear()

    s.at(D0 + 40).start()  # nothing repeats the open alarm: the engine's view does
    [first] = site_batches(s.out)
    assert first.ts == D0 + 40
    assert counts(first)["alarms_active_major"] == 1 and counts(first)["alarms_raised"] == 0
    assert states(s.out, LIFT) == [(D0 + 40, FAULT)]  # the ledger's fault, online unknown
