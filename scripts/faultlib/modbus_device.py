"""A Modbus TCP device whose answers break on demand, written at the byte level so it can
send what pymodbus's own server never would.

    device = FaultyModbusDevice(holding=[452, 0xFFCC, 7]).start()
    device.play("garbage")         # random bytes instead of an answer
    device.play("truncated")       # the first half of a correct answer, then nothing
    device.play("exception", 4)    # exception response, code 4 (server device failure)
    device.play("silent")          # requests read, never answered (connection kept open)
    device.play("late", 2.0)       # the right answer, 2 s late (later requests are read
                                   # meanwhile)
    device.play("close")           # the connection closed on each request
    device.play("ok")

`mute_accept()` makes it a TCP server that accepts and never reads or answers at all.
Every request is logged in `log` as (time.time(), unit, function, mode answered with),
so a test knows exactly how many polls met which fault. Reads of holding (3) and input (4)
registers and single/multiple register writes (6, 16) are served from `holding` and
`input`; anything else gets exception 1 (illegal function).
"""

from __future__ import annotations

import asyncio
import os
import struct
import time
from dataclasses import dataclass, field

from faultlib.loop import BackgroundLoop

HOST = "127.0.0.1"
MODES = ("ok", "garbage", "truncated", "exception", "silent", "late", "close")


@dataclass
class _Fault:
    mode: str = "ok"
    arg: float = 0.0


@dataclass
class FaultyModbusDevice:
    """One unit id (any unit is answered) on 127.0.0.1:`port`; see the module doc."""

    holding: list[int] = field(default_factory=lambda: [0] * 16)
    input: list[int] = field(default_factory=lambda: [0] * 16)
    port: int = 0
    log: list[tuple[float, int, int, str]] = field(default_factory=list)
    _fault: _Fault = field(default_factory=_Fault)
    _mute: bool = False
    _bg: BackgroundLoop | None = None
    _server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)
    _late: set[asyncio.Task[None]] = field(default_factory=set)
    _closing: asyncio.Event | None = None

    def start(self) -> FaultyModbusDevice:
        self._bg = BackgroundLoop(f"faulty-modbus:{self.port}")
        self._bg.run(self._listen())
        return self

    def stop(self) -> None:
        if self._bg is None:
            return
        self._bg.run(self._close())
        self._bg.close()
        self._bg = None

    def __enter__(self) -> FaultyModbusDevice:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def play(self, mode: str, arg: float = 0.0) -> None:
        """Answer every request from now on per `mode` (see the module doc)."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; one of {', '.join(MODES)}")
        self._fault = _Fault(mode, arg)

    def mute_accept(self, mute: bool = True) -> None:
        """Accept connections and never read from them (a hung TCP stack or serial server)."""
        self._mute = mute

    def count(self, mode: str | None = None) -> int:
        """Requests received (answered with `mode`, if given)."""
        return sum(1 for *_, m in list(self.log) if mode is None or m == mode)

    # --- on the device's loop ------------------------------------------------------------

    async def _listen(self) -> None:
        self._closing = asyncio.Event()
        self._server = await asyncio.start_server(self._serve, HOST, self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _close(self) -> None:
        if self._closing is not None:
            self._closing.set()
        for task in list(self._late):
            task.cancel()
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            if self._mute:
                assert self._closing is not None
                await self._closing.wait()  # hold the connection, read nothing, until stopped
                return
            while True:
                header = await reader.readexactly(7)
                tid, _protocol, length, unit = struct.unpack(">HHHB", header)
                pdu = await reader.readexactly(length - 1)
                if not await self._answer(writer, tid, unit, pdu):
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            writer.transport.abort()

    async def _answer(self, writer: asyncio.StreamWriter, tid: int, unit: int, pdu: bytes) -> bool:
        """Answer one request per the fault playing; False to end the connection."""
        fault = self._fault
        self.log.append((time.time(), unit, pdu[0], fault.mode))
        if fault.mode == "silent":
            return True
        if fault.mode == "close":
            return False
        if fault.mode == "garbage":
            writer.write(os.urandom(5 + pdu[0] % 20))
            await writer.drain()
            return True
        if fault.mode == "exception":
            reply = bytes([pdu[0] | 0x80, int(fault.arg) or 4])
        else:
            reply = self._reply(pdu)
        frame = struct.pack(">HHHB", tid, 0, len(reply) + 1, unit) + reply
        if fault.mode == "truncated":
            frame = frame[: len(frame) // 2]
        elif fault.mode == "late":
            # answered later, while the next requests are read (and answered per the mode
            # playing when each arrives)
            task = asyncio.create_task(self._send_later(writer, frame, fault.arg))
            self._late.add(task)
            task.add_done_callback(self._late.discard)
            return True
        writer.write(frame)
        await writer.drain()
        return True

    @staticmethod
    async def _send_later(writer: asyncio.StreamWriter, frame: bytes, delay: float) -> None:
        await asyncio.sleep(delay)
        if not writer.is_closing():
            writer.write(frame)

    def _reply(self, pdu: bytes) -> bytes:
        function = pdu[0]
        if function in (3, 4) and len(pdu) == 5:
            start, count = struct.unpack(">HH", pdu[1:5])
            table = self.holding if function == 3 else self.input
            if count < 1 or start + count > len(table):
                return bytes([function | 0x80, 2])  # illegal data address
            words = table[start : start + count]
            return bytes([function, 2 * count]) + struct.pack(f">{count}H", *words)
        if function == 6 and len(pdu) == 5:
            address, value = struct.unpack(">HH", pdu[1:5])
            if address >= len(self.holding):
                return bytes([function | 0x80, 2])
            self.holding[address] = value
            return pdu
        if function == 16 and len(pdu) >= 6:
            address, count = struct.unpack(">HH", pdu[1:5])
            if address + count > len(self.holding):
                return bytes([function | 0x80, 2])
            self.holding[address : address + count] = struct.unpack(f">{count}H", pdu[6 : 6 + 2 * count])
            return pdu[:5]
        return bytes([function | 0x80, 1])  # illegal function
