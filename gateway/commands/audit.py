"""The command audit log: who asked for what, when, and what came of it.

Records must be traceable and tamper-evident, and who changed what and when is audited
(the company's own rules). So every command, accepted or refused, is one JSON line in
<data_dir>/audit.jsonl, and each line carries the SHA-256 of the line before it
(`prev`): editing, inserting or deleting a line breaks the chain where it happened, and
`verify()` names the spot. Lines are only ever appended, and each is fsynced before the
command's reply goes out: commands are rare, and an audited write must outlive a power cut.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import structlog

from gateway.sinks.contract import dumps, iso_utc

log = structlog.get_logger(__name__)

AUDIT_FILE = "audit.jsonl"
GENESIS = "0" * 64  # the `prev` of the first line
OUTCOMES = ("accepted", "refused", "failed")
FIELDS = ("seq", "ts", "who", "via", "id", "type", "target", "value", "outcome", "reason", "prev")
Outcome = Literal["accepted", "refused", "failed"]


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One command as the log keeps it; `via` is the connection it arrived on."""

    who: str
    outcome: Outcome
    request_id: str | None = None
    type: str | None = None
    target: str | None = None
    value: Any = None
    reason: str | None = None
    via: str | None = None


def line_hash(line: bytes) -> str:
    """The SHA-256 (hex) of one line as stored, without its newline: the next line's `prev`."""
    return hashlib.sha256(line).hexdigest()


def iso_now(ts: float | None = None) -> str:
    """ISO-8601 UTC with milliseconds, the form every timestamp in the log takes."""
    return iso_utc(time.time() if ts is None else ts)


class AuditLog:
    """Appends hash-chained lines to one file; `open()` first, `close()` at stop.

    Appends are serialised by a lock, so the log may be written from a worker thread
    (the fsync must not stall the event loop on a slow SD card).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.head = GENESIS  # hash of the last line
        self.count = 0  # lines in the file
        self._fd: int | None = None
        self._lock = threading.Lock()

    def open(self) -> None:
        """Open for appending and find where the chain stands (the last line's hash)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        size = os.fstat(self._fd).st_size
        if size == 0:
            return
        self.count, last, torn = _count_and_last(self.path)
        self.head = line_hash(last)
        if torn:  # a power cut mid-line: end it, so the next line starts clean; verify reports it
            log.warning("audit log ends in an incomplete line", path=str(self.path), line=self.count)
            os.write(self._fd, b"\n")
            os.fsync(self._fd)

    def append(self, entry: AuditEntry, ts: float | None = None) -> str:
        """Write one line and fsync it; returns the line's hash (the new chain head)."""
        with self._lock:
            if self._fd is None:
                raise RuntimeError("AuditLog.open() has not been called, or the log was closed")
            record = {
                "seq": self.count + 1,
                "ts": iso_now(ts),
                "who": entry.who,
                "via": entry.via,
                "id": entry.request_id,
                "type": entry.type,
                "target": entry.target,
                "value": entry.value,
                "outcome": entry.outcome,
                "reason": entry.reason,
                "prev": self.head,
            }
            data = dumps(record)
            try:
                _write_all(self._fd, data + b"\n")
                os.fsync(self._fd)
            except OSError:
                # A full disk or an I/O error mid-line: take the chain's state from what is
                # really in the file (ending a torn line), so the next line links correctly.
                self._reopen()
                raise
            self.count += 1
            self.head = line_hash(data)
            return self.head

    def _reopen(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
        self.head, self.count = GENESIS, 0
        try:
            self.open()
        except OSError as exc:
            log.error("audit log cannot be reopened", path=str(self.path), error=str(exc))

    def close(self) -> None:
        with self._lock:
            fd, self._fd = self._fd, None
            if fd is not None:
                os.close(fd)


def _count_and_last(path: Path) -> tuple[int, bytes, bool]:
    """Lines in the file, the last one (without newline) and whether it was left incomplete.

    One forward pass that remembers where the last two newlines were; the log is small
    (commands are rare), and this only runs at start.
    """
    count, offset = 0, 0
    newlines = [-1, -1]  # offsets of the last two newlines seen
    with open(path, "rb") as file:
        while block := file.read(1 << 20):
            found = block.count(b"\n")
            if found:
                count += found
                last = block.rfind(b"\n")
                before = block.rfind(b"\n", 0, last) if found > 1 else -1
                newlines = [offset + before if before >= 0 else newlines[1], offset + last]
            offset += len(block)
        torn = offset > 0 and newlines[1] != offset - 1
        start, end = (newlines[1] + 1, offset) if torn else (newlines[0] + 1, offset - 1)
        file.seek(start)
        last_line = file.read(end - start)
    return count + (1 if torn else 0), last_line, torn


def _write_all(fd: int, data: bytes) -> None:
    """os.write may write less than asked (a nearly full disk); write the rest too."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _lines(path: Path) -> Iterator[tuple[int, bytes, bool]]:
    """(line number, bytes without newline, complete) for every line of the file."""
    with open(path, "rb") as file:
        for number, raw in enumerate(file, start=1):
            complete = raw.endswith(b"\n")
            yield number, raw[:-1] if complete else raw, complete


def read_entries(path: Path) -> list[dict[str, Any]]:
    """Every line that parses, for display; `verify()` is what judges the file."""
    entries = []
    for _number, line, _complete in _lines(path):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            entries.append(record)
    return entries


def verify(path: Path) -> list[str]:
    """Problems that show the log was changed after it was written; empty when intact.

    Each line's `prev` must be the SHA-256 of the line before it (the first line's is
    64 zeros), and `seq` must count on from the line before (from 1). An edited line breaks the link to
    the next line; a deleted or inserted line breaks the link and the count. Removing
    lines from the end leaves no trace in the file itself: compare the chain head
    (`count` and last hash, logged with every command) with a copy kept elsewhere.
    """
    problems: list[str] = []
    expected_prev, expected_seq = GENESIS, 1
    for number, line, complete in _lines(Path(path)):
        where = f"line {number}"
        if not complete:
            problems.append(f"{where}: incomplete (the gateway stopped while writing it)")
        try:
            record = json.loads(line)
        except ValueError as exc:
            problems.append(f"{where}: not JSON ({exc.msg}); the line was damaged or edited")
            expected_prev, expected_seq = line_hash(line), expected_seq + 1
            continue
        if not isinstance(record, dict):
            problems.append(f"{where}: not a JSON object")
            record = {}
        else:
            found = _check_record(record, number, expected_prev, expected_seq)
            if found:
                problems.append(f"{where}: {'; '.join(found)}")
        expected_prev = line_hash(line)
        seq = record.get("seq")
        expected_seq = (seq if isinstance(seq, int) else expected_seq) + 1
    return problems


def _check_record(
    record: dict[str, Any], number: int, expected_prev: str, expected_seq: int
) -> list[str]:
    problems = []
    missing = [f for f in FIELDS if f not in record]
    if missing:
        problems.append(f"missing {', '.join(missing)}")
    if record.get("prev") != expected_prev:
        before = "the start of the log" if number == 1 else f"line {number - 1}"
        problems.append(
            f"prev is not the SHA-256 of {before}: {before} was edited, "
            "or lines were deleted or inserted here"
        )
    if "seq" in record and record["seq"] != expected_seq:
        problems.append(
            f"seq is {record['seq']!r}, expected {expected_seq}: lines were deleted or inserted"
        )
    if "outcome" in record and record["outcome"] not in OUTCOMES:
        problems.append(f"outcome {record['outcome']!r} is not one of {', '.join(OUTCOMES)}")
    return problems
