"""The local control socket: commands from the box audited under the peer's account,
read-only queries from the running gateway, and requests the daemon must survive."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import socket
import stat
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from drivers.base import Driver, DriverError
from gateway.batch import Batch, Event
from gateway.commands import AuditLog, CommandHandler, build_commands
from gateway.commands.audit import AUDIT_FILE, read_entries
from gateway.commands.local import (
    CONTROL_SOCKET,
    MAX_CLIENTS,
    MAX_LINE,
    ControlError,
    LocalControl,
    NotRunning,
    request,
)
from gateway.config.models import Device, Profile, SiteConfig
from gateway.health import DeviceHealth

ME = pwd.getpwuid(os.getuid()).pw_name
ALARM = "pump_b1_1.low_outlet_pressure"
PROFILE = Profile.from_data({
    "id": "booster",
    "name": "加压泵",
    "system": "water_supply",
    "points": {
        "outlet_pressure": {"address": 1, "scale": 0.001},
        "setpoint": {"address": 0, "scale": 0.01, "min": 0.1, "max": 1.0, "writable": True},
    },
})


def _device(device_id: str) -> Device:
    return Device.model_validate({
        "id": device_id, "profile": "booster",
        "connection": {"type": "modbus_tcp", "host": "127.0.0.1", "port": 1502},
    })


class FakeDriver(Driver):
    """Writes wait for `release` when one is given, so a test can stop mid-command."""

    def __init__(self, device: Device) -> None:
        super().__init__(device, PROFILE)
        self.writes: list[tuple[str, Any]] = []
        self.started = asyncio.Event()
        self.release: asyncio.Event | None = None

    @property
    def points(self) -> tuple[str, ...]:
        return tuple(PROFILE.points)

    async def read(self, group: str = "default") -> Batch:
        raise DriverError("not used", "comm_failure")

    async def write(self, point: str, value: Any) -> None:
        self.started.set()
        if self.release is not None:
            await self.release.wait()
        self.writes.append((point, value))

    def stats(self) -> dict[str, Any]:
        return {"requests": 3}


class FakeRules:
    """The rule engine's commands and views, recording every call; unknown ids are refused."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.state = {ALARM: "active_unacknowledged", "meter_1.stale": "normal"}
        self.shelved_until: dict[str, float] = {}
        self.modes: dict[str, float] = {"pump_b1_2": 1795435200.0}

    def _known(self, alarm_id: str) -> None:
        if alarm_id not in self.state:
            raise ValueError(f"unknown alarm {alarm_id!r}; known: {', '.join(sorted(self.state))}")

    def acknowledge(self, alarm_id: str, by: str, comment: str | None = None) -> list[Event]:
        self.calls.append(("acknowledge", alarm_id, by, comment))
        self._known(alarm_id)
        if self.state[alarm_id] != "active_unacknowledged":
            raise ValueError(f"alarm {alarm_id} is {self.state[alarm_id]}; nothing to acknowledge")
        self.state[alarm_id] = "active_acknowledged"
        return [Event("alarm_event", 1.0, "pump_b1_1", {"alarm": alarm_id, "event": "acknowledged"})]

    def shelve(self, alarm_id: str, by: str, *, until: float,
               reason: str | None = None) -> list[Event]:
        self.calls.append(("shelve", alarm_id, by, until, reason))
        self._known(alarm_id)
        self.state[alarm_id], self.shelved_until[alarm_id] = "shelved", until
        return []

    def unshelve(self, alarm_id: str, by: str) -> list[Event]:
        self.calls.append(("unshelve", alarm_id, by))
        self._known(alarm_id)
        if self.state[alarm_id] != "shelved":
            raise ValueError(f"alarm {alarm_id} is not shelved")
        self.state[alarm_id] = "active_unacknowledged"
        self.shelved_until.pop(alarm_id, None)
        return []

    def set_in_service(self, alarm_id: str, in_service: bool, by: str,
                       comment: str | None = None) -> list[Event]:
        self.calls.append(("set_in_service", alarm_id, in_service, by, comment))
        return []

    def update_ticket(self, ticket_id: str, step: str, by: str, *, note: str = "",
                      owner: str | None = None, backup: str | None = None) -> list[Event]:
        self.calls.append(("update_ticket", ticket_id, step, by, note, owner, backup))
        if ticket_id != "T-20261123-0001":
            raise ValueError(f"unknown ticket {ticket_id!r}")
        return [Event("ticket_state", 1.0, "pump_b1_1", {
            **self._ticket(), "state": "dispatched", "owner": owner, "backup": backup,
        })]

    def set_maintenance(self, device: str, on: bool, by: str, *, duration: float | None = None,
                        reason: str | None = None) -> list[Event]:
        self.calls.append(("set_maintenance", device, on, by, duration, reason))
        until = 1795435200.0 if on else None
        body = {"maintenance": on, "until": "2026-11-23T10:00:00.000Z" if on else None, "by": by}
        if on:
            self.modes[device] = until  # type: ignore[assignment]
        else:
            self.modes.pop(device, None)
        return [Event("maintenance", 1.0, device, body)]

    def alarm(self, alarm_id: str) -> dict[str, Any]:
        self._known(alarm_id)
        return self._view(alarm_id)

    def alarms(self, active_only: bool = False) -> list[dict[str, Any]]:
        self.calls.append(("alarms", active_only))
        return [self._view(a) for a in sorted(self.state)
                if not active_only or self.state[a] != "normal"]

    def tickets(self, open_only: bool = False) -> list[dict[str, Any]]:
        self.calls.append(("tickets", open_only))
        return [self._ticket()]

    def maintenance_modes(self) -> dict[str, float]:
        return dict(self.modes)

    def stats(self) -> dict[str, Any]:
        return {"rules": 2}

    def _view(self, alarm_id: str) -> dict[str, Any]:
        until = self.shelved_until.get(alarm_id)
        return {
            "alarm": alarm_id, "name": "1号加压泵", "device": alarm_id.split(".")[0],
            "state": self.state[alarm_id], "severity": "major", "message": "出水压力低 0.12 MPa",
            "active": True, "raised_at": "2026-11-23T02:00:00.000Z",
            "acknowledged_at": None, "acknowledged_by": None,
            "shelved_until": None if until is None else until,
            "chattering": False, "last_change": "2026-11-23T02:00:00.000Z",
            "closed": False, "rule": alarm_id.split(".")[1],
        }

    @staticmethod
    def _ticket() -> dict[str, Any]:
        return {
            "ticket": "T-20261123-0001", "device": "pump_b1_1", "fault": "low_outlet_pressure",
            "state": "open", "priority": "urgent", "title": "1号加压泵 出水压力低",
            "owner": None, "backup": None, "due": "2026-11-23T02:15:00.000Z",
        }


