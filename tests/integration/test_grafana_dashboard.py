"""Every query of config/grafana/site-overview.json, run against InfluxDB 1.6 filled the way
a site fills it, returns data: the template variables and each panel target, with
Grafana's macros and variables filled in as Grafana fills them.

What fills it:
- a real Gateway on the simulated site (the pump, the sump pump and the lift over Modbus
  TCP, polled fast) with an InfluxDB v1 sink: pump pressure, `online` and
  `equipment_state`, the alarm counts after the pump trips; then its clock moves past the
  site's midnight, so the equipment stage closes the day and sends `availability_day`
  and the intact rates, as it would at midnight;
- the site's meters read by the real Modbus drivers from a simulator whose clock the
  test moves through yesterday (as tests/integration/test_energy_simsite.py does), their
  readings through the real energy stage, its rollups (`energy_import_day`,
  `total_volume_day`) written by a real InfluxDB sink. A day of the gateway's own polls
  would take a day: its drivers stamp readings with the wall clock.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import structlog
from test_energy_simsite import COUNTERS, STEP, Metered, meters_of_the_example

from gateway.batch import Batch, Kind, Record
from gateway.catalog import Catalog
from gateway.config.loader import load_site
from gateway.config.models import InfluxSinkConfig, SiteConfig
from gateway.daemon import Gateway
from gateway.sinks.influx import InfluxSink

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
from services import free_port, influx1_create_db, influx1_query  # noqa: E402
from simsite import SimulatedSite  # noqa: E402

pytestmark = pytest.mark.integration

DASHBOARD = ROOT / "config" / "grafana" / "site-overview.json"
DEVICES = {"pump_b1_1", "sump_b1_1", "lift_b1_1"}
WAIT = 30.0  # a guard against hanging, not a measurement
INTERVAL = "10s"  # $__interval
# the live simulator's clock stands still (tick=3600) at a morning: only the fault moves it
MORNING = datetime(2025, 6, 2, 8, 0, tzinfo=ZoneInfo("Asia/Shanghai")).timestamp()


class Clock:
    """The gateway's clock: the wall clock, until the test moves it on."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def gateway_site(data_dir: Path, influx_url: str, database: str) -> SiteConfig:
    """config/site.yaml's pumps and lift on free ports, polled fast, into InfluxDB v1; the
    rest disabled, as a site engineer would."""
    config = load_site(ROOT / "config" / "site.yaml")
    devices = [
        device.model_copy(update={
            "connection": device.connection.model_copy(update={"port": free_port(), "timeout": 0.3}),
            "poll_interval": 0.2, "poll_groups": {g: 0.2 for g in device.poll_groups},
        }) if device.id in DEVICES else device.model_copy(update={"enabled": False})
        for device in config.devices
    ]
    sink = InfluxSinkConfig(type="influxdb", name="influx", url=influx_url, api="v1",
                            database=database, flush_interval=0.1)
    return config.model_copy(update={
        "devices": devices, "sinks": [sink], "data_dir": data_dir,
        "outbox": config.outbox.model_copy(update={"flush_interval": 0.05}),
    })


def local_midnight(ts: float, timezone: str, days: int = 0) -> float:
    day = datetime.fromtimestamp(ts, ZoneInfo(timezone)).date() + timedelta(days=days)
    return datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(timezone)).timestamp()


async def write_yesterdays_meters(tmp_path: Path, influxdb1: Any, database: str) -> float:
    """Yesterday of the site's meters, through the energy stage and an InfluxDB sink;
    returns yesterday's start."""
    config = meters_of_the_example(tuple(COUNTERS))
    yesterday = local_midnight(time.time(), config.site.timezone, days=-1)
    metered = Metered(config, tmp_path / "meters", yesterday - STEP)
    await metered.start()
    try:
        await metered.run_until(yesterday + 86400 + STEP)
    finally:
        await metered.stop()
    sink = InfluxSink(InfluxSinkConfig(type="influxdb", name="influx", url=influxdb1.url, api="v1",
                                       database=database), Catalog.from_config(config))
    batches = [b for b in metered.outputs if isinstance(b, Batch)]
    try:
        await sink.send([Record(n, f"m:{n}", Kind.READING, b) for n, b in enumerate(batches, 1)])
    finally:
        await sink.stop()
    assert sink.rejected == 0
    return yesterday


