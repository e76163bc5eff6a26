"""A Modbus device in memory behind the real bus: registers per unit and table, units
that never answer, tables a unit refuses, and every request it was sent."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from drivers.modbus.bus import Bus


@dataclass
class Response:
    registers: list[int] = field(default_factory=list)
    bits: list[bool] = field(default_factory=list)
    exception_code: int | None = None

    def isError(self) -> bool:  # noqa: N802 - pymodbus's name
        return self.exception_code is not None


class MemoryLine:
    """What answers on one line: `tables[unit][table]` is that unit's registers (or bits)
    from address 0; a unit in `silent` never answers; `refusing[unit]` is the exception
    code it answers everything with."""

    def __init__(self, tables: dict[int, dict[str, list[int]]], *, silent=(),
                 refusing: dict[int, int] | None = None) -> None:
        self.tables = tables
        self.silent = set(silent)
        self.refusing = refusing or {}
        self.wire: list[tuple[int, str, int, int]] = []  # (unit, table, start, count)

    def bus(self) -> Bus:
        return Bus("tcp:memory:502", lambda _timeout: _Client(self))

    async def answer(self, unit: int, table: str, start: int, count: int) -> Response:
        self.wire.append((unit, table, start, count))
        if unit in self.silent:
            await asyncio.sleep(3600)
        if unit in self.refusing:
            return Response(exception_code=self.refusing[unit])
        data = self.tables.get(unit, {}).get(table)
        if data is None or start + count > len(data):
            return Response(exception_code=2)  # illegal data address
        values = data[start:start + count]
        if table in ("coil", "discrete"):
            return Response(bits=[bool(v) for v in values] + [False] * (-count % 8))
        return Response(registers=list(values))


class _Client:
    def __init__(self, line: MemoryLine) -> None:
        self.line = line
        self.connected = False

    async def connect(self) -> bool:
        self.connected = True
        return True

    def close(self) -> None:
        self.connected = False

    async def read_holding_registers(self, address, *, count, device_id):
        return await self.line.answer(device_id, "holding", address, count)

    async def read_input_registers(self, address, *, count, device_id):
        return await self.line.answer(device_id, "input", address, count)

    async def read_coils(self, address, *, count, device_id):
        return await self.line.answer(device_id, "coil", address, count)

    async def read_discrete_inputs(self, address, *, count, device_id):
        return await self.line.answer(device_id, "discrete", address, count)
