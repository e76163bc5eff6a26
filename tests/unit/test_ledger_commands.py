"""Meter entries that the ledger will show: `meter_reading`, `meter_replace` and
`meter_snapshot` as commands (parsed, run on the energy stage, audited, their readings
sent on) and as `gateway meters ...` over a real control socket."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Coroutine, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import structlog
import yaml
from test_local_control import short_dir
from test_upstream_rules import asyncapi, schema  # noqa: F401  (the contract's fixtures)

from gateway.batch import Batch, Event
from gateway.cli import main
from gateway.commands.audit import AUDIT_FILE, AuditLog, read_entries
from gateway.commands.handler import CommandHandler
from gateway.commands.local import CONTROL_SOCKET, LocalControl
from gateway.commands.models import (
    MeterReadingCommand,
    MeterReplaceCommand,
    MeterSnapshotCommand,
    Rejected,
    parse_command,
)
from gateway.config.loader import load_site
from gateway.config.models import SiteConfig
from gateway.energy.reader import EnergyReader
from gateway.energy.stage import EnergyStage

PROFILES = {
    "water": {"name": "水表", "system": "water_supply", "points": {
        "total_volume": {"table": "input", "address": 0, "type": "uint32", "scale": 0.01,
                         "unit": "m³", "counter": True}}},
    "power": {"name": "电表", "system": "power", "points": {
        "energy_import": {"address": 0, "type": "float32", "unit": "kWh", "counter": True},
        "energy_export": {"address": 2, "type": "float32", "unit": "kWh", "counter": True}}},
}
DEVICES = [
    {"id": "water_101", "profile": "water", "meter": {"household": "1-1-101"}},
    {"id": "power_101", "profile": "power", "meter": {"household": "1-1-101"}},
]
ENERGY = {"manual_meters": [{"id": "gas_101", "commodity": "gas", "unit": "m³",
                             "household": "1-1-101"}]}


def site(root: Path) -> SiteConfig:
    (root / "profiles").mkdir(parents=True)
    (root / "devices").mkdir()
    for name, profile in PROFILES.items():
        (root / "profiles" / f"{name}.yaml").write_text(
            yaml.safe_dump(profile, allow_unicode=True, sort_keys=False), encoding="utf-8")
    devices = [{**d, "connection": {"host": "127.0.0.1"}} for d in DEVICES]
    (root / "devices" / "b1.yaml").write_text(yaml.safe_dump({"devices": devices}), encoding="utf-8")
    body = {"site": {"id": "estate", "name": "阳光花园"}, "energy": ENERGY}
    (root / "site.yaml").write_text(yaml.safe_dump(body, allow_unicode=True), encoding="utf-8")
    return load_site(root / "site.yaml")


class Pipeline:
    """Collects what commands send on, as the daemon's pipeline would store and deliver it."""

    def __init__(self) -> None:
        self.items: list[Batch | Event] = []

    def emit_event(self, event: Event) -> None:
        self.items.append(event)

    def emit_measured(self, items: list[Batch | Event]) -> None:
        self.items.extend(items)


class Gateway:
    """What the handler and the control socket need of the daemon, with a real energy stage."""

    def __init__(self, config: SiteConfig, data_dir: Path, *, energy: bool = True) -> None:
        self.config = config
        self.drivers: list[Any] = []
        self.health: dict[str, Any] = {}
        self.rules = None
        self.pipeline = Pipeline()
        self.energy = EnergyStage(config, data_dir) if energy else None
        if self.energy is not None:
            self.energy.open()

    async def reload(self, config: SiteConfig) -> dict[str, object]:
        raise AssertionError("not used")

    def status(self) -> dict[str, object]:
        return {"site": self.config.site.id}


class Daemon:
    """The handler and control socket on their own loop in a thread, the CLI in the test's."""

    def __init__(self, config: SiteConfig, data_dir: Path, *, energy: bool = True) -> None:
        self._stack = contextlib.ExitStack()
        self.logs = self._stack.enter_context(structlog.testing.capture_logs())
        self.data_dir = data_dir
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.gateway, self.audit, self.handler, self.control = self.run(self._start(config, energy))

    async def _start(self, config: SiteConfig, energy: bool) -> tuple[Any, ...]:
        gateway = Gateway(config, self.data_dir, energy=energy)  # the stage lives on this loop
        audit = AuditLog(self.data_dir / AUDIT_FILE)
        audit.open()
        handler = CommandHandler(gateway, None, audit)
        control = LocalControl(gateway, handler, self.data_dir / CONTROL_SOCKET)
        await control.start()
        return gateway, audit, handler, control

    async def _close_energy(self) -> None:
        self.gateway.energy.close()  # on the loop whose thread opened it

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    def stop(self) -> None:
        self.run(self.control.stop())
        self.run(self.handler.close())
        if self.gateway.energy is not None:
            self.run(self._close_energy())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()
        self._stack.close()

    def gateway_cli(self, *args: str) -> int:
        return main([*args, "--data-dir", str(self.data_dir)])

    def audited(self) -> list[dict[str, Any]]:
        return read_entries(self.data_dir / AUDIT_FILE)


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    yield from short_dir(tmp_path)