# --- Grafana's side ----------------------------------------------------------------------


def escape_regex(value: str) -> str:
    """As Grafana escapes a variable's value inside an InfluxQL regex."""
    return re.sub(r"[\\^$*+?.()|\[\]{}/]", lambda m: "\\" + m.group(0), value)


def render(query: str, variables: dict[str, dict[str, Any]], chosen: dict[str, list[str] | None],
           time_filter: str) -> str:
    """`query` with the macros and the chosen values (None: All) in, as Grafana sends it."""
    query = query.replace("$timeFilter", time_filter).replace("$__interval", INTERVAL)
    for name in sorted(chosen, key=len, reverse=True):
        values, variable = chosen[name], variables[name]
        if values is None:
            text = variable["allValue"]
        elif len(values) == 1:
            text = escape_regex(values[0])
        else:
            text = "(" + "|".join(escape_regex(v) for v in values) + ")"
        query = re.sub(r"\$\{" + name + r"\}|\$" + name + r"\b", lambda _, t=text: t, query)
    assert "$" not in query.replace("$/", ""), query  # every variable filled in
    return query


class Influx:
    def __init__(self, service: Any, database: str) -> None:
        self.service, self.database = service, database

    def series(self, query: str) -> list[dict[str, Any]]:
        result = influx1_query(self.service, self.database, query)
        return [s for statement in result["results"] for s in statement.get("series", [])]

    def values(self, query: str) -> list[Any]:
        """The non-null values of every series (not the time column)."""
        return [v for s in self.series(query) for row in s["values"] for v in row[1:]
                if v is not None]

    async def until(self, query: str, what: str, ok: Callable[[list[Any]], bool] = bool) -> list[Any]:
        deadline = time.monotonic() + WAIT
        while True:
            values = await asyncio.to_thread(self.values, query)
            if ok(values):
                return values
            assert time.monotonic() < deadline, f"no {what} in InfluxDB after {WAIT} s"
            await asyncio.sleep(0.2)


def tag_values(influx: Influx, query: str) -> list[str]:
    return [row[1] for s in influx.series(query) for row in s["values"]]


Results = dict[str, list[dict[str, Any]]]


def run_dashboard(dashboard: dict[str, Any], influx: Influx, time_filter: str,
                  choose: Callable[[str, list[str]], list[str] | None]) -> tuple[dict[str, list[str]], Results]:
    """Every variable (in order, each with those before it chosen) and every panel
    target; `choose(name, values)` picks a variable's values (None: All). Each must
    return data. Returns each variable's values, and each panel's series by title."""
    variables = {v["name"]: v for v in dashboard["templating"]["list"] if v["type"] == "query"}
    chosen: dict[str, list[str] | None] = {}
    offered: dict[str, list[str]] = {}
    for name, variable in variables.items():
        values = offered[name] = tag_values(influx, render(variable["query"], variables, chosen, time_filter))
        assert values, f"variable {name}: no values"
        chosen[name] = choose(name, values)
    out: dict[str, list[dict[str, Any]]] = {}
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    for panel in panels:
        for target in panel["targets"]:
            query = render(target["query"], variables, chosen, time_filter)
            series = influx.series(query)
            assert series, f"{panel['title']!r} {target['refId']} ({chosen}): no series for\n{query}"
            assert any(v is not None for s in series for row in s["values"] for v in row[1:]), \
                f"{panel['title']!r} {target['refId']} ({chosen}): only nulls for\n{query}"
            out.setdefault(panel["title"], []).extend(series)
    return offered, out


def last(series: list[dict[str, Any]], **tags: str) -> Any:
    [one] = [s for s in series if all(s.get("tags", {}).get(k) == v for k, v in tags.items())]
    return [row[1] for row in one["values"] if row[1] is not None][-1]


