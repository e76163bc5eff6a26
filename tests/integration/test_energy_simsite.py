"""The example site's meters over real Modbus: the simulator's counters, read by the real
drivers, through the energy stage into daily consumption, a month's ledger and, with a
leak in the building's main, the loss-rate alarm the rule engine raises.

The simulator's clock only moves when a test advances it (`tick=3600`), by 15 simulated
minutes a step; each reading is stamped with the simulator's time, so a day and a month
are the site's local ones and nothing depends on the wall clock or on timing.
"""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import structlog

from drivers.registry import create_driver
from gateway.batch import Batch, Event
from gateway.config.loader import load_site
from gateway.config.models import SiteConfig
from gateway.energy.ledger import build_ledger
from gateway.energy.reader import EnergyReader
from gateway.energy.stage import EnergyStage
from rules.compile import LATE_GRACE
from rules.engine.engine import RuleEngine

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
from services import free_port  # noqa: E402
from simsite import SimulatedSite  # noqa: E402

pytestmark = pytest.mark.integration

SHANGHAI = ZoneInfo("Asia/Shanghai")
OCT = datetime(2026, 10, 1, tzinfo=SHANGHAI).timestamp()
NOV = datetime(2026, 11, 1, tzinfo=SHANGHAI).timestamp()
DAY = 86400.0
STEP = 900.0  # simulated seconds between two rounds of polls
SPEED = 60.0  # the simulator's default: simulated seconds per real second
SEED = 7
WATER = ("water_b1_main", "water_b1_u1", "water_b1_u2")
POWER = ("meter_b1_main", "meter_b1_lighting")
COUNTERS = {"water_b1_main": "total_volume", "water_b1_u1": "total_volume",
            "water_b1_u2": "total_volume", "meter_b1_main": "energy_import",
            "meter_b1_lighting": "energy_import"}


def meters_of_the_example(only: tuple[str, ...]) -> SiteConfig:
    """config/site.yaml's meters, each on a free port (without the site rule files, which
    name the lift and the fire panel)."""
    config = load_site(ROOT / "config" / "site.yaml")
    devices = [d.model_copy(update={"connection": d.connection.model_copy(
                   update={"port": free_port(), "timeout": 0.5})})
               for d in config.devices if d.id in only]
    return config.model_copy(update={"devices": devices, "rule_files": []})


class Metered:
    """The simulator, the real drivers, the energy stage and the rule engine of one site."""

    def __init__(self, config: SiteConfig, data_dir: Path, start: float) -> None:
        self.config = config
        self.site = SimulatedSite(config, seed=SEED, tick=3600, start=start)
        self.drivers = {d.id: create_driver(d, config.profiles[d.profile]) for d in config.devices}
        now = lambda: self.site.clock.now  # noqa: E731
        self.stage = EnergyStage(config, data_dir, clock=now)
        self.engine = RuleEngine(config, data_dir, clock=now)
        self.outputs: list[Any] = []
        self.truth: dict[str, dict[float, float]] = {d: {} for d in self.drivers}

    async def start(self) -> None:
        await self.site.start()
        self.engine.open()
        self._engine(self.stage.open())

    async def stop(self) -> None:
        for driver in self.drivers.values():
            await driver.stop()
        await self.site.stop()
        self.stage.close()
        self.engine.close()

    def _engine(self, items: list[Any]) -> None:
        """The stage's outputs, as the daemon's pipeline passes them to the rules."""
        for item in items:
            self.outputs.append(item)
            if isinstance(item, Batch):
                self.outputs += self.engine.process(item)

    async def poll(self) -> None:
        """One round: each meter's poll group with its counter (the energy group of the
        electricity meters, as the daemon polls it every minute), stamped with the
        simulator's time."""
        now = self.site.clock.now
        for device, driver in self.drivers.items():
            for group, plan in driver.poll_groups.items():  # type: ignore[attr-defined]
                if COUNTERS[device] not in plan.points:
                    continue
                batch = await driver.read(group)  # type: ignore[call-arg]
                assert batch.quality is None, (device, batch.quality)
                self._engine(self.stage.process(Batch(device, now, batch.points, batch.values)))
            self.truth[device][now] = self.site.value(device, COUNTERS[device])
        self._engine(self.stage.tick(now + 1))
        self.outputs += self.engine.tick(now + 1)

    async def run_until(self, end: float) -> None:
        await self.poll()
        while self.site.clock.now + STEP <= end:
            self.site.advance(STEP / SPEED)
            await self.poll()

    def values(self, device: str, point: str) -> dict[float, float]:
        return {o.ts: o.values[o.points.index(point)] for o in self.outputs
                if isinstance(o, Batch) and o.device == device and point in o.points}

    def raised(self, alarm: str) -> list[float]:
        return [e.ts for e in self.outputs if isinstance(e, Event) and e.type == "alarm_event"
                and e.body["alarm"] == alarm and e.body["transition"] == "raised"]