class FakePipeline:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit_event(self, event: Event) -> None:
        self.events.append(event)


class FakeGateway:
    """What the handler and the control socket read: config, drivers, health, rules, pipeline."""

    def __init__(self, rules: FakeRules | None) -> None:
        site = SiteConfig.model_validate({"site": {"id": "estate", "name": "阳光花园"}})
        devices = [_device("pump_b1_1")]
        self.config = site.model_copy(update={"profiles": {"booster": PROFILE}, "devices": devices})
        self.drivers: list[Driver] = [FakeDriver(d) for d in devices]
        self.health = {d.id: DeviceHealth(d.id) for d in devices}
        self.rules = rules
        self.pipeline = FakePipeline()

    async def reload(self, config: SiteConfig) -> dict[str, object]:
        raise AssertionError("a refused reload never reaches the gateway")

    def status(self) -> dict[str, object]:
        return {"site": self.config.site.id, "devices": {"pump_b1_1": {"online": True}}}


def short_dir(tmp_path: Path) -> Iterator[Path]:
    """tmp_path, unless its socket path would pass the 107 bytes a Unix socket allows."""
    if len(os.fsencode(tmp_path / CONTROL_SOCKET)) <= 100:
        yield tmp_path
        return
    with tempfile.TemporaryDirectory(prefix="gw", dir="/tmp") as short:
        yield Path(short)


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    yield from short_dir(tmp_path)


