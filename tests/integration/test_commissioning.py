"""Commissioning against real peers: `gateway probe` and `gateway scan modbus` on pymodbus
devices over TCP and over a serial line (a socat pty pair), and `gateway tail` on a
running gateway. The CLI runs as a subprocess without a terminal (CI=true): no prompt,
no escape code, output a script can read."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import queue
import re
import signal
import socket
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import services
from gateway_process import GatewayProcess, wait_until
from pymodbus.client import ModbusTcpClient
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from gateway.commands.local import ControlError, request, socket_path

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
GATEWAY = Path(sys.executable).parent / "gateway"  # .venv/bin/gateway
BAUD = 38400

PROFILE = """\
id: test_pump
name: 测试水泵 test pump
system: water_supply
points:
  pressure: {address: 0, scale: 0.001, unit: MPa, name: 出水压力}
  temperature: {address: 1, type: int16, scale: 0.1, unit: °C}
  remote: {address: 2, bit: 1}
  run_hours: {address: 10, type: uint32, unit: h}
  power: {table: input, address: 0, type: float32, unit: kW}
  relay: {table: coil, address: 3}
"""
HOLDING = [452, 0xFFCC, 0x0002, 0, 0, 0, 0, 0, 0, 0, 0x0001, 0x86A0]
INPUT = [0x42F6, 0xE979]  # 123.456 as float32 ABCD
COILS = [False, False, False, True, False, False, False, False]
# point -> (value, the words or bits the device holds for it)
EXPECTED = {
    "pressure": (0.452, [452]), "temperature": (-5.2, [0xFFCC]), "remote": (True, [2]),
    "run_hours": (100000, [1, 0x86A0]), "power": (123.456, [0x42F6, 0xE979]),
    "relay": (True, [1]),
}


def _pump(unit: int, holding: list[int] | None = None) -> SimDevice:
    return SimDevice(id=unit, simdata=(
        [SimData(0, values=list(COILS), datatype=DataType.BITS)],
        [SimData(0, values=[False] * 8, datatype=DataType.BITS)],
        [SimData(0, values=list(holding or HOLDING), datatype=DataType.REGISTERS)],
        [SimData(0, values=list(INPUT), datatype=DataType.REGISTERS)],
    ))


def _refusing(unit: int) -> SimDevice:
    """A device whose registers start at 10: reading 0 is answered with exception 2."""
    return SimDevice(id=unit, simdata=(
        [SimData(0, values=[False] * 8, datatype=DataType.BITS)],
        [SimData(0, values=[False] * 8, datatype=DataType.BITS)],
        [SimData(10, values=[1, 2], datatype=DataType.REGISTERS)],
        [SimData(0, values=[0], datatype=DataType.REGISTERS)],
    ))


def _answering_with(unit: int, behaviour) -> SimDevice:
    device = _pump(unit)
    return SimDevice(id=unit, simdata=device.simdata, action=behaviour)


async def _gateway(*args: str, timeout: float = 60.0) -> tuple[int, str, str]:
    """`gateway ARGS` as a subprocess with no terminal, as CI and scripts run it."""
    proc = await asyncio.create_subprocess_exec(
        str(GATEWAY), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL, cwd=ROOT, env={**os.environ, "CI": "true"})
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    text, errors = out.decode("utf-8"), err.decode("utf-8")
    assert "\x1b" not in text + errors, "escape codes without a terminal"
    return proc.returncode or 0, text, errors


def _check_points(points: list[dict]) -> None:
    """Values and words as the device holds them."""
    by_name = {p["point"]: p for p in points}
    assert set(by_name) == set(EXPECTED)
    for name, (value, words) in EXPECTED.items():
        assert by_name[name]["quality"] == "good", name
        assert by_name[name]["value"] == pytest.approx(value, rel=1e-6), name
        assert by_name[name]["words"] == words, name


# --- Modbus TCP ----------------------------------------------------------------------------


class TcpGateway:
    """A TCP-to-RTU gateway as the scan meets one: unit 1 a pump, 3 a second device, 4 a
    device refusing register 0, 2 and 5 answered by the gateway with exception 11 (no
    device behind it), 6 never answered."""

    def __init__(self) -> None:
        self.port = services.free_port()
        self.wake = asyncio.Event()
        self.server: ModbusTcpServer | None = None

    async def start(self) -> None:
        async def gateway_says_absent(*_request):
            return ExcCodes.GATEWAY_NO_RESPONSE

        async def never_answer(*_request):
            await self.wake.wait()

        devices = [_pump(1), _answering_with(2, gateway_says_absent), _pump(3, [3]),
                   _refusing(4), _answering_with(5, gateway_says_absent),
                   _answering_with(6, never_answer)]
        self.server = ModbusTcpServer(devices, address=("127.0.0.1", self.port))
        await self.server.serve_forever(background=True)

    async def stop(self) -> None:
        self.wake.set()
        if self.server is not None:
            await self.server.shutdown()


@pytest.fixture
async def tcp() -> AsyncIterator[TcpGateway]:
    peer = TcpGateway()
    await peer.start()
    yield peer
    await peer.stop()


def _site(root: Path, connection: str) -> Path:
    """site.yaml with one device, pump_1, of the test profile on `connection`."""
    (root / "profiles").mkdir(parents=True, exist_ok=True)
    (root / "devices").mkdir(exist_ok=True)
    (root / "profiles" / "test_pump.yaml").write_text(PROFILE, encoding="utf-8")
    (root / "devices" / "pumps.yaml").write_text(
        f"devices:\n  - id: pump_1\n    profile: test_pump\n    connection: {connection}\n",
        encoding="utf-8")
    (root / "site.yaml").write_text("site: {id: commissioning, name: 调试}\ndata_dir: data\n",
                                    encoding="utf-8")
    return root / "site.yaml"


async def test_probe_from_the_config_prints_values_and_the_words_the_device_holds(
    tcp: TcpGateway, tmp_path: Path,
) -> None:
    site = _site(tmp_path, f"{{type: modbus_tcp, host: 127.0.0.1, port: {tcp.port}, unit: 1}}")
    code, out, err = await _gateway("probe", "pump_1", "-c", str(site))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith(f"pump_1 — modbus_tcp 127.0.0.1:{tcp.port} unit 1: 6 points, "
                               "3 of 3 requests answered in ")
    assert lines[1].split() == ["point", "name", "value", "unit", "quality", "raw"]
    rows = {line.split()[0]: line for line in lines[3:]}
    assert rows["pressure"].split() == ["pressure", "出水压力", "0.452", "MPa", "good", "0x01C4"]
    assert rows["run_hours"].split()[-2:] == ["0x0001", "0x86A0"]
    assert rows["power"].split()[-2:] == ["0x42F6", "0xE979"]
    assert rows["relay"].split() == ["relay", "-", "True", "-", "good", "1"]

    code, out, _ = await _gateway("probe", "pump_1", "-c", str(site), "--json")
    assert code == 0
    _check_points(json.loads(out)["points"])


async def test_probe_from_the_command_line_reads_with_the_profile_given(
    tcp: TcpGateway, tmp_path: Path,
) -> None:
    profile = tmp_path / "test_pump.yaml"
    profile.write_text(PROFILE, encoding="utf-8")
    code, out, err = await _gateway("probe", "--profile", str(profile), "--tcp",
                                    f"127.0.0.1:{tcp.port}", "--unit", "1", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["answered"] and result["connection"] == f"modbus_tcp 127.0.0.1:{tcp.port} unit 1"
    _check_points(result["points"])
    assert [r["request"] for r in result["requests"]] == ["holding 0-11", "input 0-1", "coil 3"]


async def test_probe_watch_without_a_terminal_prints_each_round_until_ctrl_c(
    tcp: TcpGateway, tmp_path: Path,
) -> None:
    site = _site(tmp_path, f"{{type: modbus_tcp, host: 127.0.0.1, port: {tcp.port}, unit: 1}}")
    proc = await asyncio.create_subprocess_exec(
        str(GATEWAY), "probe", "pump_1", "-c", str(site), "--watch", "0.2",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL, cwd=ROOT, env={**os.environ, "CI": "true"})
    assert proc.stdout is not None
    rounds: list[str] = []
    while len(rounds) < 3:
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode("utf-8")
        assert line, "the probe ended by itself"
        if " pump_1 — modbus_tcp" in line:
            rounds.append(line)
    proc.send_signal(signal.SIGINT)
    rest, err = await asyncio.wait_for(proc.communicate(), 10)
    assert proc.returncode == 0  # Ctrl-C ends a watch; the last round answered
    assert all(re.match(r"\d\d:\d\d:\d\d  pump_1 — ", line) for line in rounds)
    assert "\x1b" not in "".join(rounds) + rest.decode("utf-8") + err.decode("utf-8")


async def test_probe_of_a_unit_that_does_not_answer_exits_1(tcp: TcpGateway, tmp_path) -> None:
    profile = tmp_path / "test_pump.yaml"
    profile.write_text(PROFILE, encoding="utf-8")
    code, out, err = await _gateway("probe", "--profile", str(profile), "--tcp",
                                    f"127.0.0.1:{tcp.port}", "--unit", "6", "--timeout", "0.2")
    assert code == 1
    assert "NO ANSWER: no answer: no answer within 200 ms" in out
    assert "did not answer" in err


async def test_scan_over_tcp_finds_exactly_the_units_that_answer(tcp: TcpGateway) -> None:
    code, out, err = await _gateway("scan", "modbus", "--tcp", f"127.0.0.1:{tcp.port}",
                                    "--units", "1-6", "--timeout", "0.2", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert [(a["unit"], a["words"], a["exception_code"]) for a in result["found"]] == [
        (1, [452], None), (3, [3], None), (4, None, 2)]
    assert result["gateway_absent"] == [2, 5]
    assert result["tried"] == 6


# --- Modbus RTU on a serial line -----------------------------------------------------------


class SerialLine:
    """A socat pty pair with slaves on its device end: 2 and 5 pumps, 4 refusing register
    0, 1, 3 and 6 configured in the server but never answering (no device at that id)."""

    def __init__(self, directory: Path) -> None:
        self.gateway_end = directory / "ttyGW"
        self.device_end = directory / "ttyDEV"
        self.wake = asyncio.Event()
        self.process: asyncio.subprocess.Process | None = None
        self.server: ModbusSerialServer | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            services.require(services.SOCAT), f"pty,raw,echo=0,link={self.gateway_end}",
            f"pty,raw,echo=0,link={self.device_end}")
        for _ in range(100):
            if self.gateway_end.exists() and self.device_end.exists():
                break
            await asyncio.sleep(0.02)
        else:
            raise RuntimeError("socat did not create its ptys")

        async def never_answer(*_request):
            await self.wake.wait()

        devices = [_answering_with(1, never_answer), _pump(2, [2, *HOLDING[1:]]),
                   _answering_with(3, never_answer), _refusing(4), _pump(5),
                   _answering_with(6, never_answer)]
        self.server = ModbusSerialServer(devices, port=str(self.device_end), baudrate=BAUD)
        await self.server.serve_forever(background=True)

    async def stop(self) -> None:
        self.wake.set()
        if self.server is not None:
            await self.server.shutdown()
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            await self.process.wait()


@pytest.fixture
async def rtu(tmp_path: Path) -> AsyncIterator[SerialLine]:
    line = SerialLine(tmp_path)
    await line.start()
    yield line
    await line.stop()


async def test_scan_on_a_serial_line_finds_exactly_the_slaves_that_answer(rtu: SerialLine) -> None:
    code, out, err = await _gateway("scan", "modbus", "--rtu", str(rtu.gateway_end), "--baud",
                                    str(BAUD), "--units", "1-6", "--timeout", "0.1")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith(f"3 of 6 unit ids answered on modbus_rtu {rtu.gateway_end} "
                               f"{BAUD} 8N1 (holding 0, timeout 100 ms)")
    assert [line.split()[:2] for line in lines[3:]] == [
        ["2", "0x0002"], ["4", "exception"], ["5", "0x01C4"]]


async def test_probe_over_rtu_from_the_config_and_the_command_line(
    rtu: SerialLine, tmp_path: Path,
) -> None:
    site = _site(tmp_path / "site", f"{{type: modbus_rtu, port: {rtu.gateway_end}, "
                                    f"baudrate: {BAUD}, unit: 5, timeout: 200ms}}")
    code, out, err = await _gateway("probe", "pump_1", "-c", str(site), "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["connection"] == f"modbus_rtu {rtu.gateway_end} {BAUD} 8N1 unit 5"
    _check_points(result["points"])

    profile = tmp_path / "site" / "profiles" / "test_pump.yaml"
    code, out, err = await _gateway("probe", "--profile", str(profile), "--rtu",
                                    str(rtu.gateway_end), "--baud", str(BAUD), "--unit", "2",
                                    "--json")
    assert code == 0, err
    points = {p["point"]: p for p in json.loads(out)["points"]}
    assert (points["pressure"]["value"], points["pressure"]["words"]) == (0.002, [2])


# --- tail on a running gateway -------------------------------------------------------------

TAIL_PROFILE = """\
id: big_pump
name: 大泵 pump with many registers
system: water_supply
points:
  pressure: {address: 0, scale: 0.001, unit: MPa}
  current: {address: 1, scale: 0.1, unit: A}
