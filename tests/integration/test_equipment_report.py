"""The equipment ledger end to end: the example site served by the simulator over real
Modbus TCP, the gateway in process with the equipment stage wired as the daemon wires it
(a pipeline listener, and its tick on a timer), a pump trip played by the simulator; then
the day closes, its KPIs reach a real InfluxDB, and the monthly report is built from the
data dir alone.

The simulator's clock stands still (tick=3600) so only the fault changes the readings;
the gateway runs on wall-clock time. The stage's clock is the wall clock until the test
moves it past local midnight, which is how the day closes without waiting for it.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import services

from gateway.batch import Event
from gateway.config.loader import load_site
from gateway.config.models import InfluxSinkConfig, SiteConfig
from gateway.daemon import Gateway
from gateway.energy.periods import Calendar
from gateway.equipment.document import build_document
from gateway.equipment.html import render_html
from gateway.equipment.report import build_report

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
from services import free_port  # noqa: E402
from simsite import SimulatedSite  # noqa: E402

pytestmark = pytest.mark.integration

WAIT = 30.0  # a guard against hanging, not a measurement
MORNING = datetime(2025, 6, 2, 8, 0, tzinfo=ZoneInfo("Asia/Shanghai")).timestamp()
DEVICES = {"pump_b1_1", "sump_b1_1", "lift_b1_1", "meter_b1_main"}


def equipment_site(data_dir: Path, influx_url: str, db: str) -> SiteConfig:
    """config/site.yaml's Modbus plant on free ports, polled fast, readings to InfluxDB 1.x;
    the other devices disabled, as a site engineer would."""
    config = load_site(ROOT / "config" / "site.yaml")
    devices = [
        d.model_copy(update={
            "connection": d.connection.model_copy(update={"port": free_port(), "timeout": 0.3}),
            "poll_interval": 0.2, "poll_groups": {g: 0.2 for g in d.poll_groups},
        }) if d.id in DEVICES else d.model_copy(update={"enabled": False})
        for d in config.devices
    ]
    influx = InfluxSinkConfig(type="influxdb", name="influx", url=influx_url, api="v1", database=db,
                              flush_interval=0.2)
    return config.model_copy(update={
        "devices": devices, "data_dir": data_dir, "sinks": [influx],
        "site": config.site.model_copy(update={"id": f"e{uuid.uuid4().hex[:8]}"}),
        "outbox": config.outbox.model_copy(update={"flush_interval": 0.05}),
    })


async def until(condition: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"waited {WAIT:.0f} s for {what}")


@pytest.mark.timeout(120)
async def test_a_pump_trip_reaches_the_ledger_the_daily_kpis_influxdb_and_the_monthly_report(
    tmp_path: Path, influxdb1: Any
) -> None:
    db = f"eq_{uuid.uuid4().hex[:10]}"
    services.influx1_create_db(influxdb1, db)
    config = equipment_site(tmp_path / "data", influxdb1.url, db)
    sim = SimulatedSite(config, seed=11, tick=3600, start=MORNING)
    await sim.start()
    offset = [0.0]

    def clock() -> float:
        return time.time() + offset[0]

    gateway = Gateway(config)
    stage = gateway.edge.equipment  # the daemon's own ledger (EdgeStages runs it)
    stage.clock = clock  # only the ledger's day moves: the rules keep the wall clock
    sent: list[Any] = []
    gateway.pipeline.listeners.append(sent.append)  # every event the gateway stores

    def entries(kind: str, device: str | None = None) -> list[Any]:
        assert stage._store is not None
        return stage._store.entries(kinds=(kind,), device=device)

    await gateway.start()
    try:
        await until(lambda: {e.device for e in entries("commissioned")} >= DEVICES, "first good reads")
        await sim.set_fault("pump_b1_1", "pump_trip")
        [raised] = await until(lambda: entries("alarm_raised", "pump_b1_1"), "the trip in the ledger")
        assert raised.ref == "pump_b1_1.pump_trip" and raised.body["severity"] == "major"
        # one of the building's two pumps out: its intact rate (50 %) is below 95 %
        group = await until(lambda: gateway.rules.alarms(active_only=True) and next(
            (a for a in gateway.rules.alarms(active_only=True) if a["alarm"] == "b1_pumps.intact_rate"), None),
            "the intact-rate alarm")
        assert group["device"] == "b1_pumps" and "50.0%" in group["message"]
        await until(lambda: entries("ticket_opened", "pump_b1_1"), "the repair ticket in the ledger")
        await asyncio.sleep(1.0)  # the pump stays tripped a moment
        await sim.clear("pump_b1_1")  # reset at the panel: the drive restarts
        sim.advance(1.0)  # a simulated minute, in which the drive clears its trip code
        await until(lambda: entries("alarm_cleared", "pump_b1_1"), "the trip cleared")
        trip_day = Calendar(config.site.timezone).start(raised.ts, "day")
        # the day closes: the stage's clock jumps past midnight
        offset[0] = Calendar(config.site.timezone).next(trip_day, "day") + 5 - time.time()
        kpi = await until(lambda: next((e for e in sent if isinstance(e, Event) and e.type == "kpi"
                                        and e.body["period"] == "day"), None), "the day's KPIs")
        await asyncio.sleep(1.0)  # the sink writes what the day closed
    finally:
        await gateway.stop(budget=2.0)
        await sim.stop()

    pump = kpi.body["devices"]["pump_b1_1"]
    assert pump["failures"] == 1 and pump["mttr_h"] is not None and pump["mttr_h"] > 0
    assert 0 < pump["availability"] < 1 and pump["down_h"]["fault"] > 0
    assert next(g for g in kpi.body["groups"] if g["group"] == "b1_pumps")["rate"] < 1
    assert kpi.body["service"]["tickets"] >= 1

    rows = services.influx1_query(influxdb1, db, "SELECT value FROM readings WHERE "
                                  "point = 'availability_day' AND device = 'pump_b1_1'")
    [series] = rows["results"][0]["series"]
    [(_, value)] = series["values"]
    assert value == pytest.approx(pump["availability"], abs=1e-6)

    month = Calendar(config.site.timezone).month(raised.ts)
    report = build_report(config, gateway.data_dir, month, clock())
    device = report.kpis.devices["pump_b1_1"]
    [failure] = device.failures
    assert failure.start == raised.ts and failure.end is not None
    assert [o.reasons for o in device.outages] == [["fault"]]
    assert device.outages[0].alarms == ["水泵故障停机 pump trip"]
    assert any(t.device == "pump_b1_1" and t.fault == "pump_trip" for t in report.service.corrective)
    assert report.alarms["water_supply"]["major"] >= 1
    day = next(d for d in report.days if d.start == trip_day)
    assert round(day.site.availability, 6) == kpi.body["overall"]["availability"]
    page = render_html(build_document(report, "zh"))
    assert "水泵故障停机 pump trip" in page and "1号楼生活水泵 1#" in page and "设备与服务月报" in page
