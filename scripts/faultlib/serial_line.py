"""An RS-485 line that can be pulled out and plugged back in: a socat pty pair, the gateway
on one end, pymodbus serial devices (Modbus RTU) on the other.

    line = SerialLine(tmp_path, {1: [452, 0xFFCC, 7]}, baudrate=38400).start()
    line.gateway_end                 # the port the gateway opens (a symlink to a pty)
    line.unplug()                    # socat SIGKILLed: both ptys vanish mid-traffic
    line.plug()                      # a new pair at the same paths, the devices answering
    line.stop()

Units are served from their holding registers (read-only here; this is about the line).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from pymodbus.server import ModbusSerialServer
from pymodbus.simulator import DataType, SimData, SimDevice

from faultlib.loop import BackgroundLoop

SOCAT = "/usr/bin/socat"
READY_WITHIN = 5.0


class SerialLine:
    """See the module doc."""

    def __init__(self, directory: Path, units: dict[int, list[int]], baudrate: int = 38400) -> None:
        self.gateway_end = Path(directory) / "ttyGW"
        self.device_end = Path(directory) / "ttyDEV"
        self.units = units
        self.baudrate = baudrate
        self.plugged = False
        self._socat: subprocess.Popen[bytes] | None = None
        self._server: ModbusSerialServer | None = None
        self._bg = BackgroundLoop("serial-line")

    def start(self) -> SerialLine:
        self.plug()
        return self

    def plug(self) -> None:
        """Create the pty pair and start the devices on its far end."""
        if not os.access(SOCAT, os.X_OK):
            raise RuntimeError(f"{SOCAT} not found: install the Debian package 'socat'")
        self.gateway_end.parent.mkdir(parents=True, exist_ok=True)
        self._socat = subprocess.Popen(
            [SOCAT, f"pty,raw,echo=0,link={self.gateway_end}", f"pty,raw,echo=0,link={self.device_end}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + READY_WITHIN
        while not (self.gateway_end.exists() and self.device_end.exists()):
            if time.monotonic() > deadline or self._socat.poll() is not None:
                self._socat.kill()
                _out, err = self._socat.communicate()
                raise RuntimeError(f"socat did not create its ptys: {err.decode(errors='replace')}")
            time.sleep(0.02)
        self._bg.run(self._serve())
        self.plugged = True

    def unplug(self) -> None:
        """Kill socat (no goodbye: the adapter is yanked out) and the devices with it."""
        if self._socat is not None:
            self._socat.send_signal(signal.SIGKILL)
            self._socat.wait(5)
            self._socat = None
        self._bg.run(self._shutdown())
        for link in (self.gateway_end, self.device_end):
            with contextlib.suppress(FileNotFoundError):
                link.unlink()  # socat, killed, leaves its symlinks behind
        self.plugged = False

    def stop(self) -> None:
        if self.plugged:
            self.unplug()
        self._bg.close()

    def __enter__(self) -> SerialLine:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _serve(self) -> None:
        devices = [
            SimDevice(
                id=unit,
                simdata=(
                    [SimData(0, values=[False] * 16, datatype=DataType.BITS)],
                    [SimData(0, values=[False] * 16, datatype=DataType.BITS)],
                    [SimData(0, values=list(words), datatype=DataType.REGISTERS)],
                    [SimData(0, values=[0] * 4, datatype=DataType.REGISTERS)],
                ),
            )
            for unit, words in self.units.items()
        ]
        self._server = ModbusSerialServer(devices, port=str(self.device_end), baudrate=self.baudrate)
        await self._server.serve_forever(background=True)

    async def _shutdown(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.shutdown(), 3.0)