REGISTERS
rules:
  - id: high_pressure
    name: 出水压力高 high outlet pressure
    when: pressure > 0.8
    alarm:
      severity: major
      message: "出水压力高 {pressure:.2f} MPa"
""".replace("REGISTERS", "\n".join(f"  reg_{n}: {{address: {n}}}" for n in range(2, 100)))


class ThreadedDevice:
    """A pymodbus TCP device on its own thread and loop: the test blocks, the device answers."""

    def __init__(self) -> None:
        self.port = services.free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: ModbusTcpServer | None = None

    def __enter__(self) -> ThreadedDevice:
        self._thread.start()

        async def serve() -> ModbusTcpServer:
            server = ModbusTcpServer(_pump(1, [452, 150] + [7] * 98),
                                     address=("127.0.0.1", self.port))
            await server.serve_forever(background=True)
            return server

        self._server = asyncio.run_coroutine_threadsafe(serve(), self._loop).result(10)
        return self

    def write(self, address: int, value: int) -> None:
        client = ModbusTcpClient("127.0.0.1", port=self.port, timeout=2)
        assert client.connect()
        try:
            assert not client.write_register(address, value, device_id=1).isError()
        finally:
            client.close()

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            asyncio.run_coroutine_threadsafe(self._server.shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


class Lines:
    """A subprocess's stdout lines, read on a thread so the test can wait with a timeout."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.queue: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, args=(proc,), daemon=True).start()

    def _read(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            self.queue.put(raw.decode("utf-8"))

    def until(self, predicate, timeout: float, what: str) -> list[str]:
        seen: list[str] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.queue.get(timeout=0.1)
            except queue.Empty:
                continue
            seen.append(line)
            if predicate(line):
                return seen
        raise AssertionError(f"timed out waiting for {what}; got {seen[-5:]}")


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[GatewayProcess, ThreadedDevice]]:
    with ThreadedDevice() as device:
        site = _site(tmp_path, f"{{type: modbus_tcp, host: 127.0.0.1, port: {device.port}, "
                               "unit: 1, timeout: 500ms}")
        (tmp_path / "profiles" / "test_pump.yaml").unlink()
        (tmp_path / "profiles" / "big_pump.yaml").write_text(TAIL_PROFILE, encoding="utf-8")
        devices = (tmp_path / "devices" / "pumps.yaml")
        devices.write_text(devices.read_text(encoding="utf-8").replace("test_pump", "big_pump")
                           + "    poll_interval: 100ms\n", encoding="utf-8")
        gateway = GatewayProcess(site, tmp_path / "data").start()
        try:
            wait_until(lambda: _polls(gateway) > 0, 30, "the gateway polling pump_1")
            yield gateway, device
        finally:
            gateway.stop_quietly()