class Served:
    """A LocalControl on a real socket over a real handler and audit log."""

    def __init__(self, data_dir: Path, rules: FakeRules | None) -> None:
        self.gateway = FakeGateway(rules)
        self.rules = rules
        self.audit = AuditLog(data_dir / AUDIT_FILE)
        self.audit.open()
        self.handler = CommandHandler(self.gateway, None, self.audit)
        self.path = data_dir / CONTROL_SOCKET
        self.control = LocalControl(self.gateway, self.handler, self.path)

    async def ask(self, body: dict[str, Any]) -> dict[str, Any]:
        """The synchronous CLI client, off the loop the server runs on."""
        return await asyncio.to_thread(request, self.path, body)

    def entries(self) -> list[dict[str, Any]]:
        return read_entries(self.audit.path)


@pytest.fixture
async def served(data_dir: Path) -> AsyncIterator[Served]:
    served = Served(data_dir, FakeRules())
    await served.control.start()
    yield served
    await served.control.stop()
    await served.handler.close()


async def _raw(path: Path, *lines: bytes) -> list[dict[str, Any]]:
    """Send raw lines on one connection and read one reply per line."""
    reader, writer = await asyncio.open_unix_connection(os.fspath(path))
    try:
        replies = []
        for line in lines:
            writer.write(line)
            await writer.drain()
            replies.append(json.loads(await reader.readline()))
        return replies
    finally:
        writer.close()
        await writer.wait_closed()


# --- commands --------------------------------------------------------------------------


async def test_a_command_is_run_and_audited_under_the_peers_account(served: Served) -> None:
    reply = await served.ask({"id": "cli-1", "type": "device_status", "device": "pump_b1_1",
                              "by": "张工"})
    assert reply["ok"] is True and reply["id"] == "cli-1"
    assert reply["result"]["device"] == "pump_b1_1"
    assert reply["result"]["requests"] == {"requests": 3}
    [entry] = served.entries()
    assert entry["who"] == "张工"
    assert entry["via"] == f"cli:{ME}"
    assert (entry["id"], entry["type"], entry["outcome"]) == ("cli-1", "device_status", "accepted")


async def test_a_refused_command_says_why_and_is_audited(served: Served) -> None:
    reply = await served.ask({"id": "cli-2", "type": "reload"})
    assert reply["ok"] is False
    assert "nothing to reload" in reply["error"]
    [entry] = served.entries()
    assert entry["outcome"] == "refused"
    assert entry["who"] == entry["via"] == f"cli:{ME}"  # no "by": the account is who


async def test_a_command_without_an_id_is_audited_and_answered_with_the_reason(
    served: Served,
) -> None:
    reply = await served.ask({"type": "device_status", "device": "pump_b1_1"})
    assert reply == {"ok": False, "error": reply["error"]}
    assert "needs a request id" in reply["error"]
    [entry] = served.entries()
    assert entry["outcome"] == "refused" and entry["via"] == f"cli:{ME}"


async def test_an_acknowledgement_reaches_the_rule_engine(served: Served) -> None:
    assert served.rules is not None
    reply = await served.ask({"id": "cli-3", "type": "ack_alarm", "alarm": ALARM,
                              "comment": "已派人", "by": "张工"})
    assert reply["ok"] is True, reply
    assert reply["result"]["alarm"] == ALARM
    assert reply["result"]["state"] == "active_acknowledged"
    assert ("acknowledge", ALARM, "张工", "已派人") in served.rules.calls
    assert [e.type for e in served.gateway.pipeline.events] == ["alarm_event"]
    [entry] = served.entries()
    assert (entry["type"], entry["target"], entry["who"], entry["via"]) == (
        "ack_alarm", ALARM, "张工", f"cli:{ME}")


async def test_commands_on_one_connection_are_answered_in_order(served: Served) -> None:
    replies = await _raw(
        served.path,
        b'{"id":"a","type":"device_status","device":"pump_b1_1"}\n',
        b'{"id":"b","type":"device_status","device":"pump_9"}\n',
    )
    assert [(r["id"], r["ok"]) for r in replies] == [("a", True), ("b", False)]
    assert "unknown device 'pump_9'" in replies[1]["error"]


