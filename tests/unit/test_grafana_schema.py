"""config/grafana/site-overview.json, read as Grafana reads it: unique panel ids on a grid
that does not overlap, every query panel's targets raw InfluxQL on the `${DS_INFLUXDB}`
variable, and every measurement, tag, field, point and system its queries name one the
gateway really writes: the tags and fields come from lines the InfluxDB sink's encoder
makes, the points from the profiles, the energy stage's names and a day the equipment
stage closes. (tests/integration/test_grafana_dashboard.py runs the queries.)"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from test_equipment_intact import example_site
from test_equipment_kpi import D0, LIFT, Script

from gateway.batch import Batch, Kind, Quality, Record
from gateway.catalog import Catalog
from gateway.config.models import InfluxSinkConfig
from gateway.energy.meters import build_counters
from gateway.energy.periods import Calendar
from gateway.energy.points import group_points, meter_points
from gateway.sinks.lineproto import LineEncoder

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "config" / "grafana" / "site-overview.json"
DS = "${DS_INFLUXDB}"
MACROS = {"timeFilter", "__interval"}  # what Grafana itself fills in
LINE = re.compile(r"^(?P<m>(?:[^,\\ ]|\\.)+),(?P<tags>(?:[^ \\]|\\.)+) (?P<fields>.+) (?P<ts>\d+)$")


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def all_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    panels = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels += panel.get("panels", [])  # a collapsed row holds its panels
    return panels


def queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, InfluxQL) of every panel target and query variable."""
    out = [(f"panel {p['title']!r} target {t['refId']}", t["query"])
           for p in all_panels(dashboard) for t in p.get("targets", [])]
    out += [(f"variable {v['name']}", v["query"]) for v in dashboard["templating"]["list"]
            if v["type"] == "query"]
    return out


@pytest.fixture(scope="module")
def written() -> dict[str, set[str]]:
    """Measurement, tag keys and field keys of the lines the InfluxDB sink writes for
    every device of the example site: a number with its unit, a text, a failed read."""
    config = example_site()
    sink = InfluxSinkConfig(type="influxdb", name="influx", url="http://x", api="v1", database="d")
    encoder = LineEncoder(Catalog.from_config(config), sink.measurement, sink.unit_as)
    records = []
    for n, device in enumerate(config.devices):
        profile = config.profiles[device.profile]
        unit = next((p for p, spec in profile.points.items() if getattr(spec, "unit", None)), "x")
        records.append(Record(n, f"e:{n}", Kind.READING, Batch(
            device.id, D0, (unit, "text", "failed"), [1.5, "自动", None],
            [Quality.GOOD, Quality.GOOD, Quality.COMM_FAILURE])))
    schema: dict[str, set[str]] = {"measurements": set(), "tags": set(), "fields": set()}
    for line in encoder.encode(records):
        match = LINE.match(line)
        assert match, line
        schema["measurements"].add(match["m"])
        schema["tags"] |= {pair.split("=", 1)[0] for pair in re.split(r"(?<!\\),", match["tags"])}
        schema["fields"] |= {pair.split("=", 1)[0] for pair in re.split(r"(?<!\\),", match["fields"])}
    return schema


