"""The audit log is append-only and hash-chained: `gateway audit --verify` (the CLI, as an
operator runs it) names an edited, deleted or inserted line and exits 1; commands that
arrive together still make one unbroken chain."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from gateway.commands.audit import AUDIT_FILE, AuditEntry, AuditLog, read_entries, verify

ROOT = Path(__file__).resolve().parents[2]


def _write_log(data_dir: Path, count: int = 5) -> Path:
    data_dir.mkdir(parents=True, exist_ok=True)
    log = AuditLog(data_dir / AUDIT_FILE)
    log.open()
    for number in range(1, count + 1):
        log.append(AuditEntry(
            who="监控中心 刘工", via="mqtt:platform-ops", outcome="accepted",
            request_id=f"req-{number}", type="write", target="pump_b1_1.setpoint", value=0.4,
        ))
    log.close()
    return data_dir / AUDIT_FILE


def _verify(data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "audit", "--verify", "--data-dir", str(data_dir)],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )


def test_an_intact_log_verifies_with_exit_0(tmp_path: Path) -> None:
    _write_log(tmp_path)
    result = _verify(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 entries, hash chain intact" in result.stdout


def test_an_edited_value_is_named_at_the_line_after_it(tmp_path: Path) -> None:
    path = _write_log(tmp_path)
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[2] = lines[2].replace('"value":0.4', '"value":0.9')  # someone changes what was written
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = _verify(tmp_path)
    assert result.returncode == 1
    assert f"{path}: line 4: prev is not the SHA-256 of line 3" in result.stdout
    assert "1 problem" in result.stdout


def test_a_deleted_line_is_named_where_the_gap_is(tmp_path: Path) -> None:
    path = _write_log(tmp_path)
    lines = path.read_text(encoding="utf-8").splitlines()
    del lines[1]  # a refused command someone wants forgotten
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = _verify(tmp_path)
    assert result.returncode == 1
    assert "line 2: prev is not the SHA-256 of line 1" in result.stdout
    assert "seq is 3, expected 2: lines were deleted or inserted" in result.stdout


def test_an_inserted_line_is_named_even_with_a_plausible_seq_and_prev(tmp_path: Path) -> None:
    """The forger copies the line before's hash into `prev`: the line after still breaks."""
    from gateway.commands.audit import line_hash

    path = _write_log(tmp_path)
    lines = path.read_text(encoding="utf-8").splitlines()
    forged = json.loads(lines[2])
    forged.update(id="req-forged", value=1.0, prev=line_hash(lines[2].encode()), seq=4)
    lines.insert(3, json.dumps(forged, ensure_ascii=False, separators=(",", ":")))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = _verify(tmp_path)
    assert result.returncode == 1
    assert f"{path}: line 4:" not in result.stdout  # the forged line itself links...
    assert f"{path}: line 5: prev is not the SHA-256 of line 4" in result.stdout  # ...not the next
    assert "seq is 4, expected 5" in result.stdout


def test_verify_json_lists_every_problem(tmp_path: Path) -> None:
    path = _write_log(tmp_path)
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[0] = lines[0].replace("刘工", "王工")
    del lines[3]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "audit", "--verify", "--json",
         "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False
    assert [p.split(":")[0] for p in report["problems"]] == ["line 2", "line 4"]


# --- commands arriving together ---------------------------------------------------------


def test_appends_from_many_threads_make_one_chain(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / AUDIT_FILE)
    log.open()
    threads, per_thread = 8, 40

    def append(worker: int) -> None:
        for number in range(per_thread):
            log.append(AuditEntry(who=f"worker-{worker}", outcome="accepted",
                                  request_id=f"{worker}-{number}", type="device_status"))

    workers = [threading.Thread(target=append, args=(w,)) for w in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    log.close()
    entries = read_entries(tmp_path / AUDIT_FILE)
    assert verify(tmp_path / AUDIT_FILE) == []
    assert [e["seq"] for e in entries] == list(range(1, threads * per_thread + 1))
    assert len({e["id"] for e in entries}) == threads * per_thread


@pytest.fixture
def handler_and_log(tmp_path: Path):
    from test_security_command_access import Target

    from gateway.commands.handler import CommandHandler

    log = AuditLog(tmp_path / AUDIT_FILE)
    log.open()
    target = Target()
    handler = CommandHandler(target, None, log, via="gw1-client")
    yield handler, log, target
    log.close()


async def test_commands_sent_at_once_are_audited_one_line_each_in_one_chain(
    handler_and_log,
) -> None:
    from gateway.commands.access import Caller

    handler, log, target = handler_and_log
    callers = [Caller("mqtt", "platform-ops"), Caller("cli", "eng"), Caller("upstream", "gw")]

    async def send(number: int):
        body = {"id": f"c-{number}", "type": "write", "device": "pump_1", "point": "mode",
                "value": number}
        return await handler.handle(json.dumps(body).encode(), caller=callers[number % 3])

    replies = await asyncio.gather(*(send(n) for n in range(60)))
    assert all(r is not None and r.ok for r in replies)
    entries = read_entries(log.path)
    assert verify(log.path) == []
    assert [e["seq"] for e in entries] == list(range(1, 61))
    # one at a time: the audit order is the order the writes reached the device
    assert [e["value"] for e in entries] == [value for _, value in target.driver.writes]
    assert {e["via"] for e in entries} == {"mqtt:platform-ops", "cli:eng", "gw"}