async def test_a_command_in_flight_when_the_socket_stops_still_completes_and_is_audited(
    data_dir: Path,
) -> None:
    served = Served(data_dir, FakeRules())
    driver = served.gateway.drivers[0]
    assert isinstance(driver, FakeDriver)
    driver.release = asyncio.Event()
    await served.control.start()
    reader, writer = await asyncio.open_unix_connection(os.fspath(served.path))
    writer.write(b'{"id":"w1","type":"write","device":"pump_b1_1","point":"setpoint",'
                 b'"value":0.45}\n')
    await writer.drain()
    await driver.started.wait()
    await served.control.stop()  # cancels the connection, not the write
    assert not served.path.exists()
    driver.release.set()
    await served.handler.close()  # waits for the command in flight
    assert driver.writes == [("setpoint", 0.45)]
    [entry] = served.entries()
    assert (entry["id"], entry["outcome"], entry["via"]) == ("w1", "accepted", f"cli:{ME}")
    writer.close()


# --- queries ---------------------------------------------------------------------------


async def test_alarms_are_the_active_ones_unless_all_are_asked_for(served: Served) -> None:
    active = await served.ask({"query": "alarms"})
    assert active["ok"] is True
    assert [a["alarm"] for a in active["result"]["alarms"]] == [ALARM]
    everything = await served.ask({"query": "alarms", "all": True})
    assert len(everything["result"]["alarms"]) == 2
    assert served.rules is not None
    assert [c for c in served.rules.calls if c[0] == "alarms"] == [("alarms", True),
                                                                   ("alarms", False)]
    assert served.entries() == []  # a query changes nothing and is not audited


async def test_tickets_maintenance_and_status_are_answered(served: Served) -> None:
    tickets = await served.ask({"query": "tickets", "all": False, "id": "q1"})
    assert tickets["id"] == "q1"
    assert tickets["result"]["tickets"][0]["title"] == "1号加压泵 出水压力低"
    maintenance = await served.ask({"query": "maintenance"})
    assert maintenance["result"] == {"maintenance": {"pump_b1_2": 1795435200.0}}
    status = await served.ask({"query": "status"})
    assert status["result"]["site"] == "estate"


async def test_without_a_rule_engine_queries_say_rules_are_not_running(data_dir: Path) -> None:
    served = Served(data_dir, None)
    await served.control.start()
    try:
        reply = await served.ask({"query": "alarms"})
        assert reply["ok"] is False
        assert "rule engine is not running" in reply["error"]
        assert (await served.ask({"query": "status"}))["ok"] is True
    finally:
        await served.control.stop()
        await served.handler.close()


@pytest.mark.parametrize(("body", "error"), [
    ({"query": "everything"}, "query 'everything' is not known; one of alarms, tickets"),
    ({"query": "alarms", "all": "yes"}, "all must be true or false"),
    ({"query": "alarms", "colour": 1}, "unknown field 'colour'"),
])
async def test_a_query_that_is_not_one_is_answered_with_an_error(
    served: Served, body: dict[str, Any], error: str,
) -> None:
    reply = await served.ask(body)
    assert reply["ok"] is False
    assert error in reply["error"]


# --- requests the daemon must survive ----------------------------------------------------


async def test_malformed_and_oversized_lines_get_errors_and_the_connection_keeps_serving(
    served: Served,
) -> None:
    replies = await _raw(
        served.path,
        b'{"query": "alarms"\n',
        b"[1, 2]\n",
        b"\xff\xfe\n",
        b'{"id": "big", "type": "reload", "pad": "' + b"x" * (MAX_LINE + 10) + b'"}\n',
        b"\n" + b'{"query": "alarms"}\n',  # a blank line is skipped, not answered
    )
    assert [r["ok"] for r in replies] == [False, False, False, False, True]
    assert replies[0]["error"].startswith("request is not JSON")
    assert replies[1]["error"] == "a request is a JSON object, not list"
    assert replies[2]["error"].startswith("request is not UTF-8")
    assert f"over {MAX_LINE} bytes" in replies[3]["error"]
    assert served.entries() == []  # none of these was a command
    assert (await served.ask({"query": "maintenance"}))["ok"] is True


async def test_a_last_line_without_newline_is_still_answered(served: Served) -> None:
    reader, writer = await asyncio.open_unix_connection(os.fspath(served.path))
    writer.write(b'{"query": "tickets"}')
    writer.write_eof()
    reply = json.loads(await reader.readline())
    writer.close()
    assert reply["ok"] is True


async def test_a_client_that_hangs_up_mid_line_does_not_disturb_the_server(
    served: Served,
) -> None:
    _, writer = await asyncio.open_unix_connection(os.fspath(served.path))
    writer.write(b'{"query": "al' + b"x" * (MAX_LINE + 1))
    writer.close()
    await writer.wait_closed()
    assert (await served.ask({"query": "alarms"}))["ok"] is True