def _polls(gateway: GatewayProcess) -> int:
    try:
        status = request(socket_path(gateway.data_dir), {"query": "status"}, timeout=5)
    except ControlError:
        return 0
    return int(status["result"]["devices"]["pump_1"]["polls"] or 0)


def test_tail_follows_filtered_readings_and_an_alarm_while_a_stuck_client_stalls_nothing(
    running: tuple[GatewayProcess, ThreadedDevice],
) -> None:
    gateway, device = running
    # a client that asks for everything and never reads: its buffers fill within seconds
    # (100 readings every 100 ms), then the daemon drops for it, and polls on
    stuck = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stuck.connect(os.fspath(socket_path(gateway.data_dir)))
    stuck.sendall(b'{"tail": true}\n')
    tail = subprocess.Popen(
        [str(GATEWAY), "tail", "-c", str(gateway.site), "--data-dir", str(gateway.data_dir),
         "--device", "pump_1", "--point", "pressure", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
        env={**os.environ, "CI": "true"})
    try:
        lines = Lines(tail)
        first = lines.until(lambda line: '"reading"' in line, 20, "a pressure reading")
        polls_before = _polls(gateway)
        device.write(0, 900)  # 0.9 MPa: the high-pressure alarm is raised
        seen = lines.until(lambda line: '"alarm_event"' in line, 20, "the alarm event")
        time.sleep(3.0)  # the stuck client is still connected, reading nothing
        assert _polls(gateway) >= polls_before + 15  # 100 ms polls went on (30 due)
        unread = struct.unpack("i", fcntl.ioctl(stuck, termios.FIONREAD, b"\0" * 4))[0]
        assert unread > 64 * 1024  # its socket is full: the daemon's writes to it wait
    finally:
        tail.terminate()
        _out, err = tail.communicate(timeout=10)
        stuck.close()
    items = [json.loads(line) for line in first + seen]
    readings = [item for item in items if item["type"] == "reading"]
    assert {(r["device"], r["point"], r["unit"]) for r in readings} == {("pump_1", "pressure", "MPa")}
    assert readings[0]["value"] == pytest.approx(0.452)
    assert readings[-1]["value"] == pytest.approx(0.9)
    alarm = items[-1]
    assert (alarm["event"], alarm["device"]) == ("alarm_event", "pump_1")
    assert alarm["body"]["alarm"] == "pump_1.high_pressure"
    assert alarm["body"]["transition"] == "raised"
    assert "\x1b" not in err.decode("utf-8")


def test_tail_prints_one_plain_line_per_reading(
    running: tuple[GatewayProcess, ThreadedDevice],
) -> None:
    gateway, _device = running
    tail = subprocess.Popen(
        [str(GATEWAY), "tail", "--data-dir", str(gateway.data_dir), "--device", "pump_*",
         "--point", "current", "--readings-only"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
        env={**os.environ, "CI": "true"})
    try:
        seen = Lines(tail).until(lambda line: "current" in line, 20, "a current reading")
    finally:
        tail.terminate()
        _out, err = tail.communicate(timeout=10)
    assert seen[-1].rstrip("\n").split("  ")[1:] == ["pump_1", "current = 15 A"]
    assert "\x1b" not in "".join(seen) + err.decode("utf-8")
