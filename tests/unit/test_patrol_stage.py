"""The patrol stage with the real rule engine, on a clock the test moves: visits read out of
checkpoint devices' batches (a card reader, a hub, an IO input), rounds judged at their
end, a missed checkpoint's alarm raised, returned by a later visit and closed by an ack,
and the compliance of a day counted by hand."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from config_site_files import write_site

from gateway.batch import Batch, Event, Quality
from gateway.config.loader import load_site
from gateway.config.models import SiteConfig
from gateway.patrol import PatrolStage
from rules.engine.engine import RuleEngine

SHANGHAI = ZoneInfo("Asia/Shanghai")
ZHANG, LI, STRANGER = "5B21C0D4", "5B21C0E7", "0BADCA4D"
PLAN = "plant_rooms"
ROOF_ALARM = "patrol.plant_rooms.roof_tank"

SITE = """\
site:
  id: test-site
  name: Test site
patrols:
  guards:
    - {id: zhang, name: 张师傅, cards: ["5B21C0D4"]}
    - {id: li, name: 李师傅, cards: ["5B21C0E7"]}
  checkpoints:
    - {id: pump_room, name: B1水泵房, device: reader_pump, point: card_no}
    - {id: power_room, name: 配电室, device: reader_power, point: card_no}
    - {id: roof_tank, name: 屋顶水箱, device: reader_roof, point: card_no}
    - {id: b2_lobby, device: hub_b2, point: spot, equals: CP-07, card: card}
    - {id: b2_garage, device: hub_b2, point: spot, equals: CP-08, card: card}
    - {id: sump, device: io_b3, point: di0, rises: true}
  plans:
    - id: plant_rooms
      name: 设备房巡更
      checkpoints: [pump_room, power_room, roof_tank]
      guards: [zhang, li]
      windows:
        - {id: day, hours: "08:00-20:00", rounds: 3}
        - {id: night, hours: "20:00-08:00", rounds: 4}
    - id: b2_rounds
      checkpoints: [b2_lobby, b2_garage, sump]
      order: listed
      severity: major
      windows:
        - {id: day, hours: "08:00-20:00", rounds: 1}
"""

READER = """\
name: patrol reader
system: patrol
protocol: mqtt
points:
  card_no: {topic: events/patrol, path: $.card.no, type: text}
  battery: {topic: heartbeat, path: $.battery, type: integer}
"""

HUB = """\
name: patrol hub
system: patrol
protocol: mqtt
points:
  spot: {topic: events, path: $.checkpoint, type: text}
  card: {topic: events, path: $.card, type: text}
"""

IO = """\
name: IO module
system: access
points:
  di0: {table: discrete, address: 0}
  di1: {table: discrete, address: 1}
"""

DEVICES = """\
devices:
  - {id: reader_pump, profile: reader, connection: {type: mqtt, base_topic: p/pump}}
  - {id: reader_power, profile: reader, connection: {type: mqtt, base_topic: p/power}}
  - {id: reader_roof, profile: reader, connection: {type: mqtt, base_topic: p/roof}}
  - {id: hub_b2, profile: hub, connection: {type: mqtt, base_topic: p/hub}}
  - {id: io_b3, profile: io, connection: {host: 127.0.0.1, port: 15020}}