def panel(results: Results, starts: str) -> list[dict[str, Any]]:
    [title] = [t for t in results if t.startswith(starts)]
    return results[title]


# --- the test ----------------------------------------------------------------------------


@pytest.mark.timeout(240)
async def test_every_panel_and_variable_of_the_dashboard_returns_data_from_a_running_site(
    tmp_path: Path, influxdb1: Any
) -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    database = f"grafana_{uuid.uuid4().hex[:8]}"
    influx1_create_db(influxdb1, database)
    influx = Influx(influxdb1, database)
    with structlog.testing.capture_logs():
        yesterday = await write_yesterdays_meters(tmp_path, influxdb1, database)

        clock = Clock()
        config = gateway_site(tmp_path / "data", influxdb1.url, database)
        sim = SimulatedSite(config, seed=11, tick=3600, start=MORNING)
        await sim.start()
        gateway = Gateway(config, clock=clock)
        await gateway.start()
        try:
            await influx.until("SELECT last(value) FROM readings WHERE point = 'online' GROUP BY device",
                               "online of every device", lambda v: v == [1.0] * len(DEVICES))
            await sim.set_fault("pump_b1_1", "pump_trip")
            shown = sim.value("pump_b1_1", "outlet_pressure")  # its clock stands still: so does this
            await influx.until("SELECT last(value) FROM readings WHERE point = 'alarms_active_major'",
                               "the pump trip in the alarm counts", lambda v: bool(v) and v[0] >= 1)
            await influx.until("SELECT last(value) FROM readings WHERE point = 'equipment_state' "
                               "AND device = 'pump_b1_1'", "the pump's fault", lambda v: v == [3.0])
            # midnight on site: the equipment stage closes today and sends its figures
            tz = config.site.timezone
            clock.offset = local_midnight(time.time(), tz, days=1) + 5 - time.time()
            await influx.until("SELECT value FROM readings WHERE point = 'intact_rate_day'",
                               "the day's intact rates")
            await influx.until("SELECT value FROM readings WHERE point = 'availability_day' "
                               "AND system = 'elevator'", "the lift's availability")

            start, end = yesterday - 3600, clock() + 3600  # the last two days, as a range
            time_filter = f"time >= {int(start * 1000)}ms and time <= {int(end * 1000)}ms"
            offered, everything = run_dashboard(dashboard, influx, time_filter, lambda name, values: None
                                       if name != "site" else [config.site.id])
            _, one_pump = run_dashboard(dashboard, influx, time_filter, lambda name, values: {
                "site": [config.site.id], "building": values, "device": ["pump_b1_1"]}[name])
        finally:
            await gateway.stop(budget=2.0)
            await sim.stop()

    # what the pickers offer and the panels show is what happened
    assert offered["building"] == ["1号楼"]
    assert set(offered["device"]) == DEVICES | set(COUNTERS)  # equipment, not groups or the site
    state = panel(everything, "Equipment state")
    assert last(state, device="pump_b1_1") == 3  # fault
    assert last(state, device="lift_b1_1") == 0  # up
    assert {s["tags"]["device"] for s in panel(one_pump, "Equipment state")} == {"pump_b1_1"}
    assert last(panel(everything, "Active major alarms")) >= 1
    assert 0 < last(panel(everything, "Elevator availability"), device="lift_b1_1") <= 1
    intact = panel(everything, "Intact rate vs target")
    assert last(intact, device="b1_pumps", point="intact_target_day") == 0.95
    assert 0 <= last(intact, device="b1_pumps", point="intact_rate_day") < 1  # the pump tripped
    for device, counter in COUNTERS.items():
        title = "Water per day" if counter == "total_volume" else "Electricity per day"
        [series] = [s for s in panel(everything, title) if s["tags"]["device"] == device]
        assert series["values"][0][1] > 0, device
    pressures = [row[1] for s in panel(one_pump, "Booster pump outlet pressure") for row in s["values"]]
    assert pressures == pytest.approx([shown] * len(pressures), abs=0.001)  # the simulator's
