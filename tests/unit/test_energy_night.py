"""Night-time minimum flow of water meters (02:00-04:00 local): a leak never stops, a
household asleep does."""

from __future__ import annotations

import math

import pytest
from test_energy_site import HOUR, MIN, T0, Clock, feed, open_stage, site, values

NIGHT = T0 + 2 * HOUR  # 02:00 in Shanghai on 24 November


def leaking(i: int) -> float:
    """A pulse meter (0.01 m³ a pulse) with a 0.12 m³/h leak and a flush at 02:30."""
    flush = 0.01 if i >= 150 else 0.0
    return 12.0 + math.floor(0.2 * i) * 0.01 + flush


def quiet(i: int) -> float:
    """A household asleep: one flush at 02:30."""
    return 30.0 + (0.01 if i >= 150 else 0.0)


def minutes(f, first: int, last: int) -> list[tuple[float, float]]:
    return [(T0 + i * MIN, f(i)) for i in range(first, last + 1)]


def test_a_leaking_meters_night_minimum_flow_stays_above_zero(tmp_path):
    clock = Clock()
    stage, _ = open_stage(site(tmp_path), tmp_path / "data", clock)
    out = feed(stage, "w_101", "total_volume", minutes(leaking, 100, 245), clock)
    assert values(out, "w_101", "total_volume_night_flow") == {NIGHT: pytest.approx(0.12)}


def test_a_quiet_meters_night_minimum_flow_is_zero_despite_one_flush(tmp_path):
    clock = Clock()
    stage, _ = open_stage(site(tmp_path), tmp_path / "data", clock)
    out = feed(stage, "w_102", "total_volume", minutes(quiet, 100, 245), clock)
    assert values(out, "w_102", "total_volume_night_flow") == {NIGHT: 0.0}


def test_the_night_flow_comes_once_at_the_tick_after_the_window_even_across_a_restart(tmp_path):
    config = site(tmp_path)
    clock = Clock()
    stage, _ = open_stage(config, tmp_path / "data", clock)
    out = feed(stage, "w_101", "total_volume", minutes(leaking, 120, 239), clock)
    assert values(out, "w_101", "total_volume_night_flow") == {}
    assert values(stage.tick(T0 + 3 * HOUR), "w_101", "total_volume_night_flow") == {}
    out = stage.tick(T0 + 4 * HOUR)
    assert values(out, "w_101", "total_volume_night_flow") == {NIGHT: pytest.approx(0.12)}
    assert values(stage.tick(T0 + 4 * HOUR + MIN), "w_101", "total_volume_night_flow") == {}
    stage.close()

    clock.now = T0 + 5 * HOUR
    again, opened = open_stage(config, tmp_path / "data", clock)
    out = opened + feed(again, "w_101", "total_volume", minutes(leaking, 300, 305), clock)
    assert values(out, "w_101", "total_volume_night_flow") == {}


def test_readings_closer_than_ten_minutes_alone_measure_no_night_flow(tmp_path):
    clock = Clock()
    stage, _ = open_stage(site(tmp_path), tmp_path / "data", clock)
    feed(stage, "w_101", "total_volume", minutes(leaking, 150, 155), clock)
    assert values(stage.tick(T0 + 4 * HOUR), "w_101", "total_volume_night_flow") == {}


def test_an_electricity_meter_has_no_night_flow(tmp_path):
    clock = Clock()
    stage, _ = open_stage(site(tmp_path), tmp_path / "data", clock)
    out = feed(stage, "em_101", "energy_import",
               [(T0 + i * MIN, 10 + 0.1 * i) for i in range(100, 250)], clock)
    assert not any("night" in p for o in out for p in getattr(o, "points", ()))
