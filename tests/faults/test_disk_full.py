"""The outbox's disk fills up while every sink is unreachable. The gateway keeps polling and
says so; while the disk is full the oldest readings make room (counted) and events are
still committed; once space and the sinks come back, everything kept is delivered.

The data dir is a small tmpfs (root only: without root these tests fail, they never skip);
a ballast file leaves the gateway a few hundred KiB, and deleting it frees the disk.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import structlog
from faultlib.influx_front import InfluxFront
from faultlib.modbus_device import FaultyModbusDevice
from faultlib.tcp_proxy import TcpProxy
from faultlib.tmpfs import Tmpfs
from faultsite import (
    Tap,
    delivered,
    device,
    modbus_tcp,
    running_gateway,
    stop_polling,
    until,
    upstream_ids,
)
from faultsite import write_site as write_fault_site
from upstream_tools import Recorder

from gateway.batch import Batch
from gateway.daemon import Gateway
from gateway.sinks.contract import iso_utc

WIDE = 60  # registers per poll: a batch of about 1 KiB in the outbox
PROFILE = {
    "id": "wide_meter",
    "name": "多点表 wide meter",
    "system": "power",
    "points": {f"r{i:02d}": {"table": "holding", "address": i, "type": "uint16"} for i in range(WIDE)},
}
LOADED = ("meter_a", "meter_b", "meter_c")
ROOM = 400 * 1024  # bytes the ballast leaves free once the gateway's files exist
FULL = 64 * 1024  # free bytes below which the disk counts as full
SAID_FULL = ("outbox disk full: readings dropped", "outbox full: oldest readings dropped",
             "outbox commit failing; records kept in memory and retried")


@dataclass
class Rig:
    disk: Tmpfs
    site: Path
    data_dir: Path
    ballast: Path
    flappy: FaultyModbusDevice  # goes offline and back: events while the disk is full
    front: InfluxFront
    proxy: TcpProxy
    recorder: Recorder

    async def fill(self, gateway: Gateway) -> None:
        """Leave the gateway ROOM bytes and wait until its outbox has used them up."""
        await until(lambda: gateway.outbox.stats.committed_seq > 20, "first commits")
        self.ballast.write_bytes(b"\0" * max(0, self.disk.free_bytes() - ROOM))
        await until(lambda: self.disk.free_bytes() < FULL, "the outbox to fill the disk", 60)

    async def flap(self, tap: Tap, times: int = 2) -> None:
        """The flappy device goes offline and comes back `times` times (two events each)."""
        for _ in range(times):
            since = time.time()
            self.flappy.play("silent")
            await until(lambda s=since: _status_after(tap, "flappy", s, False), "offline")
            self.flappy.play("ok")
            await until(lambda s=since: _status_after(tap, "flappy", s, True), "online")

    async def free(self) -> None:
        """Space and the sinks come back."""
        self.ballast.unlink()
        self.front.passing()
        self.front.up()
        await asyncio.to_thread(self.proxy.relay)


@pytest.fixture
def rig(tmp_path, mosquitto) -> Iterator[Rig]:
    site_id = f"full-{uuid.uuid4().hex[:8]}"
    meters = [FaultyModbusDevice(holding=list(range(100, 100 + WIDE))).start() for _ in LOADED]
    flappy = FaultyModbusDevice(holding=list(range(WIDE))).start()
    front = InfluxFront("http://127.0.0.1:9").start()  # passes nothing on: it stays down
    front.down()
    recorder = Recorder("127.0.0.1", mosquitto.port, f"pm/{site_id}/#")
    proxy = TcpProxy(("127.0.0.1", mosquitto.port)).start()
    proxy.refuse()
    site = write_fault_site(
        tmp_path / "site", site_id=site_id, profiles={"wide_meter": PROFILE},
        devices=[device(d, modbus_tcp(m.port), poll="50ms", profile="wide_meter")
                 for d, m in zip(LOADED, meters, strict=True)]
        + [device("flappy", modbus_tcp(flappy.port), poll="100ms", profile="wide_meter")],
        sinks=[{"type": "influxdb", "name": "central", "url": front.url, "api": "v1",
                "database": "nowhere", "flush_interval": "100ms"}],
        upstream={"host": "127.0.0.1", "port": proxy.port, "gateway_id": "gw-full"},
    )
    try:
        with Tmpfs(tmp_path / "disk", size="8m") as disk:
            yield Rig(disk, site, disk.path / "data", disk.path / "ballast", flappy, front,
                      proxy, recorder)
    finally:
        proxy.stop()
        recorder.close()
        front.stop()
        for m in (*meters, flappy):
            m.stop()


async def test_a_full_disk_stops_nothing_is_said_and_loses_only_the_oldest_readings(rig):
    with structlog.testing.capture_logs() as logs:
        async with running_gateway(rig.site, data_dir=rig.data_dir) as (gateway, tap):
            await rig.fill(gateway)
            full_at = time.time()
            await rig.flap(tap)
            polls = len(tap.batches)
            await asyncio.sleep(1.0)
            assert len(tap.batches) - polls >= 30, "polling stopped on the full disk"
            full_status = gateway.status()["outbox"]
            full_for = time.time() - full_at

            await rig.free()
            await stop_polling(gateway)
            await until(lambda: delivered(gateway, "upstream"), "upstream to catch up", 60)
            dropped = gateway.outbox.stats.dropped_readings
            await until(lambda: len(set(upstream_ids(rig.recorder)))
                        >= len(tap.batches) + len(tap.events) - dropped,
                        "the platform to receive every record kept")

    said = [e for e in logs if e["event"] in SAID_FULL]
    assert said, "the gateway never said the disk was full"
    received = [m.body for m in list(rig.recorder.messages)
                if m.payload and "/gateway/" not in m.topic]
    # a device's status reading (`online`) may share a poll's time stamp: key by points too
    telemetry = {(b["device"], b["ts"], frozenset(b["values"])) for b in received if "values" in b}
    events = {b["id"] for b in received if "values" not in b}
    assert len(events) == len(tap.events), "an event was lost on the full disk"

    def key(b: Batch) -> tuple[str, str, frozenset[str]]:
        return b.device, iso_utc(b.ts), frozenset(b.points)

    kept = [b for b in tap.batches if key(b) in telemetry]
    lost = [b for b in tap.batches if key(b) not in telemetry]
    assert len(lost) == dropped and len(kept) + dropped == len(tap.batches), (len(lost), dropped)
    # oldest first: what was dropped is exactly the oldest readings produced
    assert {id(b) for b in lost} == {id(b) for b in tap.batches[:dropped]}, (
        "readings were dropped that were newer than readings kept")
    print(f"\ndisk full for {full_for:.1f} s: produced {len(tap.batches)} batches and "
          f"{len(tap.events)} events; dropped the oldest {dropped}, delivered the other "
          f"{len(kept)} and every event; said so: {sorted({e['event'] for e in said})}; "
          f"status while full {full_status}")


async def test_on_a_full_disk_the_oldest_readings_make_room_and_events_are_still_committed(rig):
    async with running_gateway(rig.site, data_dir=rig.data_dir) as (gateway, tap):
        await rig.fill(gateway)
        await rig.flap(tap, times=1)
        appended = gateway.outbox.stats.appended
        commits = gateway.outbox.stats.commits
        try:
            # the events are on disk within a few flush intervals, readings dropped for them
            await until(lambda: gateway.outbox.stats.commits > commits
                        and gateway.outbox.stats.dropped_readings > 0
                        and gateway.outbox.stats.committed_seq
                        >= appended - gateway.outbox.stats.dropped_readings,
                        "the outbox to commit again on the full disk", timeout=5)
        finally:
            await rig.free()


def _status_after(tap: Tap, device_id: str, since: float, online: bool) -> bool:
    return any(e.type == "device_status" and e.device == device_id and e.ts >= since
               and e.body.get("online") is online for e in list(tap.events))
