"""Groups: a master meter against its sub-meters (loss, loss rate), groups without a
master, meters that do not report in time, and groups across a restart."""

from __future__ import annotations

import pytest
from test_energy_site import HOUR, MIN, T0, Clock, open_stage, poll, site, values

from gateway.config.energy_models import MeterGroup
from gateway.energy.reader import EnergyReader

RATES = {"main_water": 10.0, "w_101": 4.0, "w_102": 5.0}  # m³/h: 1 m³/h leaks before the subs


def building(stage, clock, start, end, devices=tuple(RATES)):
    """Polls of the building's meters every 5 minutes in [start, end]."""
    out = []
    ts = start
    while ts <= end:
        clock.now = ts
        for device in devices:
            reading = 100 + RATES[device] * (ts - T0) / HOUR
            out += stage.process(poll(device, ts, total_volume=reading))
        ts += 5 * MIN
    return out


def test_a_leak_between_the_master_and_its_sub_meters_is_the_groups_loss(tmp_path):
    clock = Clock()
    stage, _ = open_stage(site(tmp_path), tmp_path / "data", clock)
    out = building(stage, clock, T0, T0 + HOUR)

    assert values(out, "b1_water", "consumption_hour") == {T0: pytest.approx(10.0)}
    assert values(out, "b1_water", "members_hour") == {T0: pytest.approx(9.0)}
    assert values(out, "b1_water", "loss_hour") == {T0: pytest.approx(1.0)}
    assert values(out, "b1_water", "loss_rate_hour") == {T0: pytest.approx(0.1)}
    assert values(out, "b1_water", "estimated_hour") == {T0: 0}
    with EnergyReader(tmp_path / "data") as reader:
        [row] = reader.group_rollups("hour", group="b1_water")
    assert (row.loss_rate, row.estimated, row.missing) == (pytest.approx(0.1), False, [])


def test_a_group_period_closes_only_when_its_last_meter_has_closed_it(tmp_path):
    clock = Clock()
    stage, _ = open_stage(site(tmp_path), tmp_path / "data", clock)
    out = building(stage, clock, T0, T0 + HOUR, devices=("main_water", "w_101"))
    assert values(out, "b1_water", "loss_hour") == {}
    out = building(stage, clock, T0, T0 + HOUR, devices=("w_102",))
    assert values(out, "b1_water", "loss_hour") == {T0: pytest.approx(1.0)}


def test_a_meter_missing_past_the_grace_makes_the_group_period_estimated_without_a_loss(
        tmp_path):
    clock = Clock()
    stage, _ = open_stage(site(tmp_path), tmp_path / "data", clock)
    building(stage, clock, T0, T0 + 30 * MIN)
    building(stage, clock, T0 + 35 * MIN, T0 + HOUR + 5 * MIN, devices=("main_water", "w_101"))
    # grace: twice the slowest poll (w_101, 5 s): 10 s
    out = stage.tick(T0 + HOUR + 10 * MIN)
    assert values(out, "b1_water", "consumption_hour") == {T0: pytest.approx(10.0)}
    assert values(out, "b1_water", "estimated_hour") == {T0: 1}
    # a partial sum of sub-meters would read as a loss: no loss rather than a false one
    assert values(out, "b1_water", "loss_rate_hour") == {}
    assert values(out, "b1_water", "loss_hour") == {}
    with EnergyReader(tmp_path / "data") as reader:
        assert reader.group_rollups("hour")[0].missing == ["w_102.total_volume"]
    late = building(stage, clock, T0 + HOUR + 15 * MIN, T0 + HOUR + 15 * MIN, devices=("w_102",))
    assert values(late, "b1_water", "consumption_hour") == {}  # closed; not revised


def test_a_group_without_a_master_is_the_sum_of_its_members(tmp_path):
    clock = Clock()
    stage, _ = open_stage(site(tmp_path), tmp_path / "data", clock)
    out = []
    for i in range(13):
        out += stage.process(poll("em_101", T0 + i * 5 * MIN, energy_import=50 + 2.5 * i))
    assert values(out, "tenant_101", "consumption_hour") == {T0: pytest.approx(30.0)}
    assert values(out, "tenant_101", "loss_hour") == {}


def test_a_group_periods_meters_that_report_after_a_restart_complete_it(tmp_path):
    config = site(tmp_path)
    clock = Clock()
    stage, _ = open_stage(config, tmp_path / "data", clock)
    building(stage, clock, T0, T0 + 55 * MIN)
    building(stage, clock, T0 + HOUR, T0 + HOUR, devices=("main_water", "w_101"))
    stage.close()

    again, opened = open_stage(config, tmp_path / "data", clock)
    assert values(opened, "b1_water", "loss_hour") == {}
    out = building(again, clock, T0 + HOUR, T0 + HOUR, devices=("w_102",))
    assert values(out, "b1_water", "loss_rate_hour") == {T0: pytest.approx(0.1)}


def test_a_group_meter_that_is_not_a_meter_is_skipped_without_stopping_the_stage(tmp_path):
    config = site(tmp_path)
    bad = MeterGroup(id="b2_water", commodity="water", master="nowhere",
                     members=["w_101", "main_water.flow_rate"])
    energy = config.energy.model_copy(update={"groups": [*config.energy.groups, bad]})
    clock = Clock()
    stage, _ = open_stage(config.model_copy(update={"energy": energy}), tmp_path / "data", clock)
    out = building(stage, clock, T0, T0 + HOUR)
    assert values(out, "b2_water", "consumption_hour") == {T0: pytest.approx(4.0)}  # w_101 alone
