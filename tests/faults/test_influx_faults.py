"""InfluxDB misbehaves (down, slow, 500, 429 with Retry-After, 400 for one bad point) while
the gateway polls two devices and also sends upstream: the upstream link and the polls go
on, and once InfluxDB is back every line produced is stored there (but the one bad point,
logged once and skipped).

Between the gateway and InfluxDB 1.6 stands faultlib's InfluxFront; "produced" is what the
gateway put in its outbox (a tap on it), "stored" is what InfluxQL counts per series.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import structlog
from faultlib.influx_front import InfluxFront
from faultlib.modbus_device import FaultyModbusDevice
from faultsite import (
    REGISTERS,
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
from services import influx1_create_db, influx1_query
from upstream_tools import Recorder

from gateway.daemon import Gateway

FAULT_FOR = 3.0  # seconds each fault lasts
DEVICES = ("pump_a", "pump_b")
TIMEOUT = 0.5  # the sink's request timeout; "slow" answers later than this


@dataclass
class Rig:
    site: str
    database: str
    front: InfluxFront
    recorder: Recorder
    path: object


@pytest.fixture
def rig(tmp_path, influxdb1, mosquitto):
    site_id = f"influx-{uuid.uuid4().hex[:8]}"
    database = site_id.replace("-", "_")
    influx1_create_db(influxdb1, database)
    devices = [FaultyModbusDevice(holding=list(REGISTERS)).start() for _ in DEVICES]
    front = InfluxFront(influxdb1.url).start()
    recorder = Recorder("127.0.0.1", mosquitto.port, f"pm/{site_id}/#")
    path = write_fault_site(
        tmp_path / "site", site_id=site_id,
        devices=[device(d, modbus_tcp(dev.port), poll="100ms") for d, dev in zip(DEVICES, devices, strict=True)],
        sinks=[{"type": "influxdb", "name": "central", "url": front.url, "api": "v1",
                "database": database, "flush_interval": "100ms", "timeout": f"{TIMEOUT}s"}],
        upstream={"host": "127.0.0.1", "port": mosquitto.port, "gateway_id": "gw-influx"},
    )
    try:
        yield Rig(site_id, database, front, recorder, path)
    finally:
        recorder.close()
        front.stop()
        for dev in devices:
            dev.stop()


def stored(influxdb1, rig: Rig) -> dict[tuple[str, str], set[int]]:
    """Timestamps (ms) InfluxDB holds per (device, point)."""
    result = influx1_query(influxdb1, rig.database,
                           f"SELECT \"value\" FROM readings WHERE site='{rig.site}' "
                           "GROUP BY device, point", epoch_ms=True)
    out: dict[tuple[str, str], set[int]] = {}
    for series in result["results"][0].get("series", []):
        key = (series["tags"]["device"], series["tags"]["point"])
        out[key] = {ts for ts, _value in series["values"]}
    return out


def produced(tap: Tap) -> dict[tuple[str, str], set[int]]:
    out: dict[tuple[str, str], set[int]] = {}
    for batch in tap.batches:
        assert batch.quality is None, f"a poll failed: {batch}"  # the devices never fail here
        for point in batch.points:
            out.setdefault((batch.device, point), set()).add(round(batch.ts * 1000))
    return out


async def play(gateway: Gateway, tap: Tap, rig: Rig, start: Callable[[], None],
               end: Callable[[], None]) -> float:
    """Deliver for a moment, play the fault for FAULT_FOR seconds, end it; the fault's start
    (monotonic). Asserts the polls and the upstream link went on meanwhile."""
    await until(lambda: rig.front.answered(204) >= 2, "InfluxDB to take writes")
    began = time.monotonic()
    start()
    polls, upstream = len(tap.batches), len(set(upstream_ids(rig.recorder)))
    await until(lambda: time.monotonic() - began >= FAULT_FOR, "the fault to last", every=0.1)
    during = len(tap.batches) - polls
    assert during >= 2 * FAULT_FOR * len(DEVICES), f"only {during} polls during the fault"
    assert len(set(upstream_ids(rig.recorder))) - upstream >= during // 2, "upstream stalled too"
    end()
    return began


async def settle(gateway: Gateway, tap: Tap, rig: Rig) -> None:
    """Stop polling and wait until both sinks confirmed everything produced."""
    await stop_polling(gateway)
    await until(lambda: delivered(gateway, "central") and delivered(gateway, "upstream"),
                "every record to be delivered after the fault", timeout=30)
    produced_ids = len(tap.batches) + len(tap.events)
    await until(lambda: len(set(upstream_ids(rig.recorder))) >= produced_ids,
                "the recorder to see every upstream message")


FAULTS = {
    "down": (lambda f: f.down(), lambda f: f.up()),
    "slow": (lambda f: f.slow(3 * TIMEOUT), lambda f: f.passing()),
    "500": (lambda f: f.fail(500), lambda f: f.passing()),
}


@pytest.mark.parametrize("fault", list(FAULTS))
async def test_influxdb_down_slow_or_failing_loses_nothing_and_holds_up_nothing_else(
    fault, rig, influxdb1
):
    start, end = FAULTS[fault]
    async with running_gateway(rig.path) as (gateway, tap):
        await play(gateway, tap, rig, lambda: start(rig.front), lambda: end(rig.front))
        runner = next(r for r in gateway.runners if r.name == "central")
        await settle(gateway, tap, rig)
        assert runner.failures >= 1, "the fault was never noticed"
    want, have = produced(tap), stored(influxdb1, rig)
    lost = {k: sorted(want[k] - have.get(k, set())) for k in want if want[k] - have.get(k, set())}
    assert lost == {}, f"lines lost to InfluxDB {fault}: {lost}"
    assert have.keys() == want.keys()
    assert len(set(upstream_ids(rig.recorder))) == len(tap.batches) + len(tap.events)
    lines = sum(map(len, want.values()))
    print(f"\nInfluxDB {fault} for {FAULT_FOR:g} s: {runner.failures} failed writes; produced "
          f"{len(tap.batches)} batches = {lines} lines, stored {sum(map(len, have.values()))}; "
          f"upstream got all {len(tap.batches) + len(tap.events)} records")


async def test_a_429_is_waited_out_for_its_retry_after_and_nothing_is_lost(rig, influxdb1):
    retry_after = 2.0
    async with running_gateway(rig.path) as (gateway, tap):
        began = await play(gateway, tap, rig, lambda: rig.front.throttle(retry_after),
                           rig.front.passing)
        await settle(gateway, tap, rig)
    throttled = [r.at for r in rig.front.requests if r.status == 429 and r.at >= began]
    # honoured: one try per Retry-After (the backoff alone would try at 0.5, 1, 2 s...)
    assert 1 <= len(throttled) <= FAULT_FOR / retry_after + 1, throttled
    gaps = [b - a for a, b in zip(throttled, throttled[1:], strict=False)]
    assert all(gap >= retry_after - 0.1 for gap in gaps), gaps
    want, have = produced(tap), stored(influxdb1, rig)
    assert {k: want[k] - have.get(k, set()) for k in want} == {k: set() for k in want}
    print(f"\n429 with Retry-After {retry_after:g} s for {FAULT_FOR:g} s: {len(throttled)} "
          f"throttled writes, {gaps} s apart; all {sum(map(len, want.values()))} lines stored")


async def test_one_point_influxdb_refuses_is_logged_and_skipped_and_the_rest_lands(rig, influxdb1):
    chosen: list[str] = []

    def bad(line: str) -> bool:
        """The first pump_a temperature line written from now on, and only that one."""
        if not chosen and "device=pump_a" in line and "point=temperature" in line:
            chosen.append(line)
        return bool(chosen) and line == chosen[0]

    with structlog.testing.capture_logs() as logs:
        async with running_gateway(rig.path) as (gateway, tap):
            await play(gateway, tap, rig, lambda: rig.front.refuse_line(bad), lambda: None)
            await settle(gateway, tap, rig)
            sink = next(r.sink for r in gateway.runners if r.name == "central")
            assert (sink.rejected, len(chosen)) == (1, 1)
    refused = [e for e in logs if e["event"] == "influxdb refused a line; skipped"]
    assert len(refused) == 1, refused
    assert (refused[0]["device"], refused[0]["point"], refused[0]["status"]) == (
        "pump_a", "temperature", 400)
    assert refused[0]["line"] == chosen[0]
    bad_ts = int(chosen[0].rsplit(" ", 1)[1])
    want, have = produced(tap), stored(influxdb1, rig)
    missing = {k: sorted(want[k] - have.get(k, set())) for k in want if want[k] - have.get(k, set())}
    assert missing == {("pump_a", "temperature"): [bad_ts]}
    lines = sum(map(len, want.values()))
    assert sum(map(len, have.values())) == lines - 1
    print(f"\none bad point refused with 400: produced {lines} lines, stored {lines - 1}; "
          f"the refused one ({chosen[0]}) logged once and skipped")

