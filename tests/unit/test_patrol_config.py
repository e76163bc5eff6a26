"""The patrol configuration checked against the site: checkpoints on devices and points
that exist, plans of known checkpoints and guards, windows that do not overlap, at least
one round; every mistake located at file:line:col with what would be right."""

from __future__ import annotations

from pathlib import Path

import pytest
from config_site_files import errors_of, write_site
from test_patrol_stage import HUB, IO, READER

from gateway.config.loader import load_site

SITE = """\
site:
  id: test-site
  name: Test site
"""

DEVICES = """\
devices:
  - {id: reader_pump, profile: reader, connection: {type: mqtt, base_topic: p/pump}}
  - {id: reader_power, profile: reader, connection: {type: mqtt, base_topic: p/power}}
  - {id: hub_b2, profile: hub, connection: {type: mqtt, base_topic: p/hub}}
  - {id: io_roof, profile: io, connection: {host: 127.0.0.1, port: 15020}}
"""

GOOD = """\
patrols:
  guards:
    - {id: zhang, name: 张师傅, cards: ["5B21C0D4"]}
  checkpoints:
    - {id: pump_room, device: reader_pump, point: card_no}
    - {id: power_room, device: reader_power, point: card_no}
    - {id: b2_lobby, device: hub_b2, point: spot, equals: CP-07, card: card}
    - {id: roof_tank, device: io_roof, point: di0, rises: true}
  plans:
    - id: plant_rooms
      checkpoints: [pump_room, power_room, b2_lobby]
      guards: [zhang]
      windows:
        - {id: day, hours: "08:00-20:00", rounds: 3}
        - {id: night, hours: "20:00-08:00", rounds: 4}
    - id: roof
      checkpoints: [roof_tank]
      windows:
        - {id: all_day, hours: "06:00-06:00", rounds: 2}
"""


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def patrol_site(root: Path, patrols: str = GOOD) -> Path:
    return write_site(root, {"site.yaml": SITE + patrols, "profiles/reader.yaml": READER,
                             "profiles/hub.yaml": HUB, "profiles/io.yaml": IO,
                             "devices/patrol.yaml": DEVICES})


def test_a_site_with_checkpoints_guards_and_plans_loads(in_tmp: Path) -> None:
    patrols = load_site(patrol_site(in_tmp)).patrols

    assert [c.id for c in patrols.checkpoints] == ["pump_room", "power_room", "b2_lobby", "roof_tank"]
    assert [c.card_point for c in patrols.checkpoints] == ["card_no", "card_no", "card", None]
    assert [(w.id, w.rounds) for w in patrols.plans[0].windows] == [("day", 3), ("night", 4)]
    assert patrols.severity == "minor" and patrols.plans[0].order == "any"


def test_an_unknown_device_is_located_with_a_suggestion(in_tmp: Path) -> None:
    site = patrol_site(in_tmp, GOOD.replace("device: reader_power,", "device: reader_powr,"))

    assert errors_of(site) == [
        "site.yaml:9:32 patrols.checkpoints[1].device: 'reader_powr' is not a device of the "
        "site; did you mean reader_power?; a checkpoint is read from a device's points: a "
        "card reader, a patrol hub or an IO module"
    ]


def test_a_point_the_device_does_not_have_is_named_with_its_points(in_tmp: Path) -> None:
    site = patrol_site(in_tmp, GOOD.replace("point: card_no}\n    - {id: power", "point: card}\n    - {id: power"))

    assert errors_of(site) == [
        "site.yaml:8:51 patrols.checkpoints[0].point: 'card' is not a point of reader_pump "
        "(profile reader); did you mean card_no?; its points: card_no, battery"
    ]


def test_rises_on_a_text_point_is_refused(in_tmp: Path) -> None:
    site = patrol_site(in_tmp, GOOD.replace("device: reader_pump, point: card_no}",
                                            "device: reader_pump, point: card_no, rises: true}"))

    rises, who = errors_of(site)
    assert rises.startswith("site.yaml:8:60 patrols.checkpoints[0].rises: card_no is text; "
                            "rises: true needs an input that reads 0 and 1")
    # and a rising input tells no card, which the plan's guards: need
    assert who.startswith("site.yaml:14:21 patrols.plans[0].checkpoints[0]: pump_room cannot "
                          "tell who visited")


def test_equals_and_rises_together_are_refused_at_rises(in_tmp: Path) -> None:
    site = patrol_site(in_tmp, GOOD.replace("point: di0, rises: true", "point: di0, equals: 1, rises: true"))

    assert errors_of(site) == [
        "site.yaml:11:63 patrols.checkpoints[3].rises: write equals: (the point names the "
        "checkpoint) or rises: true (an input going 0 → 1), not both"
    ]


def test_an_unknown_checkpoint_in_a_plan_is_located_with_a_suggestion(in_tmp: Path) -> None:
    site = patrol_site(in_tmp, GOOD.replace("[pump_room, power_room, b2_lobby]",
                                            "[pump_room, powr_room, b2_lobby]"))

    assert errors_of(site) == [
        "site.yaml:14:32 patrols.plans[0].checkpoints[1]: 'powr_room' is not a checkpoint; "
        "did you mean power_room?; checkpoints are declared under patrols.checkpoints"
    ]


