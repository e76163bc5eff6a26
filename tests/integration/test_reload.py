"""`gateway run` reloading its files on SIGHUP, against two Modbus simulators.

An invalid configuration changes nothing (and says so in the log and in `gateway
status`); a valid one restarts only the device whose register map changed, while the
other keeps polling on the same driver; alarms and tickets carry on untouched. What
happened is read from the status file and the CLI, never from how long things took.
"""

from __future__ import annotations

import json
import signal
import socket
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest
from gateway_process import PROFILE, GatewayProcess, StaticDevice, Subscriber, wait_until

from gateway import cli

pytestmark = pytest.mark.integration

# pump_b's profile: the same registers, and an alarm with a ticket that is active at once
# (the simulator serves 0.452 MPa)
PROFILE_B = PROFILE.replace("id: test_pump", "id: pump_b") + """\
rules:
  - id: high_pressure
    name: 出水压力高
    when: pressure > 0.4
    alarm: {severity: major}
    ticket: {category: water}
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_site(root: Path, ports: dict[str, int], *, metrics: str = "", sinks: str = "") -> Path:
    """pump_a (profile pump_a) and pump_b (profile pump_b), each on its own simulator."""
    (root / "profiles").mkdir(parents=True, exist_ok=True)
    (root / "devices").mkdir(exist_ok=True)
    (root / "profiles" / "pump_a.yaml").write_text(
        PROFILE.replace("id: test_pump", "id: pump_a"), encoding="utf-8")
    (root / "profiles" / "pump_b.yaml").write_text(PROFILE_B, encoding="utf-8")
    entries = "".join(
        f"  - id: {device}\n    profile: {device}\n"
        f"    connection: {{type: modbus_tcp, host: 127.0.0.1, port: {port}, timeout: 500ms}}\n"
        f"    poll_interval: 200ms\n"
        for device, port in ports.items()
    )
    (root / "devices" / "pumps.yaml").write_text("devices:\n" + entries, encoding="utf-8")
    (root / "site.yaml").write_text(textwrap.dedent(f"""\
        site: {{id: reload-{uuid.uuid4().hex[:6]}, name: 测试小区}}
        outbox: {{flush_interval: 100ms, fsync: normal}}
        logging: {{level: info, format: json}}
        """) + metrics + sinks, encoding="utf-8")
    return root / "site.yaml"


def status(data_dir: Path) -> dict[str, Any]:
    path = data_dir / "status.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def polling(data_dir: Path, *devices: str, requests: int = 1) -> dict[str, Any] | None:
    """The status once every device is online with at least `requests` requests."""
    now = status(data_dir)
    found = now.get("devices") or {}
    if all(found.get(d, {}).get("online") is True
           and (found[d].get("requests") or {}).get("requests", 0) >= requests for d in devices):
        return now
    return None


def reloaded(data_dir: Path, applied: int = 0, failed: int = 0) -> dict[str, Any] | None:
    """The first status that counts this many applied and failed reloads."""
    now = status(data_dir)
    counts = now.get("reload") or {}
    if counts.get("applied") == applied and counts.get("failed") == failed:
        return now
    return None


@pytest.fixture
def site(tmp_path: Path):
    ports = {"pump_a": free_port(), "pump_b": free_port()}
    with StaticDevice(ports["pump_a"]), StaticDevice(ports["pump_b"]):
        path = write_site(tmp_path / "site", ports)
        gateway = GatewayProcess(path, tmp_path / "data").start()
        try:
            wait_until(lambda: polling(gateway.data_dir, "pump_a", "pump_b", requests=5), 30,
                       "both pumps polled")
            yield gateway
        finally:
            gateway.stop_quietly()


def test_sighup_with_an_invalid_config_keeps_the_old_one_running_and_reports_it(
    site: GatewayProcess, capsys: pytest.CaptureFixture[str],
) -> None:
    devices = site.site.parent / "devices" / "pumps.yaml"
    good = devices.read_text(encoding="utf-8")
    devices.write_text(good.replace("profile: pump_a", "profile: no_such_pump"), encoding="utf-8")
    before = status(site.data_dir)["devices"]["pump_b"]["requests"]["requests"]

    site.proc.send_signal(signal.SIGHUP)
    after = wait_until(lambda: reloaded(site.data_dir, failed=1), 30, "the failed reload")

    assert site.proc.poll() is None  # still running
    assert after["health"]["state"] == "DEGRADED"
    assert any("reload failed" in reason for reason in after["health"]["reasons"])
    (error,) = after["reload"]["errors"]
    assert "pumps.yaml:3:14" in error and "no_such_pump" in error  # file, line and column
    log = site.log_text()
    assert "reload refused" in log and "no_such_pump" in log
    # the running configuration goes on: both pumps, pump_b's requests still counting up
    still = wait_until(lambda: polling(site.data_dir, "pump_a", "pump_b", requests=before + 1),
                       30, "polling after the refused reload")
    assert still["reload"]["config_hash"] == after["reload"]["config_hash"]

    assert cli.main(["status", "--data-dir", str(site.data_dir)]) == 0
    shown = capsys.readouterr().out
    assert "health: DEGRADED" in shown and "reload failed" in shown and "no_such_pump" in shown

    devices.write_text(good, encoding="utf-8")  # fixed: the next reload works and clears it
    site.proc.send_signal(signal.SIGHUP)
    fixed = wait_until(lambda: reloaded(site.data_dir, applied=1, failed=1), 30, "the reload")
    assert fixed["health"]["state"] == "OK", fixed["health"]
    assert fixed["reload"]["errors"] == []


def test_sighup_with_one_register_map_changed_restarts_only_that_device(
    site: GatewayProcess,
) -> None:
    before = status(site.data_dir)["devices"]
    profile = site.site.parent / "profiles" / "pump_a.yaml"
    profile.write_text(profile.read_text(encoding="utf-8").replace("scale: 0.001", "scale: 0.01"),
                       encoding="utf-8")

    site.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: reloaded(site.data_dir, applied=1), 30, "the reload")
    after = wait_until(lambda: polling(site.data_dir, "pump_a", "pump_b"), 30, "polling")[
        "devices"]

    # pump_a: a new driver (restarted, its request count began again)
    assert after["pump_a"]["driver_started"] > before["pump_a"]["driver_started"]
    # pump_b: the same driver, its statistics carried on without a reset
    assert after["pump_b"]["driver_started"] == before["pump_b"]["driver_started"]
    assert after["pump_b"]["requests"]["requests"] >= before["pump_b"]["requests"]["requests"]
    assert after["pump_b"]["polls"] >= before["pump_b"]["polls"]
    assert after["pump_b"]["online"] is True
    summary = next(json.loads(line) for line in site.log_text().splitlines()
                   if '"configuration reloaded"' in line)
    assert summary["restarted"] == ["pump_a"] and summary["changed"] == ["pump_a"]
    assert summary["trigger"] == "SIGHUP"
    # the new map is what pump_a's readings now say: 452 × 0.01
    from gateway.sinks.history import HistoryReader

    def newest_pressure() -> float | None:
        rows = HistoryReader(site.data_dir / "history.db").query("pump_a", "pressure", limit=1)
        return rows[0].value if rows and rows[0].value is not None and rows[0].value > 1 else None

    assert wait_until(newest_pressure, 30, "pump_a read with its new map") == pytest.approx(4.52)


def test_alarm_and_ticket_state_carry_over_a_reload(
    site: GatewayProcess, capsys: pytest.CaptureFixture[str],
) -> None:
    data = ["--data-dir", str(site.data_dir)]
    alarm = "pump_b.high_pressure"

    def alarms() -> dict[str, Any]:
        assert cli.main(["alarms", "--json", *data]) == 0
        return {a["alarm"]: a for a in json.loads(capsys.readouterr().out)}

    def tickets() -> list[dict[str, Any]]:
        assert cli.main(["tickets", "--all", "--json", *data]) == 0
        return json.loads(capsys.readouterr().out)

    wait_until(lambda: alarm in alarms(), 30, "the alarm raised")
    assert cli.main(["ack", alarm, "--by", "张工", *data]) == 0
    capsys.readouterr()
    (ticket,) = tickets()
    assert cli.main(["ticket", ticket["ticket"], "dispatch", "--owner", "李工", *data]) == 0
    capsys.readouterr()
    alarm_before, (ticket_before,) = alarms()[alarm], tickets()

    # a change to pump_b's rule text (its name) and to pump_a's map: both take effect
    profile = site.site.parent / "profiles" / "pump_b.yaml"
    profile.write_text(profile.read_text(encoding="utf-8").replace("出水压力高", "出水压力过高"),
                       encoding="utf-8")
    site.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: reloaded(site.data_dir, applied=1), 30, "the reload")

    alarm_after, (ticket_after,) = alarms()[alarm], tickets()
    assert alarm_after["state"] == "active_acknowledged"
    assert alarm_before["acknowledged_by"] == "张工"
    for key in ("raised_at", "acknowledged_by", "acknowledged_at"):
        assert alarm_after[key] == alarm_before[key], key
    assert ticket_after["ticket"] == ticket_before["ticket"]
    assert ticket_after["state"] == "dispatched" and ticket_after["owner"] == "李工"
    assert ticket_after["sla"] == ticket_before["sla"]  # the SLA clocks ran on, not restarted
    assert ticket_after["opened"] == ticket_before["opened"]


def test_the_applied_configurations_hash_reaches_the_retained_birth(
    tmp_path: Path, mosquitto: Any,
) -> None:
    ports = {"pump_a": free_port()}
    upstream = f"upstream: {{host: 127.0.0.1, port: {mosquitto.port}, gateway_id: gw1}}\n"
    path = write_site(tmp_path / "site", ports, sinks=upstream)
    site_id = path.read_text(encoding="utf-8").split("id: ", 1)[1].split(",", 1)[0]
    topic = f"pm/{site_id}/gw1/gateway/status"
    with StaticDevice(ports["pump_a"]):
        gateway = GatewayProcess(path, tmp_path / "data").start()
        watcher = Subscriber("127.0.0.1", mosquitto.port, topic)
        try:
            first = wait_until(lambda: polling(gateway.data_dir, "pump_a"), 30, "polling")
            started = first["reload"]["config_hash"]
            wait_until(lambda: any(m.get("config_hash") == started for m in watcher.on(topic)),
                       30, "the birth with the starting hash")
            profile = path.parent / "profiles" / "pump_a.yaml"
            profile.write_text(profile.read_text(encoding="utf-8").replace("scale: 0.001",
                                                                          "scale: 0.01"),
                               encoding="utf-8")
            gateway.proc.send_signal(signal.SIGHUP)
            applied = wait_until(lambda: reloaded(gateway.data_dir, applied=1), 30, "reload")
            new_hash = applied["reload"]["config_hash"]
            assert new_hash != started
            birth = wait_until(lambda: [m for m in watcher.on(topic)
                                        if m.get("config_hash") == new_hash], 30,
                               "the birth published again with the applied hash")
            assert birth[-1]["state"] == "online"
        finally:
            watcher.close()
            gateway.stop_quietly()


def test_gateway_reload_prints_what_restarted_or_every_located_error(
    site: GatewayProcess, capsys: pytest.CaptureFixture[str],
) -> None:
    data = ["--data-dir", str(site.data_dir), "--by", "张工"]
    devices = site.site.parent / "devices" / "pumps.yaml"
    good = devices.read_text(encoding="utf-8")
    devices.write_text(good.replace("profile: pump_a", "profile: no_such_pump"), encoding="utf-8")
    assert cli.main(["reload", *data]) == 1  # refused
    refused = capsys.readouterr().err
    assert "the running configuration carries on" in refused
    assert "pumps.yaml:3:14" in refused and "no_such_pump" in refused

    devices.write_text(good.replace("timeout: 500ms", "timeout: 400ms", 1), encoding="utf-8")
    assert cli.main(["reload", *data]) == 0
    shown = capsys.readouterr().out
    assert "1 device restarted (pump_a)" in shown and "2 devices running" in shown
    from gateway.commands.audit import read_entries

    (entry,) = [e for e in read_entries(site.data_dir / "audit.jsonl") if e["type"] == "reload"
                and e["outcome"] == "accepted"]
    assert entry["who"] == "张工" and entry["via"].startswith("cli:")


async def test_a_reload_whose_drivers_cannot_be_built_changes_nothing(tmp_path: Path) -> None:
    from gateway.config.loader import load_site
    from gateway.config.models import MqttConnection
    from gateway.daemon import Gateway
    from gateway.reloader import ReloadFailed

    port = free_port()
    with StaticDevice(port):
        config = load_site(write_site(tmp_path / "site", {"pump_a": port}))
        gateway = Gateway(config, data_dir=tmp_path / "data")
        await gateway.start()
        try:
            await _until(lambda: gateway.health["pump_a"].polls >= 3)
            driver, health = gateway.drivers[0], gateway.health["pump_a"]
            # valid to the models, but no driver reads a Modbus map over MQTT
            broken = config.model_copy(update={"devices": [config.devices[0].model_copy(
                update={"connection": MqttConnection(type="mqtt", base_topic="x")})]})
            with pytest.raises(ReloadFailed, match="modbus map, but the connection is mqtt"):
                await gateway.reload(broken)
            assert gateway.drivers == [driver] and gateway.health["pump_a"] is health
            assert gateway.config is config and gateway.reloads.failed == 1
            polls = health.polls
            await _until(lambda: health.polls > polls)  # the same driver polls on
        finally:
            await gateway.stop()


async def test_files_a_reload_command_finds_invalid_are_counted_as_a_failed_reload(
    tmp_path: Path,
) -> None:
    import asyncio

    from gateway.config.errors import ConfigError
    from gateway.config.loader import load_site
    from gateway.daemon import Gateway

    port = free_port()
    with StaticDevice(port):
        site_path = write_site(tmp_path / "site", {"pump_a": port})
        gateway = Gateway(load_site(site_path), data_dir=tmp_path / "data")
        await gateway.start()
        try:
            devices = site_path.parent / "devices" / "pumps.yaml"
            devices.write_text(devices.read_text(encoding="utf-8").replace(
                "profile: pump_a", "profile: no_such_pump"), encoding="utf-8")
            with pytest.raises(ConfigError):  # the command handler's loader, on its thread
                await asyncio.to_thread(gateway.load_config, site_path)
            await _until(lambda: gateway.reloads.failed == 1)
            assert "no_such_pump" in gateway.reloads.errors[0]
            assert gateway.health_view()["state"] == "DEGRADED"
        finally:
            await gateway.stop()


async def test_a_reload_whose_stages_cannot_open_reopens_the_running_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from gateway.config.loader import load_site
    from gateway.daemon import Gateway
    from gateway.edge import EdgeStages
    from gateway.reloader import ReloadFailed

    port = free_port()
    with StaticDevice(port):
        site_path = write_site(tmp_path / "site", {"pump_b": port})
        config = load_site(site_path)
        gateway = Gateway(config, data_dir=tmp_path / "data")
        await gateway.start()
        try:
            await _until(lambda: bool(gateway.rules.alarms(active_only=True)))
            profile = site_path.parent / "profiles" / "pump_b.yaml"
            profile.write_text(profile.read_text(encoding="utf-8").replace("0.4", "0.3"),
                               encoding="utf-8")
            changed = load_site(site_path)
            opening = EdgeStages.start

            async def disk_fails_for_the_new_config(stages: EdgeStages, emit) -> None:
                if stages.rules.config.profiles == changed.profiles:
                    raise OSError("disk I/O error")  # e.g. rules_state.db on a failing card
                await opening(stages, emit)

            monkeypatch.setattr(EdgeStages, "start", disk_fails_for_the_new_config)
            driver = gateway.drivers[0]
            with pytest.raises(ReloadFailed, match="would not open"):
                await gateway.reload(changed)
            # the running configuration's stages are open again, the pipeline uses them
            assert gateway.config is config and gateway.edge.rules.config is config
            assert gateway.pipeline.rules is gateway.edge and gateway.drivers == [driver]
            alarm = gateway.rules.alarms(active_only=True)[0]
            assert alarm["alarm"] == "pump_b.high_pressure"
            evaluations = gateway.rules.evaluator.evaluations
            await _until(lambda: gateway.rules.evaluator.evaluations > evaluations)
            assert gateway.pipeline.stage_errors == 0 and gateway.reloads.failed == 1
            assert "reload failed" in " ".join(gateway.health_view()["reasons"])
        finally:
            await gateway.stop()


async def _until(condition, timeout: float = 20.0) -> None:
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.05)
