"""Commands from the platform: parsing, authorisation before any driver, outcomes, and the
hash-chained audit log that shows an edited or deleted line."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest

from drivers.base import Driver, DriverError
from gateway.batch import Batch
from gateway.commands.audit import GENESIS, AuditEntry, AuditLog, line_hash, read_entries, verify
from gateway.commands.handler import CommandHandler
from gateway.commands.models import (
    MAX_PAYLOAD,
    DeviceStatusCommand,
    Rejected,
    WriteCommand,
    parse_command,
)
from gateway.config.errors import ConfigError, ConfigIssue
from gateway.config.models import Device, Profile, SiteConfig
from gateway.health import DeviceHealth

PROFILE = Profile.from_data({
    "id": "booster",
    "name": "加压泵 booster pump",
    "system": "water_supply",
    "points": {
        "setpoint": {"address": 0, "scale": 0.01, "min": 0.1, "max": 1.0, "writable": True},
        "pressure": {"address": 1, "scale": 0.01},
        "mode": {"address": 2, "writable": True},  # writable, no range
    },
})


def _device(device_id: str, enabled: bool = True) -> Device:
    return Device.model_validate({
        "id": device_id, "profile": "booster", "enabled": enabled,
        "connection": {"type": "modbus_tcp", "host": "127.0.0.1", "port": 1502},
    })


class FakeDriver(Driver):
    """Records writes; raises what the test tells it to."""

    def __init__(self, device: Device, error: Exception | None = None, delay: float = 0.0) -> None:
        super().__init__(device, PROFILE)
        self.writes: list[tuple[str, Any]] = []
        self.error = error
        self.delay = delay

    @property
    def points(self) -> tuple[str, ...]:
        return tuple(PROFILE.points)

    async def read(self, group: str = "default") -> Batch:
        raise DriverError("not used", "comm_failure")

    async def write(self, point: str, value: Any) -> None:
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        self.writes.append((point, value))

    def stats(self) -> dict[str, Any]:
        return {"requests": 7}


class FakeGateway:
    def __init__(self, drivers: list[FakeDriver], devices: list[Device]) -> None:
        site = SiteConfig.model_validate({"site": {"id": "estate", "name": "测试小区"}})
        self.config = site.model_copy(update={
            "profiles": {"booster": PROFILE}, "devices": devices, "source": Path("/etc/site.yaml"),
        })
        self.drivers: list[Driver] = list(drivers)
        self.health = {d.device.id: DeviceHealth(d.device.id) for d in drivers}
        self.reloaded: list[SiteConfig] = []

    async def reload(self, config: SiteConfig) -> dict[str, object]:
        self.reloaded.append(config)
        return {"devices": len(config.devices), "added": [], "removed": [], "changed": [],
                "restart_needed": []}


class FakeConnection:
    def __init__(self) -> None:
        self.published: list[tuple[str, bytes]] = []

    def subscribe(self, topic: str, handler: Any, qos: int = 1) -> None:
        self.topic = topic

    async def publish_now(self, topic: str, payload: bytes, qos: int = 1) -> bool:
        self.published.append((topic, payload))
        return True


@pytest.fixture
def audit(tmp_path: Path):
    log = AuditLog(tmp_path / "audit.jsonl")
    log.open()
    yield log
    log.close()


def _handler(audit: AuditLog, *drivers: FakeDriver, load: Any = None, timeout: float = 5.0):
    gateway = FakeGateway(list(drivers), [d.device for d in drivers] + [_device("pump_off", False)])
    handler = CommandHandler(
        gateway, FakeConnection(), audit, commands_topic="pm/estate/gw1/commands",
        reply_topic=lambda request_id: f"pm/estate/gw1/replies/{request_id}",
        via="gw-client", write_timeout=timeout, load=load,
    )
    return handler, gateway


def _cmd(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


# --- parsing ---------------------------------------------------------------------------


def test_a_write_parses_into_its_model() -> None:
    parsed = parse_command(_cmd(id="r1", type="write", device="pump_1", point="setpoint",
                                value=0.45, by="监控中心 王工"))
    assert parsed == WriteCommand(id="r1", type="write", device="pump_1", point="setpoint",
                                  value=0.45, by="监控中心 王工")


@pytest.mark.parametrize(("payload", "request_id", "reason"), [
    (b"{not json", None, "not JSON"),
    (b"\xff\xfe", None, "not UTF-8"),
    (b"[1, 2]", None, "JSON object"),
    (_cmd(type="write", device="d", point="p", value=1), None, "id is missing"),
    (_cmd(id="a/b", type="reload"), None, "id is not"),
    (_cmd(id="r2", type="explode"), "r2", "'explode' is not known"),
    (_cmd(id="r3"), "r3", "type missing"),
    (_cmd(id="r4", type="write", device="d", point="p", value=1, colour="red"), "r4",
     "unknown field 'colour'"),
    (_cmd(id="r5", type="write", device="d", point="p", value=[1]), "r5",
     "value must be a number, true/false or text"),
    (_cmd(id="r6", type="write", device="d", point="p"), "r6", "value is missing"),
    (_cmd(id="r7", type="write", device="d", point="p", value=1, priority=17), "r7", "priority"),
    (_cmd(id="r8", type="device_status", device=5), "r8", "device"),
    (_cmd(id="r9", type="ack_alarm", alarm="a1", state="acked"), "r9",
     "unknown field 'state'; ack_alarm takes id, by, type, alarm, comment"),
    (_cmd(id="r10", type="reload", extra=1), "r10", "unknown field 'extra'"),
])
def test_what_is_not_a_command_is_refused_with_a_reason(
    payload: bytes, request_id: str | None, reason: str
) -> None:
    parsed = parse_command(payload)
    assert isinstance(parsed, Rejected)
    assert parsed.request_id == request_id
    assert reason in parsed.reason


def test_an_oversized_payload_is_refused_unparsed_but_still_answered() -> None:
    payload = b'{"id": "big-1", "type": "write", "value": "' + b"x" * MAX_PAYLOAD + b'"}'
    parsed = parse_command(payload)
    assert isinstance(parsed, Rejected) and parsed.request_id == "big-1"
    assert f"at most {MAX_PAYLOAD} bytes" in parsed.reason


# --- authorisation and outcomes ---------------------------------------------------------


async def _run(handler: CommandHandler, **fields: Any) -> dict[str, Any]:
    reply = await handler.handle(_cmd(**fields))
    assert reply is not None
    return json.loads(reply.payload())


async def test_an_accepted_write_reaches_the_driver_and_is_audited(audit: AuditLog) -> None:
    driver = FakeDriver(_device("pump_1"))
    handler, _ = _handler(audit, driver)
    reply = await _run(handler, id="w1", type="write", device="pump_1", point="setpoint",
                       value=0.45, by="operator-7")
    assert reply["ok"] is True and reply["result"] == {"device": "pump_1", "point": "setpoint",
                                                       "value": 0.45}
    assert driver.writes == [("setpoint", 0.45)]
    (entry,) = read_entries(audit.path)
    assert entry["who"] == "operator-7" and entry["via"] == "gw-client"
    assert (entry["id"], entry["type"], entry["target"], entry["value"], entry["outcome"]) == (
        "w1", "write", "pump_1.setpoint", 0.45, "accepted")


async def test_a_redelivered_command_is_answered_again_but_never_run_twice(audit: AuditLog) -> None:
    driver = FakeDriver(_device("pump_1"))
    handler, _ = _handler(audit, driver)
    first = await _run(handler, id="w2", type="write", device="pump_1", point="setpoint", value=0.4)
    again = await _run(handler, id="w2", type="write", device="pump_1", point="setpoint", value=0.4)
    assert first == again and first["ok"] is True
    assert driver.writes == [("setpoint", 0.4)]
    assert len(read_entries(audit.path)) == 1


@pytest.mark.parametrize(("fields", "reason"), [
    ({"point": "pressure", "value": 0.5}, "not writable"),
    ({"point": "setpoint", "value": 1.5}, "outside the allowed range of setpoint of pump_1: 0.1 to 1"),
    ({"point": "setpoint", "value": 0.05}, "outside the allowed range"),
    ({"point": "setpoint", "value": "high"}, "takes a number"),
    ({"point": "setpoint", "value": True}, "takes a number"),
    ({"point": "flow", "value": 1}, "has no point 'flow'"),
    ({"point": "mode", "value": 1, "priority": 8}, "BACnet points only"),
    ({"device": "pump_9", "point": "mode", "value": 1}, "unknown device 'pump_9'"),
    ({"device": "pump_off", "point": "mode", "value": 1}, "disabled"),
])
async def test_a_write_is_refused_before_any_driver_is_asked(
    audit: AuditLog, fields: dict[str, Any], reason: str
) -> None:
    driver = FakeDriver(_device("pump_1"))
    handler, _ = _handler(audit, driver)
    reply = await _run(handler, id="w2", type="write", **{"device": "pump_1", **fields})
    assert reply["ok"] is False and reason in reply["error"]
    assert driver.writes == []
    (entry,) = read_entries(audit.path)
    assert entry["outcome"] == "refused" and reason in entry["reason"]
    assert entry["who"] == "gw-client"  # no "by": the connection it came through


@pytest.mark.parametrize(("error", "outcome"), [
    (DriverError("the codec refused it", "bad_request"), "refused"),
    (DriverError("Modbus exception ILLEGAL DATA VALUE", "write_failed"), "failed"),
    (DriverError("reads back 0.3 after writing 0.45", "verify_failed"), "failed"),
    (DriverError("no answer", "comm_failure"), "failed"),
])
async def test_what_the_driver_says_decides_refused_or_failed(
    audit: AuditLog, error: DriverError, outcome: str
) -> None:
    handler, _ = _handler(audit, FakeDriver(_device("pump_1"), error=error))
    reply = await _run(handler, id="w3", type="write", device="pump_1", point="mode", value=2)
    assert reply == {"id": "w3", "ok": False, "error": str(error), "ts": reply["ts"]}
    assert read_entries(audit.path)[0]["outcome"] == outcome


async def test_a_write_that_does_not_finish_in_time_fails_and_says_it_may_have_landed(
    audit: AuditLog,
) -> None:
    handler, _ = _handler(audit, FakeDriver(_device("pump_1"), delay=5), timeout=0.05)
    reply = await _run(handler, id="w4", type="write", device="pump_1", point="mode", value=2)
    assert reply["ok"] is False and "may or may not have landed" in reply["error"]
    assert read_entries(audit.path)[0]["outcome"] == "failed"


async def test_device_status_answers_with_health_and_request_statistics(audit: AuditLog) -> None:
    handler, gateway = _handler(audit, FakeDriver(_device("pump_1")))
    gateway.health["pump_1"].good(0.012, now=1_700_000_000.0)
    reply = await _run(handler, id="s1", type="device_status", device="pump_1")
    assert reply["ok"] is True
    result = reply["result"]
    assert result["device"] == "pump_1" and result["online"] is True
    assert result["last_good"] == 1_700_000_000.0 and result["requests"] == {"requests": 7}
    refused = await _run(handler, id="s2", type="device_status", device="nope")
    assert refused["ok"] is False and "unknown device 'nope'" in refused["error"]


async def test_a_reload_with_errors_is_refused_with_each_located_error(audit: AuditLog) -> None:
    issue = ConfigIssue("/etc/devices/pumps.yaml", 4, 7, ("devices", 0, "port"), "not a port")

    def broken(path: Any) -> SiteConfig:
        raise ConfigError([issue])

    handler, gateway = _handler(audit, FakeDriver(_device("pump_1")), load=broken)
    reply = await _run(handler, id="c1", type="reload", by="ops")
    assert reply["ok"] is False
    assert reply["result"] == {"errors": ["/etc/devices/pumps.yaml:4:7 devices[0].port: not a port"]}
    assert "pumps.yaml:4:7" in reply["error"] and gateway.reloaded == []
    assert read_entries(audit.path)[0]["outcome"] == "refused"


async def test_a_valid_reload_is_applied_and_its_summary_audited(audit: AuditLog) -> None:
    handler, gateway = _handler(audit, FakeDriver(_device("pump_1")))
    handler._load = lambda path: gateway.config  # noqa: SLF001 - the loader is the seam
    reply = await _run(handler, id="c2", type="reload")
    assert reply["ok"] is True and reply["result"]["devices"] == 2
    assert gateway.reloaded == [gateway.config]
    entry = read_entries(audit.path)[0]
    assert entry["outcome"] == "accepted" and entry["target"] == "/etc/site.yaml"
    assert entry["value"]["devices"] == 2


async def test_a_payload_without_an_id_gets_no_reply_but_an_audit_line(audit: AuditLog) -> None:
    handler, _ = _handler(audit)
    assert await handler.handle(b"garbage") is None
    (entry,) = read_entries(audit.path)
    assert entry["id"] is None and entry["outcome"] == "refused" and "not JSON" in entry["reason"]


async def test_replies_go_to_the_reply_topic_of_their_request(audit: AuditLog) -> None:
    handler, _ = _handler(audit, FakeDriver(_device("pump_1")))
    await handler.on_message("pm/estate/gw1/commands", _cmd(id="abc-1", type="device_status",
                                                             device="pump_1"))
    (topic, payload), = handler.connection.published  # type: ignore[attr-defined]
    assert topic == "pm/estate/gw1/replies/abc-1" and json.loads(payload)["ok"] is True


async def test_commands_are_ignored_once_the_handler_closed(audit: AuditLog) -> None:
    handler, _ = _handler(audit)
    await handler.close()
    assert await handler.handle(_cmd(id="late", type="reload")) is None


def test_a_malformed_rule_command_parses_as_a_refusal_that_keeps_its_type() -> None:
    parsed = parse_command(_cmd(id="t1", type="update_ticket", ticket="T-1", state="closed"))
    assert isinstance(parsed, Rejected) and parsed.type == "update_ticket"
    assert not isinstance(parse_command(_cmd(id="t2", type="device_status", device="d")), Rejected)
    assert parse_command(_cmd(id="t2", type="device_status", device="d")) == DeviceStatusCommand(
        id="t2", type="device_status", device="d")


# --- the audit log --------------------------------------------------------------------


def _fill(path: Path, count: int) -> None:
    log = AuditLog(path)
    log.open()
    for i in range(count):
        log.append(AuditEntry(who=f"op{i}", outcome="accepted", request_id=f"r{i}", type="write",
                              target="pump_1.mode", value=i))
    log.close()


def test_each_line_carries_the_hash_of_the_line_before(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _fill(path, 3)
    lines = path.read_bytes().splitlines()
    records = [json.loads(line) for line in lines]
    assert records[0]["prev"] == GENESIS
    assert [r["prev"] for r in records[1:]] == [line_hash(line) for line in lines[:-1]]
    assert [r["seq"] for r in records] == [1, 2, 3]
    assert verify(path) == []


def test_a_reopened_log_continues_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _fill(path, 2)
    _fill(path, 2)
    assert [r["seq"] for r in read_entries(path)] == [1, 2, 3, 4]
    assert verify(path) == []


def test_verify_names_an_edited_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _fill(path, 4)
    lines = path.read_text().splitlines()
    lines[1] = lines[1].replace('"value":1', '"value":99')
    path.write_text("\n".join(lines) + "\n")
    (problem,) = verify(path)
    assert problem.startswith("line 3: prev is not the SHA-256 of line 2")


def test_verify_names_a_deleted_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _fill(path, 4)
    lines = path.read_text().splitlines()
    del lines[1]
    path.write_text("\n".join(lines) + "\n")
    (problem,) = verify(path)
    assert problem.startswith("line 2: prev is not the SHA-256 of line 1")
    assert "seq is 3, expected 2" in problem


def test_verify_names_a_damaged_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _fill(path, 3)
    lines = path.read_text().splitlines()
    lines[0] = lines[0][:-5]
    path.write_text("\n".join(lines) + "\n")
    problems = verify(path)
    assert problems[0].startswith("line 1: not JSON")
    assert problems[1].startswith("line 2: prev is not the SHA-256 of line 1")


def test_a_line_torn_by_a_power_cut_is_ended_and_reported(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _fill(path, 2)
    with open(path, "ab") as file:
        file.write(b'{"seq":3,"ts":"2024')  # the power went here
    assert verify(path) == ["line 3: incomplete (the gateway stopped while writing it)",
                            "line 3: not JSON (Unterminated string starting at); "
                            "the line was damaged or edited"]
    _fill(path, 1)  # the next start ends the torn line and chains on from it
    problems = verify(path)
    assert [p.split(":")[0] for p in problems] == ["line 3"]
    assert read_entries(path)[-1]["seq"] == 4


def test_a_truncated_command_is_answered_when_its_id_can_be_read() -> None:
    parsed = parse_command(b'{"id": "cut-1", "type": "write", "device": "pump_1", "val')
    assert isinstance(parsed, Rejected) and parsed.request_id == "cut-1"
    assert "not JSON" in parsed.reason


async def test_a_write_still_running_at_stop_is_audited_when_it_ends(
    audit: AuditLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gateway.commands.handler as handler_module

    monkeypatch.setattr(handler_module, "CLOSE_TIMEOUT", 0.01)
    release = asyncio.Event()
    driver = FakeDriver(_device("pump_1"))

    async def slow_write(point: str, value: Any) -> None:
        await release.wait()
        raise DriverError("the bus was closed", "comm_failure")

    driver.write = slow_write  # type: ignore[method-assign]
    handler, _ = _handler(audit, driver)
    running = asyncio.create_task(
        handler.handle(_cmd(id="slow", type="write", device="pump_1", point="mode", value=1)))
    while not handler._lock.locked():  # noqa: SLF001 - wait until the write is under way
        await asyncio.sleep(0)
    await handler.close()  # gives up waiting; the drivers stop next
    release.set()
    reply = await running
    assert reply is not None and reply.ok is False
    assert read_entries(audit.path)[0]["outcome"] == "failed"
    with pytest.raises(RuntimeError):
        audit.append(AuditEntry(who="x", outcome="refused"))  # closed by the command itself


async def test_no_commands_are_taken_upstream_when_upstream_turns_them_off(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from gateway.commands import build_commands

    site = {"site": {"id": "estate", "name": "小区"}}
    off = SiteConfig.model_validate({**site, "upstream": {"host": "h", "commands": False}})
    none = SiteConfig.model_validate(site)
    for number, config in enumerate((off, none)):
        gateway = SimpleNamespace(config=config, runners=[], data_dir=tmp_path / str(number),
                                  load_config=None)
        handler = build_commands(gateway)  # type: ignore[arg-type]
        assert handler.connection is None  # nothing subscribed upstream: only the local CLI
        await handler.close()


@pytest.mark.parametrize("priority", [1, 2, 5, 6])
def test_life_safety_and_equipment_protection_priorities_are_never_taken_remotely(priority) -> None:
    from gateway.commands.authorise import Refused, writable_driver

    profile = Profile.from_data({
        "id": "ahu", "name": "AHU", "system": "hvac", "protocol": "bacnet",
        "points": {"fan": {"object": "binary-output,1", "writable": True}},
    })
    device = Device.model_validate({
        "id": "ahu_1", "profile": "ahu",
        "connection": {"type": "bacnet_ip", "address": "127.0.0.1:47809", "device_instance": 1},
    })
    config = SiteConfig(site={"id": "s", "name": "s"}).model_copy(
        update={"profiles": {"ahu": profile}, "devices": [device]})
    driver = FakeDriver(device)
    command = WriteCommand(id="w", type="write", device="ahu_1", point="fan", value=1,
                           priority=priority)
    with pytest.raises(Refused, match=f"priority {priority} is reserved"):
        writable_driver(config, [driver], command)
    allowed = command.model_copy(update={"priority": 8})
    assert writable_driver(config, [driver], allowed) is driver


def test_a_failed_fsync_does_not_break_the_chain_for_the_lines_after(tmp_path: Path, monkeypatch) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    log.open()
    entry = AuditEntry(who="op", outcome="accepted", request_id="r1", type="write",
                       target="pump_1.mode", value=1)
    log.append(entry)
    real_fsync, calls = os.fsync, []

    def failing_once(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 1:
            raise OSError(5, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", failing_once)
    with pytest.raises(OSError):
        log.append(entry)  # the line reached the file, its fsync failed
    log.append(entry)
    log.close()
    assert verify(tmp_path / "audit.jsonl") == []
    assert [e["seq"] for e in read_entries(tmp_path / "audit.jsonl")] == [1, 2, 3]
