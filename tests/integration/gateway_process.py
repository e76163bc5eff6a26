"""Helpers for end-to-end tests: a static Modbus device, a site on disk, the gateway as a process."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from gateway.equipment.status_points import ALARM_POINTS, DEVICE_POINTS

# the gateway's own status readings (docs/equipment.md, "Readings for charts"): not polls
STATUS_POINTS = frozenset({*ALARM_POINTS, *DEVICE_POINTS})

# Register values the static device serves and what the profile below decodes them to.
HOLDING = [452, 0xFFCC, 0x0001, 0x86A0]  # 0.452 MPa, -5.2 °C, 100000 (int32)
INPUT = [0x42F6, 0xE979]  # float32 123.456
EXPECTED = {"pressure": 0.452, "temperature": -5.2, "starts": 100000, "power": 123.456}

PROFILE = """\
id: test_pump
name: 测试水泵 test pump
system: water_supply
points:
  pressure: {table: holding, address: 0, type: uint16, scale: 0.001, unit: MPa, name: 出水压力}
  temperature: {table: holding, address: 1, type: int16, scale: 0.1, unit: °C}
  starts: {table: holding, address: 2, type: int32}
  power: {table: input, address: 0, type: float32, unit: kW}
"""


class StaticDevice:
    """A Modbus TCP device on 127.0.0.1:port that always answers with the registers above.

    It runs on its own thread and event loop, so a test may block while the gateway polls it.
    """

    def __init__(self, port: int, unit: int = 1) -> None:
        self.port = port
        self.unit = unit
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: ModbusTcpServer | None = None

    def __enter__(self) -> StaticDevice:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(_serve(self.port, self.unit), self._loop)
        self._server = future.result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            asyncio.run_coroutine_threadsafe(self._server.shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


async def _serve(port: int, unit: int) -> ModbusTcpServer:
    bits = [SimData(0, values=[False] * 16, datatype=DataType.BITS)]
    device = SimDevice(
        id=unit,
        simdata=(
            bits,
            bits,
            [SimData(0, values=HOLDING, datatype=DataType.REGISTERS)],
            [SimData(0, values=INPUT, datatype=DataType.REGISTERS)],
        ),
    )
    server = ModbusTcpServer(device, address=("127.0.0.1", port))
    await server.serve_forever(background=True)
    return server


def write_site(
    root: Path, *, site_id: str, devices: dict[str, int], sinks: str = "", upstream: str = "",
    poll_interval: str = "200ms", flush_interval: str = "100ms",
) -> Path:
    """Write site.yaml, one profile and a device file; `devices` maps device id to port."""
    (root / "profiles").mkdir(parents=True, exist_ok=True)
    (root / "devices").mkdir(exist_ok=True)
    (root / "profiles" / "test_pump.yaml").write_text(PROFILE, encoding="utf-8")
    entries = "".join(
        f"""  - id: {device}
    profile: test_pump
    connection: {{type: modbus_tcp, host: 127.0.0.1, port: {port}, unit: 1, timeout: 500ms}}
    poll_interval: {poll_interval}
    location: {{building: 1号楼, floor: B1, room: 水泵房}}
"""
        for device, port in devices.items()
    )
    (root / "devices" / "pumps.yaml").write_text("devices:\n" + entries, encoding="utf-8")
    site = f"""\
site:
  id: {site_id}
  name: 测试小区 test estate
data_dir: data
outbox:
  flush_interval: {flush_interval}
  fsync: normal
logging:
  level: info
  format: json
{sinks}
{upstream}
"""
    (root / "site.yaml").write_text(site, encoding="utf-8")
    return root / "site.yaml"


class GatewayProcess:
    """`gateway run` in a child process, so a test can SIGKILL it like a power cut."""

    def __init__(self, site: Path, data_dir: Path, env: dict[str, str] | None = None) -> None:
        self.site = site
        self.data_dir = data_dir
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data_dir.parent / "gateway.log"

    def start(self) -> GatewayProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", "run", "-c", str(self.site),
                 "--data-dir", str(self.data_dir), "--log-format", "json"],
                stdout=log, stderr=log, env=self.env,
            )
        return self

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 10.0) -> float:
        """SIGTERM; returns the seconds the gateway took to exit."""
        assert self.proc is not None
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout)
        return time.monotonic() - started

    def stop_quietly(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""


def outbox_db(data_dir: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{data_dir / 'outbox.db'}?mode=ro", uri=True, timeout=5)


def committed_batches(data_dir: Path) -> tuple[str, list[tuple[int, str, float]]]:
    """The outbox's epoch and its committed polls as (seq, device, ts)."""
    import json

    db = outbox_db(data_dir)
    try:
        epoch = db.execute("SELECT value FROM meta WHERE key='epoch'").fetchone()[0]
        rows = db.execute("SELECT seq, body FROM records WHERE kind=0 ORDER BY seq").fetchall()
    finally:
        db.close()
    out = []
    for seq, body in rows:
        data = json.loads(body)
        if not STATUS_POINTS.isdisjoint(data["p"]):
            continue
        out.append((seq, data["d"], data["t"]))
    return epoch, out


def cursors(data_dir: Path) -> dict[str, int]:
    db = outbox_db(data_dir)
    try:
        return dict(db.execute("SELECT sink, seq FROM cursors"))
    finally:
        db.close()


def wait_until(predicate, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = predicate()
        except sqlite3.OperationalError:
            result = None  # the outbox may not exist yet
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Subscriber:
    """A separate MQTT client that records every message under a topic filter."""

    def __init__(self, host: str, port: int, topic: str) -> None:
        import json
        import queue

        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, dict, bool]] = []
        self._json = json
        self._subscribed = queue.Queue()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self._subscribed.put(True)
        self.client.connect(host, port)
        self.client.subscribe(topic, qos=1)
        self.client.loop_start()
        self._subscribed.get(timeout=10)

    def _on_message(self, client, userdata, message) -> None:
        payload = self._json.loads(message.payload.decode("utf-8"))
        self.messages.append((message.topic, payload, bool(message.retain)))

    def on(self, suffix: str) -> list[dict]:
        return [payload for topic, payload, _ in list(self.messages) if topic.endswith(suffix)]

    def telemetry(self) -> list[dict]:
        """Telemetry of polls (the gateway's status readings left out)."""
        return [p for t, p, _ in list(self.messages)
                if "/telemetry/" in t and STATUS_POINTS.isdisjoint(p.get("values", {}))]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