@pytest.fixture
def daemon(tmp_path: Path, data_dir: Path) -> Iterator[Daemon]:
    running = Daemon(site(tmp_path / "config"), data_dir)
    yield running
    running.stop()


# --- parsing -----------------------------------------------------------------------------------


def test_the_three_meter_commands_parse() -> None:
    reading = parse_command(json.dumps({"id": "r1", "type": "meter_reading", "meter": "gas_101",
                                        "value": 12, "at": "2026-10-31T17:30:00+08:00"}).encode())
    replace = parse_command(json.dumps({"id": "r2", "type": "meter_replace", "meter": "power_101",
                                        "point": "energy_import", "old_final": 98.5,
                                        "new_initial": 0}).encode())
    snapshot = parse_command(b'{"id": "r3", "type": "meter_snapshot", "household": "1-1-101"}')

    assert isinstance(reading, MeterReadingCommand) and reading.value == 12.0
    assert reading.at == datetime(2026, 10, 31, 17, 30, tzinfo=ZoneInfo("Asia/Shanghai")).timestamp()
    assert isinstance(replace, MeterReplaceCommand) and replace.point == "energy_import"
    assert isinstance(snapshot, MeterSnapshotCommand) and snapshot.household == "1-1-101"


@pytest.mark.parametrize("command", [
    {"type": "meter_reading", "meter": "gas_101"},
    {"type": "meter_reading", "meter": "gas_101", "value": -1},
    {"type": "meter_reading", "meter": "gas_101", "value": "12.5"},
    {"type": "meter_reading", "meter": "gas_101", "value": True},
    {"type": "meter_reading", "meter": "gas_101", "value": 1, "at": "2026-10-31T17:30:00"},
    {"type": "meter_reading", "meter": "gas_101", "value": 1, "by_hand": True},
    {"type": "meter_replace", "meter": "gas_101", "old_final": 5},
    {"type": "meter_snapshot", "household": ""},
    {"type": "meter_snapshot"},
], ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items())[:60])
def test_the_schema_and_the_parser_refuse_the_same_meter_commands(
        schema, command: dict[str, Any]) -> None:  # noqa: F811 (the fixture)
    payload = {"id": "req-1", **command}
    assert isinstance(parse_command(json.dumps(payload).encode()), Rejected)
    assert not schema("Command").is_valid(payload)


# --- through the handler ---------------------------------------------------------------------


def test_a_manual_reading_is_kept_audited_and_sent_on(daemon: Daemon, capsys) -> None:
    assert daemon.gateway_cli("meters", "read", "gas_101", "12.5", "--by", "抄表员 陈") == 0

    out = capsys.readouterr().out
    assert out.startswith("gas_101.reading: reading 12.5 kept at ") and "(by 抄表员 陈)" in out
    [batch] = [i for i in daemon.gateway.pipeline.items if isinstance(i, Batch)]
    assert (batch.device, batch.points, batch.values) == ("gas_101", ("reading",), [12.5])
    [entry] = daemon.audited()
    assert (entry["type"], entry["target"], entry["who"], entry["outcome"]) == (
        "meter_reading", "gas_101", "抄表员 陈", "accepted")
    assert entry["value"] == {"value": 12.5}
    with EnergyReader(daemon.data_dir / "energy.db") as reader:
        [kept] = reader.readings_between(None, None, device="gas_101")
    assert (kept.raw, kept.source, kept.by) == (12.5, "manual", "抄表员 陈")


def test_a_reading_below_the_last_is_refused_with_the_reason(daemon: Daemon, capsys) -> None:
    assert daemon.gateway_cli("meters", "read", "gas_101", "12.5") == 0
    assert daemon.gateway_cli("meters", "read", "gas_101", "11") == 1

    err = capsys.readouterr().err
    assert err.startswith("refused: 11.0 is below the last reading of gas_101.reading (12.5")
    assert [e["outcome"] for e in daemon.audited()] == ["accepted", "refused"]


def test_a_meter_with_two_counters_needs_the_point(daemon: Daemon, capsys) -> None:
    assert daemon.gateway_cli("meters", "read", "power_101", "10") == 1
    assert "power_101 has several counters (energy_import, energy_export)" in capsys.readouterr().err

    assert daemon.gateway_cli("meters", "read", "power_101", "10", "--point", "energy_import",
                              "--at", "2026-10-31T17:30+08:00") == 0
    [entry] = [e for e in daemon.audited() if e["outcome"] == "accepted"]
    assert entry["target"] == "power_101.energy_import"
    assert entry["value"] == {"value": 10.0, "at": "2026-10-31T09:30:00.000Z"}


def test_an_unknown_meter_is_refused_with_a_suggestion(daemon: Daemon, capsys) -> None:
    assert daemon.gateway_cli("meters", "read", "gas_11", "1") == 1
    assert "no meter 'gas_11'; did you mean gas_101?" in capsys.readouterr().err