@pytest.fixture
async def metered(tmp_path: Path, request: pytest.FixtureRequest):
    only = getattr(request, "param", WATER + POWER)
    with structlog.testing.capture_logs():
        site = Metered(meters_of_the_example(only), tmp_path, OCT)
        await site.start()
        yield site
        await site.stop()


async def test_daily_consumption_is_the_simulated_counters_difference(metered: Metered) -> None:
    await metered.run_until(OCT + 2 * DAY + STEP)

    for device, counter in COUNTERS.items():
        days = metered.values(device, f"{counter}_day")
        truth = metered.truth[device]
        assert sorted(days) == [OCT, OCT + DAY], device
        for start, consumption in days.items():
            assert consumption == pytest.approx(truth[start + DAY] - truth[start], rel=1e-6, abs=1e-6), \
                (device, start)
            assert consumption > 0
        assert metered.values(device, f"{counter}_day_estimated") == {OCT: 0, OCT + DAY: 0}


async def test_the_building_main_counts_its_sub_meters_and_a_little_more(metered: Metered) -> None:
    await metered.run_until(OCT + DAY + STEP)

    [(start, rate)] = metered.values("b1_water", "loss_rate_day").items()
    main = metered.values("water_b1_main", "total_volume_day")[start]
    subs = sum(metered.values(d, "total_volume_day")[start] for d in ("water_b1_u1", "water_b1_u2"))
    assert rate == pytest.approx((main - subs) / main, abs=1e-9)
    assert 0.01 < rate < 0.08  # the common area and the pipes: under the alarm's threshold
    assert metered.raised("b1_water.loss_rate") == []


@pytest.mark.parametrize("metered", [WATER], indirect=True)
async def test_a_leak_in_the_main_raises_the_loss_alarm_after_three_days(metered: Metered) -> None:
    await metered.site.set_fault("water_b1_main", "water_leak")
    await metered.run_until(OCT + 4 * DAY + 2 * 3600)

    rates = metered.values("b1_water", "loss_rate_day")
    assert sorted(rates) == [OCT + d * DAY for d in range(4)]
    assert all(rate > 0.2 for rate in rates.values())  # 1.2 m³/h of ~70 m³ a day
    [raised] = metered.raised("b1_water.loss_rate")
    # the third day's value arrives after 3 October ends; the alarm waits for it
    assert OCT + 3 * DAY < raised <= OCT + 3 * DAY + LATE_GRACE + STEP
    alarm = metered.engine.alarm("b1_water.loss_rate")
    assert alarm["severity"] == "minor" and "1号楼用水 损耗率" in alarm["message"]
    tickets = [e.body for e in metered.outputs if isinstance(e, Event) and e.type == "ticket_state"
               and e.body["device"] == "b1_water"]
    assert tickets and {(t["fault"], t["category"]) for t in tickets} == {("loss", "water")}
    # the night minimum of the main carries the leak; its sub-meters do not see it
    main_nights = metered.values("water_b1_main", "total_volume_night_flow")
    unit_nights = metered.values("water_b1_u1", "total_volume_night_flow")
    assert main_nights and min(main_nights.values()) > 1.2
    assert unit_nights and max(unit_nights.values()) < 0.5


@pytest.mark.timeout(300)
async def test_the_months_ledger_matches_the_simulated_counters(metered: Metered) -> None:
    await metered.run_until(NOV + STEP)

    with EnergyReader(metered.stage.data_dir / "energy.db") as reader:
        ledger = build_ledger(metered.config, reader, "2026-10")
    lines = {(m.meter, m.counter): m for m in ledger.meters}
    for device, counter in COUNTERS.items():
        line, truth = lines[(device, counter)], metered.truth[device]
        assert line.opening == pytest.approx(truth[OCT], rel=1e-7), device
        assert line.closing == pytest.approx(truth[NOV], rel=1e-7), device
        assert line.consumption == pytest.approx(truth[NOV] - truth[OCT], rel=1e-6), device
        assert (line.estimated_share, line.flags, line.open_until) == (0.0, {}, None), device
    groups = {g.group: g for g in ledger.groups}
    water = groups["b1_water"]
    main = metered.truth["water_b1_main"][NOV] - metered.truth["water_b1_main"][OCT]
    subs = sum(metered.truth[d][NOV] - metered.truth[d][OCT] for d in ("water_b1_u1", "water_b1_u2"))
    assert water.master_total == pytest.approx(main, rel=1e-6)
    assert water.members_total == pytest.approx(subs, rel=1e-6)
    assert water.loss_rate == pytest.approx((main - subs) / main, rel=1e-6)
    assert groups["b1_power"].members_total == pytest.approx(
        lines[("meter_b1_lighting", "energy_import")].consumption, rel=1e-6)
