"""`gateway scan modbus`: which unit ids answer on a serial line or behind a TCP gateway.

Each id gets one small read through the same bus the daemon uses, so the line is
treated as in service: the RTU silence between frames, and after an unanswered request
the quiet time a late reply needs to pass, so it is never taken for the next id's answer.
A Modbus exception is an answer: a device is there, it only refused the register asked —
except 10 and 11 (gateway path unavailable, gateway target failed to respond), which a
TCP-to-RTU gateway sends for an id with no device behind it.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from drivers.modbus.bus import Bus, Read, Reply
from drivers.modbus.transport import Connection, bus_key, open_bus
from gateway.commission.probe import exception_name
from gateway.commission.terminal import Progress
from gateway.textable import format_table

TABLES = ("holding", "input", "coil", "discrete")
GATEWAY_NO_DEVICE = (10, 11)  # a gateway's exceptions saying nothing answered behind it


class ScanError(RuntimeError):
    """The line itself cannot be used (no such port, nothing listening)."""


@dataclass(slots=True)
class Answer:
    unit: int
    answer: str  # what the table shows: the words, or the exception
    words: list[int] | None
    exception_code: int | None
    latency_ms: float


@dataclass(slots=True)
class ScanResult:
    line: str
    table: str
    register: int
    count: int
    timeout: float
    tried: int
    elapsed_s: float
    found: list[Answer]
    gateway_absent: list[int]  # ids a TCP gateway answered for with exception 10 or 11

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_units(text: str) -> list[int]:
    """`1-247`, `1,3,10-20`: the unit ids to try, each once, in the order written."""
    units: list[int] = []
    for part in text.split(","):
        low, sep, high = part.strip().partition("-")
        if not low.isdigit() or (sep and not high.isdigit()):
            raise ValueError(f"{text!r} is not a list of unit ids such as 1-247 or 1,3,10-20")
        first, last = int(low), int(high) if sep else int(low)
        if first > last or last > 255:
            raise ValueError(f"{part.strip()!r}: unit ids run from 0 to 255, low to high")
        units.extend(u for u in range(first, last + 1) if u not in units)
    return units


def check_units(units: list[int], connection: Connection) -> None:
    """On a serial line 0 is the broadcast address (nobody answers) and 248-255 are reserved."""
    if connection.type != "modbus_tcp":
        wrong = [u for u in units if not 1 <= u <= 247]
        if wrong:
            raise ValueError(f"unit {wrong[0]} cannot answer on an RTU line: slaves are 1-247")


async def scan(connection: Connection, units: list[int], *, table: str = "holding",
               register: int = 0, count: int = 1, progress: Progress | None = None,
               bus: Bus | None = None) -> ScanResult:
    """Try each unit with one read of `count` registers (or bits) at `register`, on the
    connection's line (or on `bus`, which tests give); the bus is closed at the end."""
    bus = bus if bus is not None else open_bus(connection)
    bus.attach(connection.timeout)
    started = time.monotonic()
    found: list[Answer] = []
    absent: list[int] = []
    try:
        for unit in units:
            reply = await bus.submit(unit, Read(table, register, count),
                                     timeout=connection.timeout, retries=0)
            if progress is not None:
                progress.advance(what=f"unit {unit} ({len(found)} found)")
            if reply.failure == "connection" and not bus.connected and _unreachable(reply):
                raise ScanError(
                    f"{reply.error}: check the {'port' if connection.type == 'modbus_rtu' else 'address'}"
                    " and that no other program (a running gateway, mbpoll) holds it")
            if reply.exception_code in GATEWAY_NO_DEVICE:
                absent.append(unit)
                continue
            answer = _answer(unit, table, reply)
            if answer is not None:
                found.append(answer)
    finally:
        await bus.close()
    return ScanResult(bus_key(connection), table, register, count, connection.timeout,
                      len(units), round(time.monotonic() - started, 2), found, absent)


def _unreachable(reply: Reply) -> bool:
    return (reply.error or "").startswith("cannot connect")


def _answer(unit: int, table: str, reply: Reply) -> Answer | None:
    latency = round(reply.latency * 1000, 1)
    if reply.exception_code is not None:
        return Answer(unit, f"exception {exception_name(reply.exception_code)}", None,
                      reply.exception_code, latency)
    if reply.failure == "protocol":  # something answered, but not in a frame we could read
        return Answer(unit, f"unreadable reply ({reply.error}): baud rate or parity?", None,
                      None, latency)
    if reply.failure is not None or reply.data is None:
        return None
    words = [int(v) for v in reply.data]
    if table in ("coil", "discrete"):
        shown = " ".join(str(w) for w in words)
    else:
        shown = " ".join(f"0x{w:04X} ({w})" for w in words)
    return Answer(unit, shown, words, None, latency)


def render(result: ScanResult, describe: str) -> str:
    """A summary line, then the table of the ids that answered."""
    found = len(result.found)
    head = (f"{found} of {result.tried} unit id{'s' if result.tried != 1 else ''} answered on "
            f"{describe} ({result.table} {result.register}, timeout "
            f"{result.timeout * 1000:.0f} ms) in {result.elapsed_s:.1f} s")
    if result.gateway_absent:
        head += (f"; the gateway reported no device at {len(result.gateway_absent)} of them "
                 "(exception 10/11)")
    if not found:
        return head
    rows = [(a.unit, a.answer, f"{a.latency_ms:.1f} ms") for a in result.found]
    return f"{head}\n{format_table(('unit', 'answer', 'latency'), rows)}"
