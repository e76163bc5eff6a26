"""Simulated Modbus TCP devices for the benchmarks: one process serves several devices, each
on its own port of 127.0.0.1, unit 1, `registers` holding registers from address 0.

    python modbus_server.py --impl pymodbus|fast --registers 100 --base 0 PORT [PORT ...]

Register i of the device with global index d serves `value(d, i)` until written (FC6/FC16),
so a subscriber can check every value it receives. Two implementations:

- `pymodbus`: pymodbus's own `ModbusTcpServer` with a `SimDevice` (what the tests use);
- `fast`: a minimal asyncio Modbus TCP server (FC 3, 4, 6, 16; the input table mirrors the
  holding table), for when pymodbus's server is the bottleneck.

Control on stdin/stdout, one JSON object a line: `{"cmd": "stats"}` answers the number of
requests each port served, how many of them read from address 0 (every poll of the
benchmark's maps starts there, so that is the number of polls) and this process's CPU
seconds; `{"cmd": "set", "port": P,
"address": A, "value": V}` changes a register; `{"cmd": "reset"}` zeroes the counters. The
process prints `{"ready": true}` once every port listens, and exits when stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import struct
import sys
import time


def value(device_index: int, register: int) -> int:
    """What register `register` of device `device_index` serves (a uint16)."""
    return (device_index * 101 + register * 7) % 60000


class FastDevice(asyncio.Protocol):
    """One connection to a device served by the minimal server."""

    def __init__(self, dev: _Regs) -> None:
        self.dev = dev
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data
        while len(buf) >= 7:
            tid, pid, length, unit = struct.unpack_from(">HHHB", buf)
            end = 6 + length
            if len(buf) < end:
                break
            pdu = buf[7:end]
            buf = buf[end:]
            if pdu[:3] in (b"\x03\x00\x00", b"\x04\x00\x00"):
                self.dev.poll_starts()  # a read from address 0: every poll starts there
            self.dev.requests += 1
            reply = self.dev.answer(pdu)
            self.transport.write(struct.pack(">HHHB", tid, pid, len(reply) + 1, unit) + reply)
        self.buf = buf


class _Counting:
    """Requests, and polls: reads from address 0 (every benchmark poll starts there).

    `first` and `last` are the request counts when the first and the last poll since the
    reset started, so (last - first) / (polls - 1) is requests per poll without the edge
    effects of a window that cuts polls in two.
    """

    requests = 0
    polls = 0
    first = 0
    last = 0

    def poll_starts(self) -> None:
        if self.polls == 0:
            self.first = self.requests
        self.last = self.requests
        self.polls += 1

    def reset(self) -> None:
        self.requests = self.polls = self.first = self.last = 0

    def stats(self) -> dict[str, int]:
        return {"requests": self.requests, "polls": self.polls, "first": self.first, "last": self.last}


class _Regs(_Counting):
    def __init__(self, index: int, count: int) -> None:
        self.words = bytearray(struct.pack(f">{count}H", *(value(index, i) for i in range(count))))
        self.count = count

    def set(self, address: int, word: int) -> None:
        struct.pack_into(">H", self.words, address * 2, word)

    def answer(self, pdu: bytes) -> bytes:
        fc = pdu[0]
        if fc in (3, 4):
            start, count = struct.unpack_from(">HH", pdu, 1)
            if count < 1 or count > 125 or start + count > self.count:
                return bytes((fc | 0x80, 2))
            return bytes((fc, count * 2)) + self.words[start * 2:(start + count) * 2]
        if fc == 6:
            address, word = struct.unpack_from(">HH", pdu, 1)
            if address >= self.count:
                return bytes((fc | 0x80, 2))
            self.set(address, word)
            return pdu[:5]
        if fc == 16:
            start, count = struct.unpack_from(">HH", pdu, 1)
            if start + count > self.count:
                return bytes((fc | 0x80, 2))
            self.words[start * 2:(start + count) * 2] = pdu[6:6 + count * 2]
            return pdu[:5]
        return bytes((fc | 0x80, 1))


async def serve_fast(ports: list[int], registers: int, base: int) -> dict[int, _Regs]:
    loop = asyncio.get_running_loop()
    devices = {}
    for offset, port in enumerate(ports):
        dev = devices[port] = _Regs(base + offset, registers)
        await loop.create_server(lambda dev=dev: FastDevice(dev), "127.0.0.1", port,
                                 reuse_address=True, backlog=64)
    return devices


class _PymodbusDevice(_Counting):
    def __init__(self, index: int, count: int) -> None:
        self.values = [value(index, i) for i in range(count)]
        self.pending: dict[int, int] = {}  # sets not yet copied into pymodbus's registers

    async def hook(self, function_code, start_address, address, count, registers, set_values):
        if address == 0 and function_code in (3, 4):
            self.poll_starts()
        self.requests += 1
        if self.pending and function_code in (3, 4):
            for at, word in self.pending.items():
                registers[at - start_address] = word
            if function_code == 3:  # both tables see the set; the holding one is what we read
                self.pending.clear()
        return None

    def set(self, address: int, word: int) -> None:
        self.values[address] = word
        self.pending[address] = word


async def serve_pymodbus(ports: list[int], registers: int, base: int) -> dict[int, _PymodbusDevice]:
    from pymodbus.server import ModbusTcpServer
    from pymodbus.simulator import DataType, SimData, SimDevice

    devices = {}
    for offset, port in enumerate(ports):
        dev = devices[port] = _PymodbusDevice(base + offset, registers)
        bits = [SimData(0, values=[False] * 16, datatype=DataType.BITS)]
        sim = SimDevice(
            id=1,
            simdata=(bits, bits,
                     [SimData(0, values=dev.values, datatype=DataType.REGISTERS)],
                     [SimData(0, values=list(dev.values), datatype=DataType.REGISTERS)]),
            action=dev.hook,
        )
        server = ModbusTcpServer(sim, address=("127.0.0.1", port))
        await server.serve_forever(background=True)
    return devices


def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--impl", choices=("pymodbus", "fast"), default="pymodbus")
    parser.add_argument("--registers", type=int, default=100)
    parser.add_argument("--base", type=int, default=0, help="global index of the first device")
    parser.add_argument("ports", type=int, nargs="+")
    args = parser.parse_args(argv)
    if args.impl == "fast":
        devices = await serve_fast(args.ports, args.registers, args.base)
    else:
        import logging

        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
        devices = await serve_pymodbus(args.ports, args.registers, args.base)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    def say(obj: dict) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    say({"ready": True, "pid": os.getpid()})
    while line := await reader.readline():
        cmd = json.loads(line)
        if cmd["cmd"] == "stats":
            say({"devices": {str(p): d.stats() for p, d in devices.items()},
                 "cpu": _cpu_seconds(), "ts": time.time()})
        elif cmd["cmd"] == "set":
            devices[int(cmd["port"])].set(int(cmd["address"]), int(cmd["value"]))
            say({"ok": True})
        elif cmd["cmd"] == "reset":
            for d in devices.values():
                d.reset()
            say({"ok": True})


if __name__ == "__main__":
    asyncio.run(main())
