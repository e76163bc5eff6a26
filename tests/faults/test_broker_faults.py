"""The upstream broker goes away, or the gateway's TCP connection to it is cut in the middle
of a publish: polling goes on, and once the link is back the platform has every record the
gateway produced, by id (duplicates allowed, gaps not).

"Produced" is what the gateway put in its outbox (a tap on it); a recorder subscribed
straight to the broker (not through the proxy) is the platform.
"""

from __future__ import annotations

import asyncio
import random
import uuid

import pytest
import services
from faultlib.modbus_device import FaultyModbusDevice
from faultlib.tcp_proxy import TcpProxy
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
from upstream_tools import Recorder

from gateway.daemon import Gateway

DEVICES = ("pump_a", "pump_b")
OUTAGE = 3.0  # seconds


def site(tmp_path, site_id: str, ports: list[int], broker_port: int):
    return write_fault_site(
        tmp_path / "site", site_id=site_id,
        devices=[device(d, modbus_tcp(p), poll="100ms") for d, p in zip(DEVICES, ports, strict=True)],
        upstream={"host": "127.0.0.1", "port": broker_port, "gateway_id": "gw-broker",
                  "keepalive": "5s"},
    )


@pytest.fixture
def devices():
    made = [FaultyModbusDevice(holding=list(REGISTERS)).start() for _ in DEVICES]
    yield [d.port for d in made]
    for d in made:
        d.stop()


@pytest.fixture
def persistent_broker(tmp_path):
    """A Mosquitto of its own that keeps the recorder's session across a restart, so the
    platform misses nothing published while it reconnects."""
    broker = services.start_mosquitto(tmp_path / "mosquitto", persistence=True)
    yield broker
    broker.stop()


async def settle(gateway: Gateway, tap: Tap, recorder: Recorder) -> set[str]:
    """Stop polling; wait until upstream confirmed everything and the recorder has it."""
    await stop_polling(gateway)
    await until(lambda: delivered(gateway, "upstream"), "upstream to confirm every record", 40)
    produced = len(tap.batches) + len(tap.events)
    await until(lambda: len(set(upstream_ids(recorder))) >= produced,
                "the platform to receive every record")
    return set(upstream_ids(recorder))


def assert_all_arrived(gateway: Gateway, tap: Tap, ids: set[str]) -> None:
    epoch = gateway.outbox.epoch
    last = gateway.outbox.stats.committed_seq
    produced = len(tap.batches) + len(tap.events)
    assert last == produced, "the outbox committed other than what was appended"
    missing = [seq for seq in range(1, last + 1) if f"{epoch}:{seq}" not in ids]
    assert missing == [], f"{len(missing)} of {produced} records never reached the platform"
    assert len(ids) == produced


async def test_a_broker_restart_loses_nothing_and_polling_goes_on(
    tmp_path, devices, persistent_broker
):
    broker = persistent_broker
    site_id = f"broker-{uuid.uuid4().hex[:8]}"
    recorder = Recorder(broker.host, broker.port, f"pm/{site_id}/#", session=f"platform-{site_id}")
    try:
        async with running_gateway(site(tmp_path, site_id, devices, broker.port)) as (gateway, tap):
            sink = next(r.sink for r in gateway.runners if r.name == "upstream")
            await until(lambda: len(upstream_ids(recorder)) >= 10, "telemetry before the outage")
            await asyncio.to_thread(broker.stop)
            await until(lambda: not sink.connected, "the gateway to see the broker gone")
            polls = len(tap.batches)
            await asyncio.sleep(OUTAGE)
            during = len(tap.batches) - polls
            assert during >= OUTAGE * 10 * len(DEVICES) * 0.5, f"only {during} polls in the outage"
            backlog = gateway.outbox.stats.committed_seq - gateway.outbox.cursor("upstream")
            await asyncio.to_thread(broker.start)
            ids = await settle(gateway, tap, recorder)
            assert_all_arrived(gateway, tap, ids)
    finally:
        recorder.close()
    received = upstream_ids(recorder)
    print(f"\nbroker down {OUTAGE:g} s: {during} polls meanwhile, {backlog} records waiting; "
          f"after the restart the platform has all {len(ids)} records ({len(tap.batches)} "
          f"batches, {len(tap.events)} events; {len(received) - len(ids)} duplicates)")


async def test_connections_cut_mid_publish_lose_nothing(tmp_path, devices, mosquitto):
    rng = random.Random()
    site_id = f"cut-{uuid.uuid4().hex[:8]}"
    recorder = Recorder("127.0.0.1", mosquitto.port, f"pm/{site_id}/#")
    cuts = 0
    with TcpProxy(("127.0.0.1", mosquitto.port)) as proxy:
        try:
            path = site(tmp_path, site_id, devices, proxy.port)
            async with running_gateway(path) as (gateway, tap):
                sink = next(r.sink for r in gateway.runners if r.name == "upstream")
                for _ in range(4):
                    # a backlog builds while nothing listens, then goes out in big publishes:
                    # the connection is cut part-way through one of them
                    await until(lambda: sink.connected, "the gateway to (re)connect")
                    await asyncio.to_thread(proxy.refuse)
                    await asyncio.sleep(rng.uniform(0.3, 0.8))
                    proxy.cut_after(rng.randrange(200, 4000))
                    await asyncio.to_thread(proxy.relay)
                    await until(lambda: not proxy.cut_pending, "the cut mid-publish", every=0.02)
                    cuts += 1
                cut_before = proxy.stats.cut
                ids = await settle(gateway, tap, recorder)
                assert_all_arrived(gateway, tap, ids)
                assert cut_before >= 3, f"only {cut_before} connections were cut"
        finally:
            recorder.close()
    received = upstream_ids(recorder)
    print(f"\n{proxy.stats.cut} connections cut ({cuts} mid-publish), {proxy.stats.accepted} "
          f"made: the platform has all {len(ids)} records ({len(tap.batches)} batches, "
          f"{len(tap.events)} events; {len(received) - len(ids)} duplicates)")
