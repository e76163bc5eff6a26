"""A small site built in code for the rule engine tests, and helpers to read its outputs.

Not tests itself: the test_rule_engine_* files import it. Time is a number the test
moves (`Clock`), never the wall clock.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.batch import Batch, Event, Quality
from gateway.config.models import Device, Profile, SiteConfig, SiteInfo
from gateway.config.rule_models import MaintenanceTask, Rule, RuleFile, RulesConfig, SlaConfig
from rules.engine.engine import RuleEngine

T0 = datetime(2026, 11, 23, 2, 0, tzinfo=UTC).timestamp()  # 10:00 in Shanghai
MIN, HOUR, DAY = 60.0, 3600.0, 86400.0

POINTS = {
    "outlet_pressure": {"address": 0, "type": "float32", "unit": "MPa"},
    "running": {"address": 2},
    "fault": {"address": 3},
    "command": {"address": 4},
    "status": {"address": 5},
    "state": {"address": 6},
    "level": {"address": 7},
    "kwh": {"address": 8, "type": "uint32"},
}


class Clock:
    """The engine's clock, moved by the test."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def site(rules: Iterable[dict[str, Any]] = (), *, site_rules: Iterable[dict[str, Any]] = (),
         maintenance: Iterable[dict[str, Any]] = (), profile_maintenance: Iterable[dict[str, Any]] = (),
         devices: Iterable[str] = ("pump_1",), sla: dict[str, Any] | None = None,
         engine: dict[str, Any] | None = None) -> SiteConfig:
    """A site of booster pumps: `rules` in their profile, `site_rules` in a rule file."""
    profile = Profile.model_validate({
        "id": "booster_pump", "name": "booster pump", "system": "water_supply",
        "points": POINTS, "rules": [Rule.model_validate(r) for r in rules],
        "maintenance": [MaintenanceTask.model_validate(m) for m in profile_maintenance],
    })
    return SiteConfig(
        site=SiteInfo(id="test_site", name="测试小区"),
        sla=SlaConfig.model_validate(sla or {}),
        rules=RulesConfig.model_validate(engine or {}),
        profiles={"booster_pump": profile},
        devices=[
            Device.model_validate({"id": d, "name": f"{d}号泵", "profile": "booster_pump",
                                   "connection": {"host": "127.0.0.1"}})
            for d in devices
        ],
        rule_files=[RuleFile(rules=[Rule.model_validate(r) for r in site_rules],
                             maintenance=[MaintenanceTask.model_validate(m) for m in maintenance],
                             source="rules/site.yaml")],
    )


def open_engine(config: SiteConfig, data_dir: Path, clock: Clock) -> tuple[RuleEngine, list]:
    engine = RuleEngine(config, data_dir, clock=clock)
    return engine, engine.open()


def poll(device: str, ts: float, **values: Any) -> Batch:
    """A good poll of some points."""
    return Batch(device, ts, tuple(values), list(values.values()))


def failed(device: str, ts: float, *points: str) -> Batch:
    return Batch.failed(device, ts, points, Quality.COMM_FAILURE)


def events_of(outputs: Iterable[Any], kind: str) -> list[Event]:
    return [o for o in outputs if isinstance(o, Event) and o.type == kind]


def transitions(outputs: Iterable[Any]) -> list[tuple[str, str]]:
    """(alarm, transition) of each alarm event, in order."""
    return [(e.body["alarm"], e.body["transition"]) for e in events_of(outputs, "alarm_event")]


def kinds(outputs: Iterable[Any]) -> list[str]:
    """The transitions alone, for a test about one alarm."""
    return [t for _, t in transitions(outputs)]


def states(outputs: Iterable[Any]) -> dict[str, str]:
    """The last published state of each alarm."""
    return {e.body["alarm"]: e.body["state"] for e in events_of(outputs, "alarm_state")}


def ticket_events(outputs: Iterable[Any]) -> list[str]:
    return [e.body["event"] for e in events_of(outputs, "ticket_event")]


def batches(outputs: Iterable[Any]) -> list[Batch]:
    return [o for o in outputs if isinstance(o, Batch)]
