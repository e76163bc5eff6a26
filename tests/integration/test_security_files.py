"""State and audit files are the gateway's user's and group's only: `gateway run`, started
with the loosest umask there is and a data dir anyone could write, leaves a data dir of
0750 and files of 0640 (0600 at most), and the control socket at 0660."""

from __future__ import annotations

import json
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from gateway_process import GatewayProcess, StaticDevice, wait_until, write_site

from gateway.commands.local import request

pytestmark = pytest.mark.integration

# Every file the gateway keeps in its data dir (SQLite adds -wal and -shm beside a database).
EXPECTED = {"outbox.db", "alarms.db", "tickets.db", "rules_state.db", "energy.db", "history.db",
            "audit.jsonl", "status.json", "control.sock"}


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def root() -> Iterator[Path]:
    """A short folder: the control socket's path must fit in 107 bytes."""
    with tempfile.TemporaryDirectory(prefix="gwperm", dir="/tmp") as folder:
        yield Path(folder)


def test_state_files_are_readable_by_the_gateways_user_and_group_only(
    free_port: int, root: Path
) -> None:
    data_dir = root / "data"
    data_dir.mkdir(parents=True)
    data_dir.chmod(0o777)  # as loose as it gets: the gateway must tighten it
    site = write_site(root, site_id="perm", devices={"pump_1": free_port},
                      sinks="sinks:\n  - type: history\n")
    gateway = GatewayProcess(site, data_dir)
    old_umask = os.umask(0)  # the child inherits it: the gateway must not rely on it
    try:
        with StaticDevice(free_port):
            gateway.start()
            os.umask(old_umask)
            socket_path = data_dir / "control.sock"
            wait_until(lambda: socket_path.exists() and (data_dir / "status.json").exists(), 20,
                       "the control socket and status file")
            reply = request(socket_path, {"id": "perm-1", "type": "device_status",
                                          "device": "pump_1"})
            assert reply["ok"] is True, reply  # writes the audit log
            wait_until(lambda: {p.name for p in data_dir.iterdir()} >= EXPECTED, 20,
                       f"every state file ({', '.join(sorted(EXPECTED))})")
            modes = {p.name: _mode(p) for p in sorted(data_dir.rglob("*"))}
            gateway.terminate()
    finally:
        os.umask(old_umask)
        gateway.stop_quietly()

    assert _mode(data_dir) == 0o750
    loose = {}
    for name, mode in modes.items():
        path = data_dir / name
        if name == "control.sock":
            wanted_ok = mode == 0o660
        elif path.is_dir():
            wanted_ok = mode == 0o750
        else:  # 0640 or 0600: nothing for others, nothing for the group to write or run
            wanted_ok = mode in (0o640, 0o600)
        if not wanted_ok:
            loose[name] = oct(mode)
    assert loose == {}, f"looser than 0640/0750/0660: {json.dumps(loose)}"
    assert {"outbox.db-wal", "audit.jsonl"} <= set(modes)