"""

READERS = {"pump_room": "reader_pump", "power_room": "reader_power", "roof_tank": "reader_roof"}


def at(day: int, hour: int, minute: int = 0, second: int = 0) -> float:
    """A moment of November 2026 on site."""
    return datetime(2026, 11, day, hour, minute, second, tzinfo=SHANGHAI).timestamp()


def patrol_config(root: Path, site: str = SITE) -> SiteConfig:
    path = write_site(root, {"site.yaml": site, "profiles/pump.yaml": None, "devices/b1.yaml": None,
                             "profiles/reader.yaml": READER, "profiles/hub.yaml": HUB,
                             "profiles/io.yaml": IO, "devices/patrol.yaml": DEVICES})
    return load_site(path)


class Patrols:
    """The rule engine and the patrol stage over one data dir, on a clock the test moves,
    and everything they emitted."""

    def __init__(self, config: SiteConfig, data_dir: Path, now: float) -> None:
        self.config, self.data_dir, self.now = config, data_dir, now
        self.out: list[Batch | Event] = []
        self.start()

    def start(self) -> None:
        self.engine = RuleEngine(self.config, self.data_dir, clock=lambda: self.now)
        self.stage = PatrolStage(self.config, self.data_dir, clock=lambda: self.now, alarms=self.engine)
        self.out += self.engine.open()
        self.out += self.stage.open()

    def stop(self) -> None:
        self.stage.close()
        self.engine.close()

    def restart(self, now: float) -> None:
        self.stop()
        self.now = now
        self.start()

    # -- what happens --------------------------------------------------------------------

    def swipe(self, checkpoint: str, card: str, when: float | None = None) -> None:
        """A guard's card at a checkpoint's reader (now, or stamped `when` by the reader)."""
        self.feed(Batch(READERS[checkpoint], self.now if when is None else when, ("card_no",), [card]))

    def feed(self, batch: Batch) -> None:
        self.out += self.engine.process(batch)
        self.out += self.stage.process(batch)

    def walk(self, card: str, *checkpoints: str, every: float = 300.0) -> None:
        """A guard walks these checkpoints, `every` seconds apart."""
        for checkpoint in checkpoints:
            self.swipe(checkpoint, card)
            self.now += every

    def until(self, moment: float, step: float = 60.0) -> None:
        """Move the clock to `moment`, ticking both stages every `step` seconds."""
        while self.now < moment:
            self.now = min(moment, self.now + step)
            self.out += self.stage.tick(self.now)
            self.out += self.engine.tick(self.now)

    # -- what came out -------------------------------------------------------------------

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [e.body for e in self.out if isinstance(e, Event) and e.type == kind]

    def rounds(self, plan: str = PLAN) -> list[dict[str, Any]]:
        return [b for b in self.events("patrol_round") if b["plan"] == plan]

    def transitions(self, alarm: str) -> list[str]:
        return [b["transition"] for b in self.events("alarm_event") if b["alarm"] == alarm]

    def kpi(self, plan: str = PLAN) -> list[dict[str, Any]]:
        return [dict(zip(b.points, b.values, strict=True)) for b in self.out
                if isinstance(b, Batch) and b.device == f"patrol.{plan}"]

    def compliance(self, start: float, end: float, plan: str = PLAN) -> dict[str, Any]:
        [entry] = [e for e in self.stage.compliance(start, end) if e["plan"] == plan]
        return entry


@pytest.fixture
def config(tmp_path: Path) -> SiteConfig:
    return patrol_config(tmp_path / "site")


@pytest.fixture
def site(config: SiteConfig, tmp_path: Path) -> Iterator[Patrols]:
    patrols = Patrols(config, tmp_path / "data", at(23, 7, 50))  # first start before the day
    yield patrols
    patrols.stop()


# --- visits --------------------------------------------------------------------------------


def test_a_swipe_at_a_reader_is_a_visit_by_the_guard_whose_card_it_is(site: Patrols) -> None:
    site.until(at(23, 8, 10))
    site.walk(ZHANG, "pump_room", "power_room", "roof_tank")
    site.until(at(23, 12, 0))

    [judged] = site.rounds()
    assert judged["missed"] == [] and judged["done"] is True
    assert [(v["checkpoint"], v["guard"]) for v in judged["visited"]] == [
        ("pump_room", "zhang"), ("power_room", "zhang"), ("roof_tank", "zhang")]
    assert judged["visited"][0]["at"] == "2026-11-23T00:10:00.000Z"
    assert site.stage.stats()["visits"] == 3


def test_a_hub_counts_a_visit_for_the_checkpoint_whose_code_it_reports(site: Patrols) -> None:
    site.until(at(23, 9))
    site.feed(Batch("hub_b2", site.now, ("spot", "card"), ["CP-07", LI]))
    site.feed(Batch("hub_b2", site.now + 60, ("spot", "card"), ["CP-99", LI]))  # no checkpoint of ours
    site.until(at(23, 20))

    [judged] = site.rounds("b2_rounds")
    assert [(v["checkpoint"], v["guard"]) for v in judged["visited"]] == [("b2_lobby", "li")]
    assert judged["missed"] == ["b2_garage", "sump"]


def test_an_io_input_is_a_visit_when_it_rises_not_while_it_stays_on(site: Patrols) -> None:
    site.until(at(23, 9))
    for value in (0, 1, 1, 1, 0):  # pressed once, held, released
        site.feed(Batch("io_b3", site.now, ("di0", "di1"), [value, 0]))
        site.now += 5
    assert site.stage.stats()["visits"] == 1
    site.feed(Batch("io_b3", site.now, ("di0", "di1"), [None, None], [Quality.COMM_FAILURE] * 2))
    site.feed(Batch("io_b3", site.now + 5, ("di0", "di1"), [1, 0]))  # a failed poll is no reset
    assert site.stage.stats()["visits"] == 2


def test_the_first_reading_of_an_input_already_on_is_no_visit(site: Patrols) -> None:
    site.until(at(23, 9))
    site.feed(Batch("io_b3", site.now, ("di0",), [1]))

    assert site.stage.stats().get("visits", 0) == 0


def test_a_swipe_delivered_twice_is_one_visit(site: Patrols) -> None:
    site.until(at(23, 9))
    site.swipe("pump_room", ZHANG, when=at(23, 8, 55))
    site.swipe("pump_room", ZHANG, when=at(23, 8, 55))  # the broker's resend, the device's time

    stats = site.stage.stats()
    assert (stats["visits"], stats["duplicate_visits"]) == (1, 1)


def test_a_batch_without_the_card_point_or_with_it_failed_is_no_visit(site: Patrols) -> None:
    site.until(at(23, 9))
    site.feed(Batch("reader_pump", site.now, ("battery",), [88]))  # a heartbeat
    site.feed(Batch("reader_pump", site.now, ("card_no",), [None], [Quality.DECODE_ERROR]))

    assert site.stage.stats().get("visits", 0) == 0


# --- rounds and the alarm ----------------------------------------------------------------


def test_missed_checkpoint_raises_alarm_at_window_end(site: Patrols) -> None:
    site.until(at(23, 8, 30))
    site.walk(LI, "pump_room", "power_room")  # the roof is left out
    site.until(at(23, 11, 59))
    assert site.rounds() == [] and site.transitions(ROOF_ALARM) == []

    site.until(at(23, 12, 0))

    [judged] = site.rounds()
    assert (judged["window"], judged["round"], judged["rounds"]) == ("day", 1, 3)
    assert (judged["start"], judged["end"]) == ("2026-11-23T00:00:00.000Z", "2026-11-23T04:00:00.000Z")
    assert judged["missed"] == ["roof_tank"] and judged["done"] is False
    assert judged["rate"] == pytest.approx(2 / 3)
    assert site.transitions(ROOF_ALARM) == ["raised"]
    alarm = site.engine.alarm(ROOF_ALARM)
    assert alarm["state"] == "active_unacknowledged" and alarm["severity"] == "minor"
    assert alarm["device"] == "reader_roof" and alarm["raised_at"] == "2026-11-23T04:00:00.000Z"
    assert alarm["message"] == "巡更漏检: 设备房巡更 屋顶水箱 2026-11-23 08:00-12:00 未打卡 (day 第1/3轮)"
    assert site.kpi()[-1] == {"round_expected": 3, "round_visited": 2, "round_done": 0,
                              "compliance_30d": pytest.approx(2 / 3)}
    assert site.compliance(at(23, 0), at(24, 0))["rate"] == pytest.approx(2 / 3)


def test_a_later_visit_returns_the_alarm_and_the_operators_ack_closes_it(site: Patrols) -> None:
    site.until(at(23, 8, 30))
    site.walk(LI, "pump_room", "power_room")
    site.until(at(23, 12, 0))
    site.until(at(23, 12, 20))

    site.swipe("roof_tank", ZHANG)  # the guard sent up to the roof, in round 2

    assert site.transitions(ROOF_ALARM) == ["raised", "returned"]
    assert site.engine.alarm(ROOF_ALARM)["state"] == "returned_unacknowledged"
    site.out += site.engine.acknowledge(ROOF_ALARM, "监控中心 刘工")
    state = site.engine.alarm(ROOF_ALARM)
    assert state["state"] == "normal" and state["closed"] is True
    # round 1 stays missed: a visit in round 2 does not make round 1 good
    assert site.compliance(at(23, 0), at(24, 0))["checkpoints_visited"] == 2


def test_an_alarm_missed_again_stays_raised_and_names_the_newest_round(site: Patrols) -> None:
    site.until(at(23, 8, 30))
    site.walk(LI, "pump_room", "power_room")
    site.until(at(23, 12, 30))
    site.walk(LI, "pump_room", "power_room")
    site.until(at(23, 16, 0))

    assert site.transitions(ROOF_ALARM) == ["raised"]
    alarm = site.engine.alarm(ROOF_ALARM)
    assert alarm["state"] == "active_unacknowledged"
    assert "12:00-16:00" in alarm["message"] and "第2/3轮" in alarm["message"]
    assert alarm["raised_at"] == "2026-11-23T04:00:00.000Z"  # when it first went missing


def test_an_acknowledged_alarm_clears_when_the_checkpoint_is_visited(site: Patrols) -> None:
    site.until(at(23, 12, 5))
    site.out += site.engine.acknowledge(ROOF_ALARM, "监控中心 刘工", "已通知保安")
    site.swipe("roof_tank", LI)

    assert site.transitions(ROOF_ALARM) == ["raised", "acknowledged", "cleared"]
    assert site.engine.alarm(ROOF_ALARM)["closed"] is True


def test_a_shelved_patrol_alarm_says_nothing_until_the_shelve_ends(site: Patrols) -> None:
    site.until(at(23, 12, 5))
    site.out += site.engine.shelve(ROOF_ALARM, "监控中心 刘工", until=at(23, 18), reason="屋顶施工")

    assert site.engine.alarm(ROOF_ALARM)["state"] == "shelved"
    site.until(at(23, 16, 0))
    assert site.transitions(ROOF_ALARM) == ["raised", "shelved"]


def test_a_card_not_on_the_plan_does_not_count(site: Patrols) -> None:
    site.until(at(23, 8, 30))
    site.walk(ZHANG, "pump_room", "power_room")
    site.swipe("roof_tank", STRANGER)
    site.until(at(23, 12, 0))

    assert site.rounds()[0]["missed"] == ["roof_tank"]
    assert site.stage.stats()["visits_refused"] == 1
    assert site.transitions(ROOF_ALARM) == ["raised"]


def test_a_listed_order_counts_the_longest_run_in_order_and_names_the_rest(site: Patrols) -> None:
    site.until(at(23, 9))
    site.feed(Batch("hub_b2", site.now, ("spot", "card"), ["CP-08", LI]))  # garage first
    site.now += 60
    for value in (0, 1):  # then the sump's button
        site.feed(Batch("io_b3", site.now, ("di0",), [value]))
        site.now += 5
    site.feed(Batch("hub_b2", site.now + 60, ("spot", "card"), ["CP-07", LI]))  # the lobby last
    site.until(at(23, 20))

    [judged] = site.rounds("b2_rounds")
    assert [v["checkpoint"] for v in judged["visited"]] == ["b2_garage", "sump"]
    assert judged["missed"] == ["b2_lobby"] and judged["out_of_order"] == ["b2_lobby"]
    alarm = site.engine.alarm("patrol.b2_rounds.b2_lobby")
    assert alarm["severity"] == "major" and "未按规定顺序打卡" in alarm["message"]


def test_a_late_visit_stamped_inside_a_judged_round_amends_it(site: Patrols) -> None:
    site.until(at(23, 8, 30))
    site.walk(LI, "pump_room", "power_room")
    site.until(at(23, 12, 5))
    assert site.rounds()[-1]["missed"] == ["roof_tank"]

    # the roof reader was offline; it uploads the swipe it stored at 11:40
    site.swipe("roof_tank", LI, when=at(23, 11, 40))

    amended = site.rounds()[-1]
    assert amended["amended"] is True and amended["missed"] == [] and amended["done"] is True
    assert site.transitions(ROOF_ALARM) == ["raised", "returned"]
    assert site.kpi()[-1]["round_done"] == 1  # the same series and time: InfluxDB keeps the newer
    assert site.compliance(at(23, 0), at(24, 0))["rate"] == 1.0


def test_a_round_begun_before_the_gateway_first_ran_is_not_expected(config: SiteConfig,
                                                                     tmp_path: Path) -> None:
    site = Patrols(config, tmp_path / "data", at(23, 9, 0))  # first start inside round 1
    site.until(at(23, 16, 0))

    assert [r["round"] for r in site.rounds()] == [2]
    assert site.compliance(at(23, 0), at(24, 0))["rounds_expected"] == 1
    site.stop()


# --- compliance -----------------------------------------------------------------------------


def test_compliance_of_a_day_and_night_counted_by_hand(site: Patrols) -> None:
    all_three = ("pump_room", "power_room", "roof_tank")
    site.until(at(23, 8, 30))
    site.walk(ZHANG, *all_three)  # day 1: all
    site.until(at(23, 12, 30))
    site.walk(ZHANG, "pump_room", "power_room")  # day 2: roof missed
    site.until(at(23, 20, 30))  # day 3: nobody came
    site.walk(LI, *all_three)  # night 1: all
    site.until(at(23, 23, 30))
    site.walk(LI, "roof_tank")  # night 2: pump and power missed
    site.until(at(24, 2, 30))
    site.walk(LI, *all_three)  # night 3: all
    site.until(at(24, 5, 30))
    site.walk(LI, *all_three)  # night 4: all
    site.until(at(24, 8, 0))

    # the rounds that started from 08:00 on the 23rd to 08:00 on the 24th: a day and a night
    day = site.compliance(at(23, 8), at(24, 8))
    assert {k: day[k] for k in ("rounds_expected", "rounds_done", "checkpoints_expected",
                                "checkpoints_visited")} == {
        "rounds_expected": 7, "rounds_done": 4, "checkpoints_expected": 21, "checkpoints_visited": 15}
    assert day["rate"] == pytest.approx(15 / 21)
    assert [(m["checkpoint"], m["window_start"], m["window_end"]) for m in day["missed"]] == [
        ("roof_tank", at(23, 12), at(23, 16)),
        ("pump_room", at(23, 16), at(23, 20)), ("power_room", at(23, 16), at(23, 20)),
        ("roof_tank", at(23, 16), at(23, 20)),
        ("pump_room", at(23, 23), at(24, 2)), ("power_room", at(23, 23), at(24, 2)),
    ]
    morning = site.compliance(at(23, 0), at(23, 12))
    assert (morning["rounds_expected"], morning["rate"]) == (1, 1.0)
    # the alarms: each missed checkpoint raised; each visited since, returned
    assert site.engine.alarm("patrol.plant_rooms.pump_room")["state"] == "returned_unacknowledged"
    assert site.kpi()[-1]["compliance_30d"] == pytest.approx(15 / 21)


def test_compliance_of_a_span_with_no_judged_round_is_empty(site: Patrols) -> None:
    assert site.stage.compliance(at(1, 0), at(2, 0)) == []
