"""--json on every command that talks to the running gateway, as on probe, scan and tail:
a list's items, or a command's whole reply (refused ones too, with exit code 1)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_cli_ops import Daemon
from test_local_control import ALARM, FakeRules, short_dir

from gateway.cli import main


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    for data_dir in short_dir(tmp_path):
        running = Daemon(data_dir, FakeRules())
        yield running
        running.stop()


def _gateway(daemon: Daemon, *args: str) -> int:
    return main([*args, "--data-dir", str(daemon.served.path.parent)])


def test_an_acknowledgement_prints_the_gateways_reply_as_json(daemon: Daemon, capsys) -> None:
    assert _gateway(daemon, "ack", ALARM, "--by", "张工", "--json") == 0
    reply = json.loads(capsys.readouterr().out)
    assert reply["ok"] is True and reply["id"].startswith("cli-")
    assert reply["result"]["state"] == "active_acknowledged"


def test_a_refused_command_prints_its_reply_as_json_and_exits_1(daemon: Daemon, capsys) -> None:
    assert _gateway(daemon, "ack", "pump_b1_1.no_such_alarm", "--json") == 1
    out = capsys.readouterr()
    reply = json.loads(out.out)
    assert reply["ok"] is False and reply["error"]
    assert out.err == ""  # a script reads the reason from the JSON


@pytest.mark.parametrize("args", [
    ["alarms"], ["tickets"], ["maintenance", "pump_b1_1", "--for", "1h"],
    ["shelve", ALARM, "--for", "1h"], ["unshelve", ALARM], ["ticket", "T-20261123-0001", "arrive"],
])
def test_every_command_on_the_control_socket_takes_json(daemon: Daemon, capsys, args) -> None:
    _gateway(daemon, *args, "--json")
    json.loads(capsys.readouterr().out)  # whatever the outcome, stdout is one JSON document