def test_a_replacement_keeps_the_total_and_is_recorded(daemon: Daemon, capsys) -> None:
    assert daemon.gateway_cli("meters", "read", "gas_101", "100", "--at", "2026-10-01T08:00+08:00") == 0
    assert daemon.gateway_cli("meters", "replace", "gas_101", "--old-final", "104",
                              "--new-initial", "0.5", "--by", "燃气 王") == 0

    out = capsys.readouterr().out.splitlines()[-1]
    assert out.startswith("gas_101.reading: replaced, old meter's final reading 104, new meter "
                          "starts at 0.5; 4 m³ counted since the last reading (by 燃气 王)")
    events = [i for i in daemon.gateway.pipeline.items if isinstance(i, Event)]
    assert [e.body["kind"] for e in events] == ["replaced"]
    assert daemon.gateway.energy.counters["gas_101"]["reading"].tracker.total == pytest.approx(4.0)
    entry = daemon.audited()[-1]
    assert (entry["type"], entry["target"]) == ("meter_replace", "gas_101")
    assert entry["value"] == {"old_final": 104.0, "new_initial": 0.5}
    with EnergyReader(daemon.data_dir / "energy.db") as reader:
        [swap] = reader.replacements()
    assert (swap.old_final, swap.new_initial, swap.by) == (104.0, 0.5, "燃气 王")


def test_a_handover_snapshot_prints_every_meter_of_the_household(daemon: Daemon, capsys) -> None:
    daemon.gateway_cli("meters", "read", "gas_101", "33.3")
    capsys.readouterr()
    assert daemon.gateway_cli("meters", "snapshot", "--unit", "1-1-101", "--by", "客服 李") == 0

    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("handover snapshot of 1-1-101 at ") and lines[0].endswith("(by 客服 李)")
    rows = {line.split()[0]: line.split() for line in lines[3:7]}
    assert rows["gas_101"][:4] == ["gas_101", "reading", "33.3", "m³"]
    assert rows["water_101"][:3] == ["water_101", "total_volume", "-"]  # never read yet
    assert lines[-1].startswith("3 meter(s) have no reading yet")
    entry = daemon.audited()[-1]
    assert (entry["type"], entry["target"], entry["who"]) == ("meter_snapshot", "1-1-101", "客服 李")
    assert {"meter": "gas_101", "point": "reading", "reading": 33.3} in entry["value"]["meters"]
    with EnergyReader(daemon.data_dir / "energy.db") as reader:
        kept = reader.snapshots(household="1-1-101")
    assert len(kept) == 4 and {s.by for s in kept} == {"客服 李"}


def test_a_snapshot_of_an_unknown_household_is_refused(daemon: Daemon, capsys) -> None:
    assert daemon.gateway_cli("meters", "snapshot", "--unit", "1-1-110") == 1
    assert "no meter serves household '1-1-110'; did you mean 1-1-101?" in capsys.readouterr().err


def test_meters_list_shows_every_counter_from_the_daemon(daemon: Daemon, capsys) -> None:
    daemon.gateway_cli("meters", "read", "gas_101", "7")
    capsys.readouterr()
    assert daemon.gateway_cli("meters", "list", "--json") == 0

    meters = json.loads(capsys.readouterr().out)
    assert {(m["device"], m["point"]) for m in meters} == {
        ("water_101", "total_volume"), ("power_101", "energy_import"),
        ("power_101", "energy_export"), ("gas_101", "reading")}
    assert next(m for m in meters if m["device"] == "gas_101")["raw"] == 7
    assert daemon.gateway_cli("meters", "list") == 0
    assert capsys.readouterr().out.split("\n")[0].split() == [
        "meter", "counter", "commodity", "household", "reading", "unit", "total", "read", "at",
        "notes"]


def test_meter_commands_are_refused_where_energy_is_not_running(tmp_path: Path, data_dir: Path,
                                                                 capsys) -> None:
    running = Daemon(site(tmp_path / "config"), data_dir, energy=False)
    try:
        assert running.gateway_cli("meters", "read", "gas_101", "1") == 1
        assert "energy is not running on this gateway" in capsys.readouterr().err
        assert running.gateway_cli("meters", "list") == 1
        assert "energy is not running" in capsys.readouterr().err
    finally:
        running.stop()


def test_meters_list_reads_the_file_when_no_daemon_answers(tmp_path: Path, data_dir: Path,
                                                           capsys) -> None:
    config = site(tmp_path / "config")
    with structlog.testing.capture_logs():  # the stage's log lines, not the CLI's output
        stage = EnergyStage(config, data_dir)
        stage.open()
        stage.manual_reading("gas_101", 5.0, "抄表员 陈")
        stage.close()

    assert main(["meters", "list", "--data-dir", str(data_dir)]) == 0
    captured = capsys.readouterr()
    assert "the gateway is not answering" in captured.err
    assert captured.out.splitlines()[2].split()[:3] == ["gas_101", "reading", "5"]
