"""A small metered site for the energy stage tests, and helpers to read what it outputs.

Not tests itself: the test_energy_* files import it. Time is a number the test moves
(`Clock`), never the wall clock. The site is in Shanghai: a local day starts at 16:00 UTC.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from gateway.batch import Batch, Event
from gateway.config.loader import load_site
from gateway.config.models import SiteConfig
from gateway.energy.stage import EnergyStage

MIN, HOUR, DAY = 60.0, 3600.0, 86400.0
# 2026-11-24 00:00 in Shanghai: a day boundary (and an hour's)
T0 = datetime(2026, 11, 23, 16, 0, tzinfo=UTC).timestamp()

WATER = {
    "id": "water_meter", "name": "水表", "system": "water_supply", "protocol": "modbus",
    "points": {
        "total_volume": {"table": "input", "address": 0, "type": "uint32", "scale": 0.01,
                         "unit": "m³", "counter": True},
        "flow_rate": {"table": "input", "address": 2, "scale": 0.01, "unit": "m³/h"},
    },
}
POWER = {
    "id": "energy_meter", "name": "电表", "system": "power", "protocol": "modbus",
    "points": {
        "energy_import": {"address": 0, "type": "uint32", "scale": 0.1, "unit": "kWh",
                          "counter": {"max_rate": 500}},
        "voltage": {"address": 2, "type": "float32", "unit": "V"},
    },
}
PULSE = {
    "id": "pulse_counter", "name": "脉冲计数", "system": "power", "protocol": "modbus",
    "points": {"kwh": {"address": 0, "type": "uint16", "unit": "kWh", "counter": True}},
}

DEVICES = [
    {"id": "main_water", "profile": "water_meter", "poll_interval": "10s"},
    {"id": "w_101", "profile": "water_meter", "meter": {"household": "1-101"}},
    {"id": "w_102", "profile": "water_meter", "meter": {"household": "1-102"}},
    {"id": "em_101", "profile": "energy_meter", "meter": {"household": "1-101"}},
    {"id": "em_lobby", "profile": "energy_meter", "meter": {"max_rate": 50}},
    {"id": "pulse_1", "profile": "pulse_counter"},
]

ENERGY = {
    "groups": [
        {"id": "b1_water", "name": "1号楼用水", "commodity": "water", "master": "main_water",
         "members": ["w_101", "w_102"]},
        {"id": "tenant_101", "commodity": "electricity", "kind": "tenant",
         "members": ["em_101"]},
    ],
    "manual_meters": [
        {"id": "gas_101", "commodity": "gas", "unit": "m³", "household": "1-101"},
    ],
    "night_window": "02:00-04:00",
    "gap_estimate_after": 900,
}


def write_site(root: Path, *, devices: list[dict] | None = None,
               energy: dict[str, Any] | None = None, timezone: str = "Asia/Shanghai") -> Path:
    """The site as YAML files, the way a site engineer writes them."""
    (root / "profiles").mkdir(parents=True, exist_ok=True)
    (root / "devices").mkdir(exist_ok=True)
    for profile in (WATER, POWER, PULSE):
        (root / "profiles" / f"{profile['id']}.yaml").write_text(
            yaml.safe_dump(profile, allow_unicode=True), encoding="utf-8")
    devs = [{**d, "connection": {"type": "modbus_tcp", "host": "127.0.0.1"}}
            for d in (DEVICES if devices is None else devices)]
    (root / "devices" / "meters.yaml").write_text(
        yaml.safe_dump({"devices": devs}, allow_unicode=True), encoding="utf-8")
    body = {
        "site": {"id": "test_site", "name": "测试小区", "timezone": timezone},
        "data_dir": str(root / "data"),
        "energy": ENERGY if energy is None else energy,
        "include": {"profiles": ["profiles/*.yaml"], "devices": ["devices/*.yaml"]},
    }
    path = root / "site.yaml"
    path.write_text(yaml.safe_dump(body, allow_unicode=True), encoding="utf-8")
    return path


def site(root: Path, **kwargs: Any) -> SiteConfig:
    return load_site(write_site(root / "config", **kwargs))


class Clock:
    """The stage's clock, moved by the test."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def open_stage(config: SiteConfig, data_dir: Path, clock: Clock) -> tuple[EnergyStage, list]:
    stage = EnergyStage(config, data_dir, clock=clock)
    return stage, stage.open()


def poll(device: str, ts: float, **values: Any) -> Batch:
    return Batch(device, ts, tuple(values), list(values.values()))


def feed(stage: EnergyStage, device: str, point: str, readings: Iterable[tuple[float, float]],
         clock: Clock | None = None) -> list[Any]:
    """Polls of one counter; everything the stage put out, in order."""
    out: list[Any] = []
    for ts, value in readings:
        if clock is not None:
            clock.now = ts
        out += stage.process(poll(device, ts, **{point: value}))
    return out


def events(outputs: Iterable[Any], kind: str | None = None) -> list[Event]:
    return [o for o in outputs if isinstance(o, Event) and o.type == "meter_event"
            and (kind is None or o.body["kind"] == kind)]


def values(outputs: Iterable[Any], device: str, point: str) -> dict[float, Any]:
    """ts → value of one point in the batches put out."""
    found: dict[float, Any] = {}
    for o in outputs:
        if isinstance(o, Batch) and o.device == device and point in o.points:
            found[o.ts] = o.values[o.points.index(point)]
    return found


def total(stage: EnergyStage, device: str, point: str) -> float:
    return stage.counters[device][point].tracker.total