async def test_connections_beyond_the_limit_are_told_to_try_again(served: Served) -> None:
    held = []
    try:
        for _ in range(MAX_CLIENTS):  # each answered once, so each is being served
            reader, writer = await asyncio.open_unix_connection(os.fspath(served.path))
            writer.write(b'{"query": "maintenance"}\n')
            assert json.loads(await reader.readline())["ok"] is True
            held.append(writer)
        reader, writer = await asyncio.open_unix_connection(os.fspath(served.path))
        refused = json.loads(await reader.readline())
        assert refused["ok"] is False and "try again" in refused["error"]
        assert await reader.read() == b""  # and the connection is closed
        writer.close()
    finally:
        for writer in held:
            writer.close()


# --- the socket file ---------------------------------------------------------------------


async def test_the_socket_is_group_only_and_removed_on_stop(served: Served) -> None:
    mode = os.stat(served.path).st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o660
    await served.control.stop()
    assert not served.path.exists()
    assert [p.name for p in served.path.parent.iterdir() if p.name.startswith(".ctl.")] == []


async def test_a_stale_socket_from_a_killed_daemon_is_replaced(data_dir: Path) -> None:
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(os.fspath(data_dir / CONTROL_SOCKET))
    stale.close()  # the file stays, nobody listens: what SIGKILL leaves
    served = Served(data_dir, FakeRules())
    await served.control.start()
    try:
        assert (await served.ask({"query": "alarms"}))["ok"] is True
    finally:
        await served.control.stop()
        await served.handler.close()


async def test_a_second_gateway_on_the_same_data_dir_is_refused(served: Served) -> None:
    other = LocalControl(served.gateway, served.handler, served.path)
    with pytest.raises(ControlError, match="another gateway is already serving"):
        await other.start()
    assert (await served.ask({"query": "alarms"}))["ok"] is True  # the first one is untouched


async def test_a_file_that_is_not_a_socket_is_left_alone(data_dir: Path) -> None:
    (data_dir / CONTROL_SOCKET).write_text("notes", encoding="utf-8")
    served = Served(data_dir, FakeRules())
    with pytest.raises(ControlError, match="is not a socket"):
        await served.control.start()
    assert (data_dir / CONTROL_SOCKET).read_text(encoding="utf-8") == "notes"
    served.audit.close()


async def test_a_data_dir_too_deep_for_a_unix_socket_is_refused_with_a_reason(
    data_dir: Path,
) -> None:
    served = Served(data_dir, FakeRules())
    deep = data_dir / ("d" * 120) / CONTROL_SOCKET
    with pytest.raises(ControlError, match="use a shorter data_dir"):
        await LocalControl(served.gateway, served.handler, deep).start()
    served.audit.close()


def test_the_client_says_clearly_when_no_gateway_is_running(data_dir: Path) -> None:
    with pytest.raises(NotRunning) as caught:
        request(data_dir / CONTROL_SOCKET, {"query": "alarms"})
    assert str(caught.value) == (
        f"no gateway is running with data dir {data_dir} (no control socket at "
        f"{data_dir / CONTROL_SOCKET}); start it with `gateway run`"
    )
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(os.fspath(data_dir / CONTROL_SOCKET))
    stale.close()
    with pytest.raises(NotRunning):
        request(data_dir / CONTROL_SOCKET, {"query": "alarms"})


# --- wiring ------------------------------------------------------------------------------


async def test_build_commands_always_makes_a_handler_listening_upstream_only_when_allowed(
    data_dir: Path,
) -> None:
    from types import SimpleNamespace

    site = {"site": {"id": "estate", "name": "小区"}}
    for number, config in enumerate((
        SiteConfig.model_validate(site),
        SiteConfig.model_validate({**site, "upstream": {"host": "h", "commands": False}}),
    )):
        here = data_dir / str(number)
        gateway = SimpleNamespace(config=config, runners=[], data_dir=here, load_config=None)
        handler = build_commands(gateway)  # type: ignore[arg-type]
        assert handler.connection is None
        assert handler.audit.path == here / AUDIT_FILE
        assert handler.audit.path.exists()
        await handler.close()