def test_a_checkpoint_twice_in_a_plan_is_refused(in_tmp: Path) -> None:
    site = patrol_site(in_tmp, GOOD.replace("[pump_room, power_room, b2_lobby]",
                                            "[pump_room, power_room, pump_room]"))

    assert errors_of(site) == [
        "site.yaml:14:44 patrols.plans[0].checkpoints[2]: pump_room is already in this plan; "
        "a checkpoint is visited once a round"
    ]


def test_overlapping_windows_are_refused_at_the_later_one(in_tmp: Path) -> None:
    site = patrol_site(in_tmp, GOOD.replace('hours: "20:00-08:00"', 'hours: "19:00-08:00"'))

    assert errors_of(site) == [
        "site.yaml:18:30 patrols.plans[0].windows[1].hours: 19:00-08:00 overlaps window day "
        "(08:00-20:00); a moment belongs to one round of a plan, so its windows must not "
        "overlap (08:00-20:00 and 20:00-08:00 do not)"
    ]


def test_a_night_window_overlapping_the_next_morning_is_refused() -> None:
    from gateway.config.patrol_loader import _overlap
    from gateway.config.patrol_models import PatrolWindow

    night = PatrolWindow(id="night", hours="20:00-08:00", rounds=4).minutes()
    assert _overlap(night, PatrolWindow(id="early", hours="07:00-09:00", rounds=1).minutes())
    assert not _overlap(night, PatrolWindow(id="day", hours="08:00-20:00", rounds=3).minutes())
    assert _overlap(PatrolWindow(id="all", hours="06:00-06:00", rounds=2).minutes(), night)


def test_no_rounds_is_refused_with_the_minimum(in_tmp: Path) -> None:
    site = patrol_site(in_tmp, GOOD.replace("rounds: 3}", "rounds: 0}"))

    assert errors_of(site) == [
        "site.yaml:17:51 patrols.plans[0].windows[0].rounds: must be at least 1, got 0"
    ]


def test_a_window_that_is_no_time_window_says_how_to_write_one(in_tmp: Path) -> None:
    site = patrol_site(in_tmp, GOOD.replace('"08:00-20:00"', '"8-20"'))

    [error] = errors_of(site)
    assert error.startswith("site.yaml:17:28 patrols.plans[0].windows[0].hours: ")
    assert "'8-20' is not a time window; write it as \"02:00-04:00\"" in error


def test_an_unknown_guard_is_located_with_a_suggestion(in_tmp: Path) -> None:
    site = patrol_site(in_tmp, GOOD.replace("guards: [zhang]", "guards: [zhan]"))

    assert errors_of(site) == [
        "site.yaml:15:16 patrols.plans[0].guards[0]: 'zhan' is not a guard; did you mean "
        "zhang?; guards are declared under patrols.guards with their cards"
    ]


def test_guards_on_a_plan_with_a_checkpoint_that_cannot_tell_who_is_refused(in_tmp: Path) -> None:
    site = patrol_site(in_tmp, GOOD.replace("checkpoints: [roof_tank]\n",
                                            "checkpoints: [roof_tank]\n      guards: [zhang]\n"))

    assert errors_of(site) == [
        "site.yaml:20:21 patrols.plans[1].checkpoints[0]: roof_tank cannot tell who visited "
        "(no card point), so this plan's guards: cannot be checked there; give roof_tank "
        "card: or remove guards:"
    ]


def test_duplicate_ids_and_a_card_of_two_guards_are_refused(in_tmp: Path) -> None:
    site = patrol_site(in_tmp, GOOD.replace(
        '    - {id: zhang, name: 张师傅, cards: ["5B21C0D4"]}\n',
        '    - {id: zhang, name: 张师傅, cards: ["5B21C0D4"]}\n'
        '    - {id: li, cards: ["5B21C0D4"]}\n').replace("id: roof\n", "id: plant_rooms\n"))

    assert errors_of(site) == [
        "site.yaml:7:24 patrols.guards[1].cards[0]: card …C0D4 is already zhang's; a card "
        "belongs to one guard",
        "site.yaml:20:11 patrols.plans[1].id: 'plant_rooms' is already plans[0]; plan ids "
        "must be unique",
    ]


def test_two_checkpoints_reading_the_same_visit_are_refused(in_tmp: Path) -> None:
    site = patrol_site(in_tmp, GOOD.replace("device: reader_power, point: card_no",
                                            "device: reader_pump, point: card_no"))

    assert errors_of(site) == [
        "site.yaml:9:52 patrols.checkpoints[1].point: checkpoint pump_room already reads "
        "visits from reader_pump.card_no this way; one visit would count for both (a hub: "
        "give each equals:)"
    ]


def test_the_example_site_patrols_three_checkpoints_three_rounds_by_day_four_by_night() -> None:
    config = load_site(Path(__file__).resolve().parents[2] / "config" / "site.yaml")
    [plan] = config.patrols.plans

    assert len(plan.checkpoints) >= 3
    assert {(w.hours, w.rounds) for w in plan.windows} == {("08:00-20:00", 3), ("20:00-08:00", 4)}
    devices = {d.id for d in config.devices}
    assert {c.device for c in config.patrols.checkpoints} <= devices
