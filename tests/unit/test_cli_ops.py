"""`gateway alarms`, `ack`, `shelve`, `tickets`, `ticket`, `maintenance` against a real
control socket served by a background event loop, as a daemon would serve it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from test_local_control import ALARM, ME, FakeRules, Served, short_dir

from gateway.cli import main
from gateway.cli_ops import local_time, login_user
from gateway.commands.local import CONTROL_SOCKET


class Daemon:
    """A LocalControl on its own loop in a thread: the CLI runs in the test's thread.

    The daemon's log lines are captured (`logs`), not printed: in one process they would
    land in the stdout the tests read the CLI's output from.
    """

    def __init__(self, data_dir: Path, rules: FakeRules | None) -> None:
        self._stack = contextlib.ExitStack()
        self.logs: list[dict[str, Any]] = self._stack.enter_context(structlog.testing.capture_logs())
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.served: Served = self.run(self._start(data_dir, rules))

    @staticmethod
    async def _start(data_dir: Path, rules: FakeRules | None) -> Served:
        served = Served(data_dir, rules)
        await served.control.start()
        return served

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    def stop(self) -> None:
        self.run(self.served.control.stop())
        self.run(self.served.handler.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()
        self._stack.close()

    @property
    def rules(self) -> FakeRules:
        assert self.served.rules is not None
        return self.served.rules


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    yield from short_dir(tmp_path)


@pytest.fixture
def daemon(data_dir: Path) -> Iterator[Daemon]:
    running = Daemon(data_dir, FakeRules())
    yield running
    running.stop()


def gateway(daemon: Daemon, *args: str) -> int:
    return main([*args, "--data-dir", str(daemon.served.path.parent)])


# --- lists -------------------------------------------------------------------------------


def test_alarms_prints_the_active_ones_as_a_table(daemon: Daemon, capsys) -> None:
    assert gateway(daemon, "alarms") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["alarm", "state", "severity", "since", "message"]
    assert lines[2].split() == [ALARM, "active_unacknowledged", "major",
                                *local_time("2026-11-23T02:00:00.000Z").split(),
                                "出水压力低", "0.12", "MPa"]
    assert len(lines) == 3
    assert ("alarms", True) in daemon.rules.calls


def test_alarms_all_and_json(daemon: Daemon, capsys) -> None:
    assert gateway(daemon, "alarms", "--all", "--json") == 0
    alarms = json.loads(capsys.readouterr().out)
    assert [a["alarm"] for a in alarms] == ["meter_1.stale", ALARM]
    assert ("alarms", False) in daemon.rules.calls


def test_tickets_prints_id_device_state_priority_due_and_title(daemon: Daemon, capsys) -> None:
    assert gateway(daemon, "tickets") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["ticket", "device", "state", "priority", "due", "title"]
    assert lines[2].split() == ["T-20261123-0001", "pump_b1_1", "open", "urgent",
                                *local_time("2026-11-23T02:15:00.000Z").split(),
                                "1号加压泵", "出水压力低"]
    assert ("tickets", True) in daemon.rules.calls


def test_lists_say_so_when_the_rule_engine_is_not_running(data_dir: Path, capsys) -> None:
    running = Daemon(data_dir, None)
    try:
        assert main(["alarms", "--data-dir", str(data_dir)]) == 1
    finally:
        running.stop()
    assert "rule engine is not running" in capsys.readouterr().err


# --- changes -----------------------------------------------------------------------------


def test_ack_prints_the_new_state_and_is_audited_with_who_and_the_account(
    daemon: Daemon, capsys,
) -> None:
    code = gateway(daemon, "ack", ALARM, "--comment", "已派人", "--by", "张工")
    assert code == 0
    assert capsys.readouterr().out == f"{ALARM}: active_acknowledged (by 张工)\n"
    assert ("acknowledge", ALARM, "张工", "已派人") in daemon.rules.calls
    [entry] = daemon.served.entries()
    assert (entry["type"], entry["who"], entry["via"]) == ("ack_alarm", "张工", f"cli:{ME}")
    assert entry["id"].startswith("cli-") and len(entry["id"]) == len("cli-") + 12


def test_a_refused_ack_prints_the_reason_and_exits_1(daemon: Daemon, capsys) -> None:
    assert gateway(daemon, "ack", ALARM, "--by", "张工") == 0
    capsys.readouterr()
    assert gateway(daemon, "ack", ALARM, "--by", "张工") == 1
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err == f"refused: alarm {ALARM} is active_acknowledged; nothing to acknowledge\n"
    assert [e["outcome"] for e in daemon.served.entries()] == ["accepted", "refused"]


def test_by_defaults_to_the_login_user(daemon: Daemon, capsys, monkeypatch) -> None:
    monkeypatch.delenv("SUDO_USER", raising=False)
    assert gateway(daemon, "ack", ALARM) == 0
    assert capsys.readouterr().out.endswith(f"(by {login_user()})\n")
    assert daemon.served.entries()[0]["who"] == login_user()


def test_shelve_and_unshelve(daemon: Daemon, capsys) -> None:
    assert gateway(daemon, "shelve", ALARM, "--for", "2h", "--reason", "换传感器",
                   "--by", "张工") == 0
    [call] = [c for c in daemon.rules.calls if c[0] == "shelve"]
    _, alarm, by, until, reason = call
    assert (alarm, by, reason) == (ALARM, "张工", "换传感器")
    assert capsys.readouterr().out == f"{ALARM}: shelved until {local_time(until)} (by 张工)\n"
    assert daemon.served.entries()[0]["value"]["for"] == 7200.0  # the audit keeps seconds

    assert gateway(daemon, "unshelve", ALARM, "--by", "张工") == 0
    assert capsys.readouterr().out == f"{ALARM}: active_unacknowledged (by 张工)\n"
    assert gateway(daemon, "unshelve", ALARM, "--by", "张工") == 1
    assert capsys.readouterr().err == f"refused: alarm {ALARM} is not shelved\n"


def test_shelve_needs_a_duration_it_can_read(daemon: Daemon, capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        gateway(daemon, "shelve", ALARM, "--for", "2 hours")
    assert exited.value.code == 2
    assert "is not a duration" in capsys.readouterr().err
    assert daemon.served.entries() == []  # never sent


def test_ticket_dispatch_names_the_owner(daemon: Daemon, capsys) -> None:
    code = gateway(daemon, "ticket", "T-20261123-0001", "dispatch", "--owner", "李工",
                   "--backup", "赵工", "--by", "调度-王")
    assert code == 0
    due = local_time("2026-11-23T02:15:00.000Z")
    assert capsys.readouterr().out == (
        f"T-20261123-0001: dispatched, owner 李工, backup 赵工, due {due} (by 调度-王)\n")
    assert ("update_ticket", "T-20261123-0001", "dispatch", "调度-王", "", "李工", "赵工") \
        in daemon.rules.calls


def test_a_dispatch_without_owner_is_refused_before_the_engine(daemon: Daemon, capsys) -> None:
    assert gateway(daemon, "ticket", "T-20261123-0001", "dispatch") == 1
    assert "dispatch needs owner" in capsys.readouterr().err
    assert not [c for c in daemon.rules.calls if c[0] == "update_ticket"]
    assert daemon.served.entries()[0]["outcome"] == "refused"


def test_maintenance_on_for_a_while_and_off(daemon: Daemon, capsys) -> None:
    assert gateway(daemon, "maintenance", "pump_b1_1", "--for", "2h", "--reason", "换泵",
                   "--by", "张工") == 0
    until = local_time("2026-11-23T10:00:00.000Z")
    assert capsys.readouterr().out == (
        f"pump_b1_1: in maintenance until {until}, its alarms suppressed (by 张工)\n")
    assert ("set_maintenance", "pump_b1_1", True, "张工", 7200.0, "换泵") in daemon.rules.calls

    assert gateway(daemon, "maintenance", "pump_b1_1", "--off", "--by", "张工") == 0
    assert capsys.readouterr().out == (
        "pump_b1_1: out of maintenance, its alarms announced again (by 张工)\n")
    assert ("set_maintenance", "pump_b1_1", False, "张工", None, None) in daemon.rules.calls


def test_maintenance_needs_for_or_off(daemon: Daemon, capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        gateway(daemon, "maintenance", "pump_b1_1")
    assert exited.value.code == 2
    assert "one of the arguments --for --off is required" in capsys.readouterr().err


# --- finding the daemon ------------------------------------------------------------------


def test_the_data_dir_comes_from_the_site_config(daemon: Daemon, tmp_path: Path, capsys) -> None:
    site = tmp_path / "site.yaml"
    site.write_text("site:\n  id: estate\n  name: 阳光花园\n"
                    f"data_dir: {daemon.served.path.parent}\n", encoding="utf-8")
    assert main(["tickets", "-c", str(site)]) == 0
    assert "T-20261123-0001" in capsys.readouterr().out


@pytest.mark.parametrize("args", [
    ["alarms"], ["tickets", "--all"], ["ack", ALARM], ["maintenance", "pump_b1_1", "--off"],
])
def test_without_a_running_gateway_the_cli_says_so_and_exits_2(
    data_dir: Path, capsys, args: list[str],
) -> None:
    assert main([*args, "--data-dir", str(data_dir)]) == 2
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err == (
        f"gateway: no gateway is running with data dir {data_dir} (no control socket at "
        f"{data_dir / CONTROL_SOCKET}); start it with `gateway run`\n"
    )
