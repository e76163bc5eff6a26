"""`gateway tail`: a control-socket connection that streams the readings and events the
pipeline emits, filtered in the daemon; a client that does not read loses the oldest
items (and is told), never holds the pipeline up."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from test_local_control import short_dir

from gateway.batch import Batch, Event
from gateway.catalog import Catalog
from gateway.cli import main
from gateway.commands.local import CONTROL_SOCKET, LocalControl
from gateway.commission import stream
from gateway.commission.tail import follow, format_item, tail_request
from gateway.config.models import Device, Profile, SiteConfig
from gateway.pipeline import Pipeline

PUMP = Profile.from_data({"id": "pump", "name": "pump", "system": "water_supply", "points": {
    "pressure": {"address": 0, "scale": 0.001, "unit": "MPa"},
    "current": {"address": 1, "scale": 0.1, "unit": "A"},
    "fault": {"address": 2, "enum": {0: "无故障", 11: "电机过载"}},
}})
METER = Profile.from_data({"id": "meter", "name": "meter", "system": "power", "points": {
    "energy": {"address": 0, "type": "uint32", "unit": "kWh"},
}})
PUMP_POINTS = ("pressure", "current")


def _device(device_id: str, profile: str) -> Device:
    return Device.model_validate({"id": device_id, "profile": profile, "connection": {
        "type": "modbus_tcp", "host": "127.0.0.1", "port": 1502}})


class NoOutbox:
    def append_batch(self, batch: Batch) -> None:
        pass

    def append_event(self, event: Event) -> None:
        pass


class Daemon:
    """The parts of a running gateway a tail reads: its pipeline and catalog."""

    def __init__(self, data_dir: Path) -> None:
        site = SiteConfig.model_validate({"site": {"id": "estate", "name": "阳光花园"}})
        config = site.model_copy(update={
            "profiles": {"pump": PUMP, "meter": METER},
            "devices": [_device("pump_b1_1", "pump"), _device("pump_b1_2", "pump"),
                        _device("meter_b1", "meter")],
        })
        self.pipeline = Pipeline(NoOutbox())  # type: ignore[arg-type]
        self.gateway = SimpleNamespace(pipeline=self.pipeline, catalog=Catalog.from_config(config),
                                       rules=None, status=lambda: {})
        self.path = data_dir / CONTROL_SOCKET
        self.control = LocalControl(self.gateway, None, self.path)  # type: ignore[arg-type]

    def reading(self, device: str, pressure: float, ts: float = 1.0) -> None:
        points = PUMP_POINTS if device.startswith("pump") else ("energy",)
        values = [pressure, 12.5] if device.startswith("pump") else [1234]
        self.pipeline.emit_batch(Batch(device, ts, points, values))

    def alarm(self, device: str) -> None:
        self.pipeline.emit_event(Event("alarm_event", 2.0, device, {
            "alarm": f"{device}.low_pressure", "transition": "raised", "state": "active_unacknowledged",
            "severity": "major", "message": "出水压力低"}))


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    yield from short_dir(tmp_path)


@pytest.fixture
async def daemon(data_dir: Path) -> AsyncIterator[Daemon]:
    daemon = Daemon(data_dir)
    await daemon.control.start()
    yield daemon
    await daemon.control.stop()


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def line(self, timeout: float = 2.0) -> dict[str, Any]:
        return json.loads(await asyncio.wait_for(self.reader.readline(), timeout))

    async def lines_until_quiet(self, quiet: float = 0.3) -> list[dict[str, Any]]:
        out = []
        while True:
            try:
                raw = await asyncio.wait_for(self.reader.readline(), quiet)
            except TimeoutError:
                return out
            if not raw:
                return out
            out.append(json.loads(raw))

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


async def _tail(daemon: Daemon, receive_buffer: int | None = None, **body: Any) -> tuple[Client, dict]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, os.fspath(daemon.path))
    reader, writer = await asyncio.open_unix_connection(sock=sock, limit=1 << 20)
    writer.write(json.dumps({"tail": True, **body}).encode() + b"\n")
    await writer.drain()
    client = Client(reader, writer)
    return client, await client.line()


async def _until(predicate, timeout: float = 2.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_the_tail_streams_the_readings_and_events_its_filter_matches(daemon: Daemon) -> None:
    client, ack = await _tail(daemon, devices=["pump_*"], points=["pressure"])
    assert ack["ok"] and ack["result"]["devices"] == 2
    daemon.reading("pump_b1_1", 0.45)
    daemon.reading("meter_b1", 0)
    daemon.alarm("pump_b1_2")
    daemon.alarm("meter_b1")
    got = await client.lines_until_quiet()
    assert got == [
        {"type": "reading", "ts": 1.0, "device": "pump_b1_1", "point": "pressure", "value": 0.45,
         "quality": "good", "unit": "MPa"},
        {"type": "event", "event": "alarm_event", "ts": 2.0, "device": "pump_b1_2",
         "body": {"alarm": "pump_b1_2.low_pressure", "transition": "raised",
                  "state": "active_unacknowledged", "severity": "major", "message": "出水压力低"}},
    ]
    await client.close()


async def test_a_coded_value_carries_its_text_from_the_profile(daemon: Daemon) -> None:
    client, _ = await _tail(daemon, points=["fault"])
    daemon.pipeline.emit_batch(Batch("pump_b1_1", 3.0, ("fault",), [11]))
    (got,) = await client.lines_until_quiet()
    assert (got["value"], got["text"]) == (11, "电机过载")
    assert format_item(got).endswith("pump_b1_1  fault = 11 (电机过载)")
    await client.close()


async def test_a_system_narrows_readings_and_events_and_events_only_leaves_readings_out(
    daemon: Daemon,
) -> None:
    client, ack = await _tail(daemon, systems=["power"], readings=False)
    assert ack["result"]["devices"] == 1
    daemon.reading("meter_b1", 0)
    daemon.alarm("pump_b1_1")
    daemon.alarm("meter_b1")
    got = await client.lines_until_quiet()
    assert [(item["type"], item["device"]) for item in got] == [("event", "meter_b1")]
    await client.close()


async def test_derived_points_are_tailed_like_read_ones(daemon: Daemon) -> None:
    class Derives:
        def process(self, batch: Batch) -> list[Batch | Event]:
            return [Batch(batch.device, batch.ts, ("pressure_bar",), [batch.values[0] * 10])]

    daemon.pipeline.rules = Derives()  # type: ignore[assignment]
    client, _ = await _tail(daemon, devices=["pump_b1_1"], points=["pressure*"])
    daemon.reading("pump_b1_1", 0.45)
    got = await client.lines_until_quiet()
    assert [(item["point"], item["value"]) for item in got] == [
        ("pressure", 0.45), ("pressure_bar", pytest.approx(4.5))]
    await client.close()


async def test_a_client_that_never_reads_loses_the_oldest_items_and_never_holds_up_the_pipeline(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(stream, "MAX_QUEUE", 16)
    client, _ = await _tail(daemon, receive_buffer=4096)
    big = "x" * 2000  # a reading the size of a long MQTT payload: the buffers fill fast
    for n in range(3000):  # the client reads nothing meanwhile
        daemon.pipeline.emit_batch(Batch("meter_b1", float(n), ("energy",), [big]))
        await asyncio.sleep(0)  # the loop turns, as between polls: the tail's sender runs
    assert daemon.pipeline.batches == 3000  # every emit returned at once
    got = await client.lines_until_quiet(0.5)
    dropped = [item for item in got if item["type"] == "dropped"]
    readings = [item for item in got if item["type"] == "reading"]
    assert dropped and sum(item["count"] for item in dropped) == 3000 - len(readings)
    assert dropped[-1]["total"] == 3000 - len(readings)
    assert readings[-1]["ts"] == 2999.0  # the newest are kept, the oldest went
    await client.close()


async def test_the_listeners_go_when_the_client_hangs_up(daemon: Daemon) -> None:
    before = list(daemon.pipeline.listeners)
    client, _ = await _tail(daemon)
    assert len(daemon.pipeline.batch_listeners) == 1
    await client.close()
    await _until(lambda: not daemon.pipeline.batch_listeners)
    assert daemon.pipeline.listeners == before


async def test_a_mistaken_tail_is_refused_with_the_reason(daemon: Daemon) -> None:
    _, ack = await _tail(daemon, devices="pump_b1_1")
    assert ack == {"ok": False, "error": "devices must be a list of names or patterns"}
    _, ack = await _tail(daemon, device=["pump_b1_1"])
    assert ack["ok"] is False and ack["error"].startswith("unknown field 'device'")
    _, ack = await _tail(daemon, readings=False, events=False)
    assert "nothing to send" in ack["error"]


async def test_tails_beyond_the_limit_are_refused(daemon: Daemon, monkeypatch) -> None:
    monkeypatch.setattr(stream, "MAX_TAILS", 1)
    first, _ = await _tail(daemon)
    _, ack = await _tail(daemon)
    assert ack == {"ok": False, "error": "the gateway serves at most 1 tails at once; "
                                        "end one and try again"}
    await first.close()


async def test_a_filter_no_device_matches_is_answered_with_the_devices_there_are(
    daemon: Daemon,
) -> None:
    _, ack = await _tail(daemon, devices=["pump_b9_*"])
    assert ack["result"]["devices"] == 0
    assert ack["result"]["known"] == ["meter_b1", "pump_b1_1", "pump_b1_2"]


# --- the client -----------------------------------------------------------------------------


async def test_the_cli_prints_a_line_per_reading_and_event_until_the_gateway_stops(
    daemon: Daemon, capsys,
) -> None:
    body = tail_request(["pump_b1_1"], [], [])
    following = asyncio.create_task(asyncio.to_thread(follow, daemon.path, body, as_json=False))
    await _until(lambda: daemon.pipeline.batch_listeners)
    daemon.reading("pump_b1_1", 0.45, ts=1795449402.5)
    daemon.alarm("pump_b1_1")
    await asyncio.sleep(0.3)
    await daemon.control.stop()
    assert await following == 1  # the gateway ended the stream
    out, err = capsys.readouterr()
    # (the daemon's own log lines share stdout in this test; the tail's start with the time)
    lines = [line for line in out.splitlines() if re.match(r"\d\d:\d\d:\d\d\.\d{3}  ", line)]
    assert [line.split("  ", 1)[1] for line in lines] == [
        "pump_b1_1  pressure = 0.45 MPa", "pump_b1_1  current = 12.5 A",
        "pump_b1_1  ALARM pump_b1_1.low_pressure raised -> active_unacknowledged [major] 出水压力低",
    ]
    assert "ended the stream" in err and "\x1b" not in "".join(lines) + err


async def test_the_cli_says_so_when_nothing_matches(daemon: Daemon, capsys) -> None:
    body = tail_request(["pump_b9_1"], [], [])
    assert await asyncio.to_thread(follow, daemon.path, body, as_json=True) == 1
    assert "no device of the running gateway matches --device pump_b9_1" in capsys.readouterr().err


def test_a_reading_that_is_not_good_says_why() -> None:
    line = format_item({"type": "reading", "ts": 0.0, "device": "pump_b1_1", "point": "pressure",
                        "value": None, "quality": "comm_failure", "unit": "MPa"})
    assert line.endswith("pump_b1_1  pressure = -  [comm_failure]")


def test_without_a_running_gateway_tail_exits_2(data_dir: Path, capsys) -> None:
    assert main(["tail", "--data-dir", str(data_dir)]) == 2
    assert "no gateway is running" in capsys.readouterr().err
