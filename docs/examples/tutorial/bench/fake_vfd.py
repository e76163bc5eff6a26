"""A fake exhaust-fan drive for the tutorial in docs/device-maps.md: no VFD on your desk.

It answers Modbus TCP on 127.0.0.1:15050, unit 3, with the registers of the tutorial's
table (REGISTERS below: the raw words the manual's drive shows at 45.23 Hz), so
`gateway probe` and `gateway run -c docs/examples/tutorial/bench.yaml` read what a real
drive would send. Type a command and Enter to change what it answers:

    hot      heatsink 72.0 °C (the heatsink_hot alarm after its minute)
    cool     heatsink back to 45.0 °C
    trip 12  fault code 12 (散热器过热): stopped, fault bit set (the drive_fault alarm)
    reset    no fault, running again at the setpoint
    quit

Run it from the repository: .venv/bin/python docs/examples/tutorial/bench/fake_vfd.py
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

# Protocol address -> raw word, as docs/device-maps.md's table "What the drive answers"
# lists them (tests/unit/test_docs_examples.py checks the two agree).
REGISTERS: dict[int, int] = {
    0x1001: 0x11AB,  # 运行频率 45.23 Hz
    0x1002: 0x151A,  # 母线电压 540.2 V
    0x1003: 0x0158,  # 输出电压 344 V
    0x1004: 0x00B9,  # 输出电流 18.5 A
    0x1005: 0x005D,  # 输出功率 9.3 kW
    0x1007: 0x01C2,  # 散热器温度 45.0 °C
    0x1010: 0x3BEE,  # 累计运行时间 15342 h, low word ...
    0x1011: 0x0000,  # ... then high word (低字在前)
    0x1012: 0x2C86,  # 累计耗电量 138765.4 kWh, low word ...
    0x1013: 0x0015,  # ... then high word
    0x2000: 0x11AB,  # 通讯频率设定 45.23 Hz
    0x3000: 0x0021,  # 状态字: bit 0 运行, bit 5 通讯控制
    0x8000: 0x0000,  # 故障代码: 无故障
}
# Blocks the drive answers: a read of any register in them succeeds (unused ones read 0),
# like most drives; anything else is exception 2, illegal data address.
BLOCKS = ((0x1000, 0x20), (0x2000, 1), (0x3000, 1), (0x8000, 1))
UNIT = 3


class FakeDrive:
    """The register image and what the commands do to it."""

    def __init__(self) -> None:
        self.words = dict(REGISTERS)

    def command(self, line: str) -> str:
        word, _, argument = line.strip().partition(" ")
        if word == "hot":
            self.words[0x1007] = 720
        elif word == "cool":
            self.words[0x1007] = 450
        elif word == "trip":
            code = int(argument or "12")
            self.words.update({0x8000: code, 0x3000: 0x0024, 0x1001: 0, 0x1004: 0, 0x1005: 0})
        elif word == "reset":
            self.words.update({0x8000: 0, 0x3000: 0x0021, 0x1001: self.words[0x2000],
                               0x1004: REGISTERS[0x1004], 0x1005: REGISTERS[0x1005]})
        elif word:
            return "commands: hot, cool, trip N, reset, quit"
        return ", ".join(f"{a:04X}H=0x{w:04X}" for a, w in sorted(self.words.items()))

    async def answer(self, function_code: int, start_address: int, address: int, count: int,
                     registers: list[int], set_values: list[int] | list[bool] | None) -> ExcCodes | None:
        """pymodbus's hook before it answers: serve the image, take a written setpoint."""
        if function_code not in (3, 6, 16):
            return ExcCodes.ILLEGAL_FUNCTION
        if set_values is not None:
            if address != 0x2000 or len(set_values) != 1 or not 0 <= int(set_values[0]) <= 5000:
                return ExcCodes.ILLEGAL_VALUE if address == 0x2000 else ExcCodes.ILLEGAL_ADDRESS
            self.words[0x2000] = int(set_values[0])
            if not self.words[0x8000]:
                self.words[0x1001] = self.words[0x2000]  # the fan ramps to the new speed
        for i in range(count):
            registers[address - start_address + i] = self.words.get(address + i, 0)
        return None


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=15050)
    args = parser.parse_args()
    drive = FakeDrive()
    blocks = [SimData(start, count=count, values=0, datatype=DataType.REGISTERS) for start, count in BLOCKS]
    bits = [SimData(0, values=[False] * 16, datatype=DataType.BITS)]  # refused by answer()
    simdata = (bits, bits, blocks, [SimData(0, datatype=DataType.INVALID)])
    server = ModbusTcpServer(SimDevice(id=UNIT, simdata=simdata, action=drive.answer),
                             address=("127.0.0.1", args.port))
    await server.serve_forever(background=True)
    print(f"fake drive on 127.0.0.1:{args.port}, unit {UNIT}; commands: hot, cool, trip N, reset, quit",
          flush=True)
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:  # no terminal (started in the background): serve until killed
            await asyncio.Event().wait()
        if line.strip() == "quit":
            break
        print(drive.command(line), flush=True)
    await server.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