@pytest.fixture(scope="module")
def points(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """Every point the gateway writes for the example site: the profiles' points, the
    energy stage's, and what the equipment stage sends over a day it closes."""
    config = example_site()
    names = {p for profile in config.profiles.values() for p in profile.points}
    for device_points in build_counters(config, Calendar(config.site.timezone)).values():
        for counter in device_points.values():
            names.update(meter_points(counter.point, counter.commodity or ""))
    names.update(group_points(True, True))
    s = Script(config, tmp_path_factory.mktemp("equipment"), D0).start()
    s.at(D0 + 10).online(LIFT, True)
    s.at(D0 + 20).alarm(LIFT, "out_of_service", "major", True)
    s.at(D0 + 30).alarm(LIFT, "out_of_service", "major", False)
    s.at(D0 + 86400 + 1).tick()
    names.update(p for b in s.out if isinstance(b, Batch) for p in b.points)
    return names


def test_the_dashboard_is_a_current_grafana_dashboard_on_a_datasource_variable(dashboard) -> None:
    assert dashboard["schemaVersion"] >= 36
    assert dashboard["uid"] and dashboard["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    ds = variables["DS_INFLUXDB"]
    assert (ds["type"], ds["query"]) == ("datasource", "influxdb")
    for name in ("site", "building", "device"):
        variable = variables[name]
        assert variable["type"] == "query" and variable["datasource"]["uid"] == DS, name
        assert variable["query"].startswith("SHOW TAG VALUES"), name
    assert "__inputs" not in dashboard  # the variable names the data source, imported or provisioned


def test_panel_ids_are_unique_and_the_grid_has_no_overlap(dashboard) -> None:
    panels = all_panels(dashboard)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), ids
    cells: dict[tuple[int, int], str] = {}
    for p in panels:
        grid = p["gridPos"]
        assert all(isinstance(grid[k], int) for k in "xywh"), p["title"]
        assert grid["w"] > 0 and grid["h"] > 0 and grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, p["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{p['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = p["title"]


def test_every_panel_queries_the_variables_datasource_in_raw_influxql(dashboard) -> None:
    panels = [p for p in all_panels(dashboard) if p["type"] != "row"]
    assert len(panels) >= 10
    for p in panels:
        assert p["datasource"] == {"type": "influxdb", "uid": DS}, p["title"]
        assert p["targets"], p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == DS and t["rawQuery"] is True, (p["title"], t["refId"])
            assert t["query"].strip().startswith("SELECT"), (p["title"], t["refId"])
            assert "$timeFilter" in t["query"], (p["title"], t["refId"])  # never the whole history


def test_every_variable_a_query_uses_is_defined_or_a_grafana_macro(dashboard) -> None:
    defined = {v["name"] for v in dashboard["templating"]["list"]} | MACROS
    for where, query in queries(dashboard):
        used = set(re.findall(r"\$\{?(\w+)", query))
        assert used <= defined, f"{where}: {used - defined}"


def test_every_measurement_tag_and_field_a_query_names_is_one_the_sink_writes(dashboard, written) -> None:
    assert written["measurements"] == {"readings"}
    assert {"site", "building", "system", "device", "point", "unit"} <= written["tags"]
    assert written["fields"] == {"value", "text", "quality"}
    for where, query in queries(dashboard):
        aliases = set(re.findall(r'\bAS\s+"(\w+)"', query))
        measurements = set(re.findall(r'\bFROM\s+"([^"]+)"', query))
        assert measurements and measurements <= written["measurements"], (where, measurements)
        tags = set(re.findall(r'"(\w+)"\s*(?:=~|!~|=|!=|<>)', query))
        tags |= set(re.findall(r'WITH KEY\s*=\s*"(\w+)"', query))
        for clause in re.findall(r"GROUP BY (.*?)(?:\bfill\(|\)|$)", query):
            tags |= set(re.findall(r'"(\w+)"', clause))
        assert tags - aliases <= written["tags"], (where, tags - aliases - written["tags"])
        fields = set(re.findall(r'\w+\("(\w+)"\)', query)) | set(re.findall(r'SELECT\s+"(\w+)"', query))
        assert fields - aliases <= written["fields"], (where, fields - aliases - written["fields"])


def test_every_point_and_system_a_query_names_is_one_the_gateway_writes(dashboard, points) -> None:
    systems = {profile.system for profile in example_site().profiles.values()}
    named = 0
    for where, query in queries(dashboard):
        for point in re.findall(r""""point"\s*=\s*'([^']+)'""", query):
            named += 1
            assert point in points, f"{where}: no such point {point!r}"
        for pattern in re.findall(r'"point"\s*=~\s*/(.+?)/(?:\s|$)', query):
            named += 1
            assert any(re.search(pattern, p) for p in points), f"{where}: /{pattern}/ matches no point"
        for system in re.findall(r""""system"\s*=\s*'([^']+)'""", query):
            assert system in systems, f"{where}: no such system {system!r}"
    assert named >= 12
    # what the panels are for: status, alarm counts, the day figures
    assert {"online", "equipment_state", "alarms_active_critical", "alarms_raised",
            "availability_day", "intact_rate_day", "intact_target_day", "energy_import_day",
            "total_volume_day", "outlet_pressure"} <= points


def test_the_pump_pressure_panel_warns_at_the_profiles_low_pressure_limit(dashboard) -> None:
    [panel] = [p for p in all_panels(dashboard) if "'outlet_pressure'" in json.dumps(p.get("targets"))]
    steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
    rule = next(r for r in example_site().profiles["booster_pump"].rules if r.id == "low_outlet_pressure")
    limit = float(re.search(r"outlet_pressure < ([\d.]+)", rule.when)[1])  # type: ignore[index]
    assert [s["color"] for s in steps][0] == "red" and steps[1]["value"] == limit
    assert panel["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"] != "off"
