"""Rules and the energy stage: the points it produces are points rules may read, groups
and manual meters are devices site rules may name, and the energy configuration brings
its own rules, a loss rate above its threshold for N days and a leak at night, which
the rule engine raises from what the energy stage really puts out."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from config_site_files import errors_of

from gateway.batch import Batch, Event
from gateway.config.loader import load_site
from gateway.config.models import SiteConfig
from gateway.edge import EdgeStages
from gateway.energy.stage import EnergyStage
from rules.compile import DAY, ENERGY_ORIGIN, LATE_GRACE, compile_rules, loss_on_delay
from rules.engine.engine import RuleEngine

HOUR = 3600.0
# 2026-10-01 00:00 in Shanghai
T0 = datetime(2026, 9, 30, 16, 0, tzinfo=UTC).timestamp()

WATER = {
    "name": "水表", "system": "water_supply",
    "points": {
        "total_volume": {"table": "input", "address": 0, "type": "uint32", "scale": 0.01,
                         "unit": "m³", "counter": True},
        "flow_rate": {"table": "input", "address": 2, "scale": 0.01, "unit": "m³/h"},
    },
}
POWER = {
    "name": "电表", "system": "power",
    "points": {
        "energy_import": {"address": 0, "type": "float32", "unit": "kWh", "counter": True},
        "voltage": {"address": 2, "type": "float32", "unit": "V"},
    },
}
DEVICES = [
    {"id": "water_main", "name": "1号楼总水表", "profile": "water"},
    {"id": "water_101", "profile": "water", "meter": {"household": "1-1-101",
                                                      "night_flow_threshold": 0.02}},
    {"id": "water_102", "profile": "water", "meter": {"household": "1-1-102"}},
    {"id": "power_main", "profile": "power"},
    {"id": "power_light", "profile": "power"},
]
ENERGY = {
    "night_flow_threshold": 0.05,
    "groups": [
        {"id": "b1_water", "name": "1号楼用水", "commodity": "water", "master": "water_main",
         "members": ["water_101", "water_102"], "loss_threshold": 0.08, "loss_days": 3},
        {"id": "b1_power", "name": "1号楼用电", "commodity": "electricity",
         "master": "power_main", "members": ["power_light"], "loss_threshold": 0.1,
         "loss_days": 1},
        {"id": "tenant_101", "commodity": "water", "kind": "tenant", "members": ["water_101"]},
    ],
    "manual_meters": [
        {"id": "water_201", "commodity": "water", "unit": "m³", "household": "2-1-201"},
    ],
}


def write(root: Path, *, water: dict | None = None, energy: dict | None = None,
          devices: list[dict] | None = None, site_rules: list[dict] | None = None) -> Path:
    """The site as YAML files, as an engineer writes them."""
    (root / "profiles").mkdir(parents=True, exist_ok=True)
    (root / "devices").mkdir(exist_ok=True)
    for name, profile in (("water", water or WATER), ("power", POWER)):
        (root / "profiles" / f"{name}.yaml").write_text(yaml.safe_dump(profile, allow_unicode=True),
                                                        encoding="utf-8")
    devs = [{**d, "connection": {"host": "127.0.0.1"}} for d in (devices or DEVICES)]
    (root / "devices" / "meters.yaml").write_text(yaml.safe_dump({"devices": devs}, allow_unicode=True),
                                                  encoding="utf-8")
    if site_rules is not None:
        (root / "rules").mkdir(exist_ok=True)
        (root / "rules" / "site.yaml").write_text(yaml.safe_dump({"rules": site_rules}, allow_unicode=True),
                                                  encoding="utf-8")
    body = {"site": {"id": "test_site", "name": "测试小区", "timezone": "Asia/Shanghai"},
            "data_dir": str(root / "data"), "energy": ENERGY if energy is None else energy}
    (root / "site.yaml").write_text(yaml.safe_dump(body, allow_unicode=True), encoding="utf-8")
    return root / "site.yaml"


def config(root: Path, **kwargs: Any) -> SiteConfig:
    return load_site(write(root, **kwargs))


def generated(site: SiteConfig) -> dict[str, Any]:
    return {r.id: r for r in compile_rules(site).rules if r.origin == ENERGY_ORIGIN}


# --- what rules may read -------------------------------------------------------------------


def test_a_profile_rule_may_read_its_counters_rollups_and_night_flow(tmp_path: Path) -> None:
    water = {**WATER, "rules": [
        {"id": "big_day", "when": "total_volume_day > 50", "alarm": {"severity": "warning"}},
        {"id": "leaky", "when": "total_volume_night_flow > 0.1 and total_volume_day_estimated == 0",
         "alarm": {"severity": "minor", "message": "夜间 {total_volume_night_flow:.2f}"}},
    ]}
    compiled = compile_rules(config(tmp_path, water=water))

    assert {"water_main.big_day", "water_101.leaky"} <= {r.id for r in compiled.rules}
    assert compiled.issues == []


def test_a_misspelt_energy_point_is_refused_with_a_suggestion(tmp_path: Path) -> None:
    water = {**WATER, "rules": [{"id": "big", "when": "total_volume_dya > 50",
                                 "alarm": {"severity": "warning"}}]}
    [error] = errors_of(write(tmp_path, water=water))

    assert "unknown point 'total_volume_dya'; did you mean total_volume_day" in error


def test_a_site_rule_may_name_groups_and_manual_meters_as_devices(tmp_path: Path) -> None:
    rules = [
        {"id": "heavy_loss", "when": "b1_water.loss_day > 5 and b1_water.loss_rate_day > 0.2",
         "alarm": {"severity": "major", "message": "损耗 {loss_day:.1f}"}},
        {"id": "big_month", "when": "water_201.reading_month > 30",
         "alarm": {"severity": "warning", "message": "本月 {reading_month}"}},
        {"id": "tenant_day", "when": "tenant_101.consumption_day > 2",
         "alarm": {"severity": "warning"}},
    ]
    compiled = compile_rules(config(tmp_path, site_rules=rules))

    by_id = {r.id: r for r in compiled.rules}
    assert by_id["b1_water.heavy_loss"].device == "b1_water"
    assert by_id["water_201.big_month"].inputs == {"water_201.reading_month"}
    assert "tenant_101.tenant_day" in by_id


def test_a_sum_group_has_no_loss_points(tmp_path: Path) -> None:
    rules = [{"id": "lost", "when": "tenant_101.loss_rate_day > 0.1", "alarm": {"severity": "minor"}}]
    [error] = errors_of(write(tmp_path, site_rules=rules))

    assert "unknown point 'tenant_101.loss_rate_day'" in error


def test_a_derived_point_may_not_take_an_energy_points_name(tmp_path: Path) -> None:
    water = {**WATER, "rules": [{"id": "total_volume_day", "derive": "total_volume * 2"}]}
    [error] = errors_of(write(tmp_path, water=water))

    assert error.endswith("rules[0].id: 'total_volume_day' is a point the energy stage adds "
                          "to this profile's meters; a derived point needs its own name")


def test_a_group_has_no_maintenance_plan(tmp_path: Path) -> None:
    site = write(tmp_path)
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "plans.yaml").write_text(
        "maintenance:\n  - {task: check, device: b1_water, every_months: 1}\n", encoding="utf-8")
    [error] = errors_of(site)

    assert error.endswith("maintenance[0].device: b1_water is a meter group, not equipment: "
                          "it has nothing to maintain")


# --- the generated rules ---------------------------------------------------------------------


def test_each_group_with_a_master_and_members_gets_a_loss_rule(tmp_path: Path) -> None:
    rules = generated(config(tmp_path))

    water = rules["b1_water.loss_rate"]
    assert (water.device, water.scope) == ("b1_water", None)
    assert water.inputs == {"b1_water.loss_rate_day"}
    assert water.rule.on_delay == 3 * DAY + LATE_GRACE
    assert water.rule.alarm.severity == "minor"
    ticket = water.rule.ticket
    assert (ticket.category, ticket.priority, ticket.fault) == ("water", "normal", "loss")
    power = rules["b1_power.loss_rate"]
    assert power.rule.ticket.category == "power" and power.rule.on_delay == DAY + LATE_GRACE
    assert "tenant_101.loss_rate" not in rules  # a sum has no loss


def test_a_group_may_keep_its_loss_without_an_alarm(tmp_path: Path) -> None:
    energy = {**ENERGY, "groups": [{**ENERGY["groups"][1], "loss_alarm": False}]}

    assert "b1_power.loss_rate" not in generated(config(tmp_path, energy=energy))


def test_each_water_meter_gets_a_night_leak_rule_with_its_threshold(tmp_path: Path) -> None:
    rules = generated(config(tmp_path))

    assert {r for r in rules if r.endswith(".night_leak")} == {
        "water_main.night_leak", "water_101.night_leak", "water_102.night_leak"}
    main, household = rules["water_main.night_leak"], rules["water_101.night_leak"]
    assert main.when.text == "`total_volume_night_flow` > 0.05"  # the site's threshold
    assert household.when.text == "`total_volume_night_flow` > 0.02"  # its own
    assert (main.scope, main.inputs) == ("water_main", {"water_main.total_volume_night_flow"})
    assert main.rule.alarm.severity == "major" and "疑似漏水" in main.rule.alarm.message
    assert (main.rule.ticket.category, main.rule.ticket.fault) == ("water", "night_leak")


def test_a_written_rule_with_a_generated_id_runs_instead(tmp_path: Path) -> None:
    water = {**WATER, "rules": [{"id": "night_leak", "when": "flow_rate > 1",
                                 "alarm": {"severity": "minor"}}]}
    compiled = compile_rules(config(tmp_path, water=water))

    leak = {r.id: r for r in compiled.rules}["water_main.night_leak"]
    assert leak.origin != ENERGY_ORIGIN and leak.when.text == "flow_rate > 1"
    assert any(line.startswith("water_main.night_leak: the written rule") for line in compiled.replaced)
    assert compiled.issues == []


def test_a_disabled_water_meter_gets_no_night_rule(tmp_path: Path) -> None:
    devices = [*DEVICES[:2], {**DEVICES[2], "enabled": False}, *DEVICES[3:]]

    assert "water_102.night_leak" not in generated(config(tmp_path, devices=devices))


def test_the_loss_delay_waits_for_the_last_days_value() -> None:
    assert loss_on_delay(1) == DAY + LATE_GRACE
    assert loss_on_delay(3) == 3 * DAY + LATE_GRACE


# --- through the energy stage and the rule engine ------------------------------------------


class Site:
    """The energy stage and the rule engine of one site, fed polls at given times: the
    stage's outputs go to the engine as the daemon's pipeline sends them."""

    def __init__(self, config: SiteConfig, data_dir: Path) -> None:
        self.now = T0
        self.stage = EnergyStage(config, data_dir, clock=lambda: self.now)
        self.engine = RuleEngine(config, data_dir, clock=lambda: self.now)
        self.out: list[Any] = []
        self.engine.open()
        self._rules(self.stage.open())

    def _rules(self, items: list[Any]) -> None:
        for item in items:
            self.out.append(item)
            if isinstance(item, Batch):
                self.out += self.engine.process(item)

    def poll(self, device: str, ts: float, **values: float) -> None:
        self.now = ts
        self._rules(self.stage.process(Batch(device, ts, tuple(values), list(values.values()))))

    def tick(self, ts: float) -> None:
        self.now = ts
        self._rules(self.stage.tick(ts))
        self.out += self.engine.tick(ts)

    def close(self) -> None:
        self.stage.close()
        self.engine.close()

    def raised(self, alarm: str) -> list[float]:
        """When the alarm was raised (its events' times)."""
        return [e.ts for e in self.out if isinstance(e, Event) and e.type == "alarm_event"
                and e.body["alarm"] == alarm and e.body["transition"] == "raised"]

    def tickets(self) -> list[dict[str, Any]]:
        return [e.body for e in self.out if isinstance(e, Event) and e.type == "ticket_state"]


def run_building(site: Site, days: float, *, leak_from: float | None = None,
                 leak: float = 0.5, step: float = 15 * 60) -> None:
    """Polls of the building's water meters every `step`: each household draws by day
    and a little at night, the main counts both plus 2 % (the common area) and, from
    `leak_from`, a leak of `leak` m³/h only it sees."""
    volumes = {"water_main": 5_000.0, "water_101": 100.0, "water_102": 200.0}
    t = T0
    while t <= T0 + days * DAY:
        hour = datetime.fromtimestamp(t, UTC).hour + 8  # Shanghai
        draw = 0.4 if 6 <= hour % 24 <= 22 else 0.01  # m³/h per household
        households = 2 * draw * step / HOUR
        volumes["water_101"] += households / 2
        volumes["water_102"] += households / 2
        extra = leak * step / HOUR if leak_from is not None and t > leak_from else 0.0
        volumes["water_main"] += households * 1.02 + extra
        for device in ("water_main", "water_101", "water_102"):
            site.poll(device, t, total_volume=round(volumes[device], 2))
        site.tick(t + 1)
        t += step


@pytest.fixture
def building(tmp_path: Path):
    energy = {**ENERGY, "groups": ENERGY["groups"][:1], "manual_meters": []}
    devices = [{**d, "meter": {"night_flow_threshold": 0.2}} for d in DEVICES[:3]]
    site = Site(config(tmp_path / "config", energy=energy, devices=devices), tmp_path / "data")
    yield site
    site.close()


def test_a_leak_raises_the_loss_alarm_and_a_ticket_after_three_days(building: Site) -> None:
    run_building(building, 5.2, leak_from=T0)

    [raised] = building.raised("b1_water.loss_rate")
    # days 1, 2 and 3 lost water; day 3's value arrives after its midnight (T0 + 3 days)
    assert T0 + 3 * DAY <= raised <= T0 + 3 * DAY + LATE_GRACE + 15 * 60
    [ticket] = [t for t in building.tickets() if t["fault"] == "loss"][:1]
    assert (ticket["device"], ticket["category"], ticket["priority"]) == ("b1_water", "water", "normal")
    alarm = building.engine.alarm("b1_water.loss_rate")
    assert alarm["severity"] == "minor" and "损耗率" in alarm["message"] and "%" in alarm["message"]


def test_two_bad_days_raise_nothing(building: Site) -> None:
    run_building(building, 5.2, leak_from=T0 + 3 * DAY)  # days 4 and 5 lose water

    assert building.raised("b1_water.loss_rate") == []


def test_a_building_without_a_leak_raises_nothing(building: Site) -> None:
    run_building(building, 4.2)

    assert building.raised("b1_water.loss_rate") == []
    assert building.raised("water_main.night_leak") == []


def test_a_leak_shows_as_night_flow_on_the_main_only(building: Site) -> None:
    run_building(building, 1.5, leak_from=T0)

    [raised] = building.raised("water_main.night_leak")
    assert T0 + 2 * HOUR <= raised <= T0 + DAY  # the first night's window, 02:00-04:00
    assert building.raised("water_101.night_leak") == []
    alarm = building.engine.alarm("water_main.night_leak")
    assert alarm["severity"] == "major" and alarm["message"].startswith("夜间最小流量 0.5")
    assert any(t["fault"] == "night_leak" and t["device"] == "water_main" for t in building.tickets())


def test_a_night_leak_ticket_starts_its_clocks_when_the_night_is_measured(building: Site) -> None:
    """The night's minimum is stamped at 02:00 and known at 04:00: the ticket's arrival
    clock runs from 04:00, not from 02:00 (it would be breached and escalated at once)."""
    run_building(building, 1.0, leak_from=T0)

    def ticket_events(kind: str) -> list[Event]:
        return [e for e in building.out if isinstance(e, Event) and e.type == "ticket_event"
                and e.device == "water_main" and e.body["event"] == kind]

    [opened] = ticket_events("opened")
    assert opened.ts >= T0 + 4 * HOUR  # the window's end
    assert all(e.ts >= opened.ts + 30 * 60 for e in ticket_events("sla_breached"))
    assert building.raised("water_main.sla_night_leak") == [] or \
        min(building.raised("water_main.sla_night_leak")) >= opened.ts + 30 * 60


# --- the edge stages in the daemon: start and stop -------------------------------------------


async def test_the_edge_starts_after_a_night_window_ended_while_it_was_down(tmp_path: Path) -> None:
    """Readings inside the night window, none after it, a restart after it ended: the night
    flow is measured at start and evaluated by an engine that is already open."""
    energy = {**ENERGY, "groups": ENERGY["groups"][:1], "manual_meters": []}
    devices = [{**d, "meter": {"night_flow_threshold": 0.2}} for d in DEVICES[:3]]
    site = config(tmp_path / "config", energy=energy, devices=devices)
    now = [T0]
    edge = EdgeStages(site, tmp_path / "data", clock=lambda: now[0])
    await edge.start(lambda items: None)
    volume = 100.0
    for i in range(8):  # 02:00 to 03:45 local, a leak of 2 m³/h
        now[0] = t = T0 + 2 * HOUR + i * 900
        volume += 0.5
        for device in ("water_main", "water_101", "water_102"):
            edge.process(Batch(device, t, ("total_volume",), [volume]))
    await edge.stop()

    now[0] = T0 + 6 * HOUR
    restarted = EdgeStages(site, tmp_path / "data", clock=lambda: now[0])
    out: list[Any] = []
    await restarted.start(out.extend)
    try:
        assert any(isinstance(i, Batch) and i.points == ("total_volume_night_flow",) for i in out)
        assert restarted.rules.alarm("water_main.night_leak")["active"] is True
    finally:
        await restarted.stop()


async def test_the_edge_closes_the_engine_when_the_energy_stage_fails_to_close(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    edge = EdgeStages(config(tmp_path / "config"), tmp_path / "data", clock=lambda: T0)
    await edge.start(lambda items: None)

    def broken() -> None:
        raise RuntimeError("a bug while closing")

    monkeypatch.setattr(edge.energy, "close", broken)
    await edge.stop()  # logged, not raised
    assert edge.rules._stores is None  # saved and closed all the same
