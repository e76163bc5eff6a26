"""Rounds of a patrol plan: windows in the site's local time cut into equal rounds, across
midnight, and across a daylight-saving change where a site has one (Shanghai has none)."""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest

from gateway.config.patrol_models import PatrolPlan
from gateway.patrol.plan import PlanSchedule

SHANGHAI = ZoneInfo("Asia/Shanghai")
BERLIN = ZoneInfo("Europe/Berlin")
HOUR = 3600.0


def plan(*windows: tuple[str, str, int]) -> PatrolPlan:
    return PatrolPlan.model_validate({
        "id": "plant_rooms", "checkpoints": ["b1_pump_room"],
        "windows": [{"id": w, "hours": h, "rounds": n} for w, h, n in windows]})


def local(zone: ZoneInfo, *parts: int) -> float:
    return datetime(*parts, tzinfo=zone).timestamp()


def shown(zone: ZoneInfo, ts: float) -> str:
    return datetime.fromtimestamp(ts, zone).strftime("%m-%d %H:%M")


STANDARD = plan(("day", "08:00-20:00", 3), ("night", "20:00-08:00", 4))


def test_a_day_window_of_three_rounds_is_three_four_hour_rounds() -> None:
    schedule = PlanSchedule(STANDARD, "Asia/Shanghai")
    rounds = schedule.ending(local(SHANGHAI, 2026, 11, 23, 8, 0), local(SHANGHAI, 2026, 11, 23, 20, 0))

    assert [(r.window, r.number, shown(SHANGHAI, r.start), shown(SHANGHAI, r.end)) for r in rounds] == [
        ("day", 1, "11-23 08:00", "11-23 12:00"),
        ("day", 2, "11-23 12:00", "11-23 16:00"),
        ("day", 3, "11-23 16:00", "11-23 20:00"),
    ]
    assert all(r.rounds == 3 and r.day == date(2026, 11, 23) for r in rounds)


def test_a_night_window_crosses_midnight_in_four_three_hour_rounds_of_the_evenings_date() -> None:
    schedule = PlanSchedule(STANDARD, "Asia/Shanghai")
    rounds = schedule.ending(local(SHANGHAI, 2026, 11, 23, 20, 0), local(SHANGHAI, 2026, 11, 24, 8, 0))

    assert [(r.number, shown(SHANGHAI, r.start), shown(SHANGHAI, r.end)) for r in rounds] == [
        (1, "11-23 20:00", "11-23 23:00"),
        (2, "11-23 23:00", "11-24 02:00"),
        (3, "11-24 02:00", "11-24 05:00"),
        (4, "11-24 05:00", "11-24 08:00"),
    ]
    assert {(r.window, r.day) for r in rounds} == {("night", date(2026, 11, 23))}


def test_a_day_holds_seven_rounds_end_to_end_in_shanghai_every_day_of_the_year() -> None:
    schedule = PlanSchedule(STANDARD, "Asia/Shanghai")
    start = local(SHANGHAI, 2026, 1, 1, 8, 0)
    rounds = schedule.ending(start, start + 365 * 24 * HOUR)

    assert len(rounds) == 7 * 365
    assert all(b.start == a.end for a, b in zip(rounds, rounds[1:], strict=False))  # no gap, no overlap
    assert {r.end - r.start for r in rounds} == {4 * HOUR, 3 * HOUR}  # no DST in Shanghai


def test_equal_ends_are_a_whole_day_twice_a_day_is_two_twelve_hour_rounds() -> None:
    schedule = PlanSchedule(plan(("all_day", "06:00-06:00", 2)), "Asia/Shanghai")
    rounds = schedule.ending(local(SHANGHAI, 2026, 11, 23, 6, 0), local(SHANGHAI, 2026, 11, 24, 6, 0))

    assert [(shown(SHANGHAI, r.start), shown(SHANGHAI, r.end)) for r in rounds] == [
        ("11-23 06:00", "11-23 18:00"), ("11-23 18:00", "11-24 06:00")]


def test_the_night_the_clocks_go_forward_has_four_shorter_rounds_ending_at_eight() -> None:
    # Europe/Berlin, 29 March 2026: 02:00 becomes 03:00, the night is 11 hours
    schedule = PlanSchedule(STANDARD, "Europe/Berlin")
    rounds = [r for r in schedule.ending(local(BERLIN, 2026, 3, 28, 20, 0), local(BERLIN, 2026, 3, 29, 8, 0))
              if r.window == "night"]

    assert shown(BERLIN, rounds[0].start) == "03-28 20:00" and shown(BERLIN, rounds[-1].end) == "03-29 08:00"
    assert [r.end - r.start for r in rounds] == [11 * HOUR / 4] * 4


def test_the_night_the_clocks_go_back_has_four_longer_rounds() -> None:
    # Europe/Berlin, 25 October 2026: 03:00 becomes 02:00 again, the night is 13 hours
    schedule = PlanSchedule(STANDARD, "Europe/Berlin")
    rounds = [r for r in schedule.ending(local(BERLIN, 2026, 10, 24, 20, 0), local(BERLIN, 2026, 10, 25, 8, 0))
              if r.window == "night"]

    assert shown(BERLIN, rounds[-1].end) == "10-25 08:00"
    assert [r.end - r.start for r in rounds] == [13 * HOUR / 4] * 4
    day = schedule.ending(rounds[-1].end, rounds[-1].end + 12 * HOUR)
    assert [shown(BERLIN, r.start) for r in day] == ["10-25 08:00", "10-25 12:00", "10-25 16:00"]


@pytest.mark.parametrize(("at", "expected"), [
    ((2026, 11, 23, 8, 0), ("day", 1)),
    ((2026, 11, 23, 11, 59), ("day", 1)),
    ((2026, 11, 23, 12, 0), ("day", 2)),
    ((2026, 11, 24, 1, 30), ("night", 2)),
    ((2026, 11, 24, 7, 59), ("night", 4)),
])
def test_the_round_a_moment_falls_in(at: tuple[int, ...], expected: tuple[str, int]) -> None:
    found = PlanSchedule(STANDARD, "Asia/Shanghai").at(local(SHANGHAI, *at))

    assert found is not None and (found.window, found.number) == expected


def test_between_windows_a_moment_is_in_no_round_and_the_next_end_is_the_first_rounds() -> None:
    schedule = PlanSchedule(plan(("morning", "08:00-10:00", 1), ("evening", "18:00-20:00", 2)),
                            "Asia/Shanghai")
    noon = local(SHANGHAI, 2026, 11, 23, 12, 0)

    assert schedule.at(noon) is None
    assert shown(SHANGHAI, schedule.next_end(noon)) == "11-23 19:00"
    assert shown(SHANGHAI, schedule.next_end(local(SHANGHAI, 2026, 11, 23, 20, 0))) == "11-24 10:00"
