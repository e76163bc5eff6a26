"""SIGKILL while readings flow and every sink is unreachable; restart with the sinks back:
every batch committed to the outbox before the kill arrives at InfluxDB and MQTT, no gaps."""

from __future__ import annotations

import socket
import uuid

import pytest
from gateway_process import (
    GatewayProcess,
    StaticDevice,
    Subscriber,
    committed_batches,
    cursors,
    wait_until,
    write_site,
)
from services import influx1_create_db, influx1_query, victoria_export

pytestmark = pytest.mark.integration

SINKS = ("central", "local", "upstream")


def dead_port() -> int:
    """A loopback port nobody listens on: connections to it are refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def sinks_yaml(victoria_url: str, influx1_url: str, database: str, mqtt_port: int) -> str:
    return f"""\
sinks:
  - {{type: influxdb, name: central, url: "{victoria_url}", api: v2, bucket: readings, flush_interval: 100ms}}
  - {{type: influxdb, name: local, url: "{influx1_url}", api: v1, database: {database}, flush_interval: 100ms}}
upstream:
  host: 127.0.0.1
  port: {mqtt_port}
  keepalive: 5s
"""


def test_every_batch_committed_before_sigkill_arrives_after_restart(
    tmp_path, free_port, mosquitto, influxdb1, victoria
):
    site_id = f"kill-{uuid.uuid4().hex[:8]}"
    database = site_id.replace("-", "_")
    influx1_create_db(influxdb1, database)
    devices = {"pump_1": free_port, "pump_2": free_port}  # two unit ids' worth of traffic
    data_dir = tmp_path / "data"
    nowhere = dead_port()
    unreachable = sinks_yaml(
        f"http://127.0.0.1:{nowhere}", f"http://127.0.0.1:{nowhere}", database, nowhere
    )
    reachable = sinks_yaml(victoria.url, influxdb1.url, database, mosquitto.port)

    with StaticDevice(free_port):
        # Two power cuts while the sinks are unreachable and readings keep flowing.
        site = write_site(tmp_path / "site", site_id=site_id, devices=devices, sinks=unreachable,
                          poll_interval="100ms", flush_interval="100ms")
        for minimum in (20, 60):
            gateway = GatewayProcess(site, data_dir).start()
            try:
                wait_until(lambda n=minimum: len(committed_batches(data_dir)[1]) >= n, 30,
                           f"{minimum} committed batches")
                gateway.kill()
            finally:
                gateway.stop_quietly()
        epoch, committed = committed_batches(data_dir)
        assert len(committed) >= 60
        assert not any(cursors(data_dir).get(s, 0) >= committed[0][0] for s in SINKS)

        # The sinks come back.
        subscriber = Subscriber("127.0.0.1", mosquitto.port, f"pm/{site_id}/+/telemetry/#")
        site = write_site(tmp_path / "site", site_id=site_id, devices=devices, sinks=reachable,
                          poll_interval="100ms", flush_interval="100ms")
        gateway = GatewayProcess(site, data_dir).start()
        last_seq = committed[-1][0]
        try:
            wait_until(lambda: min(cursors(data_dir).get(s, 0) for s in SINKS) >= last_seq, 60,
                       "every sink to confirm the records committed before the kills")
            gateway.terminate()
        finally:
            gateway.stop_quietly()
            subscriber.close()

    # MQTT: every committed batch's id arrived (duplicates allowed, gaps not).
    ids = {m["id"] for m in subscriber.telemetry()}
    missing = [seq for seq, _, _ in committed if f"{epoch}:{seq}" not in ids]
    assert missing == [], f"{len(missing)} of {len(committed)} batches never reached MQTT"

    # InfluxDB 1.6 and VictoriaMetrics: every committed batch's timestamp, per device.
    influx_ms: dict[str, set[int]] = {}
    result = influx1_query(
        influxdb1, database,
        f"SELECT \"value\" FROM readings WHERE site='{site_id}' AND point='pressure' "
        "GROUP BY device",
        epoch_ms=True,
    )
    for series in result["results"][0]["series"]:
        influx_ms[series["tags"]["device"]] = {t for t, _ in series["values"]}
    victoria_ms: dict[str, set[int]] = {}
    for series in victoria_export(
        victoria, f'{{__name__="readings_value",site="{site_id}",point="pressure"}}'
    ):
        victoria_ms[series["metric"]["device"]] = set(series["timestamps"])

    for name, stored in (("InfluxDB 1.6", influx_ms), ("VictoriaMetrics", victoria_ms)):
        missing = [
            (seq, device) for seq, device, ts in committed
            if not {int(ts * 1000), round(ts * 1000)} & stored.get(device, set())
        ]
        assert missing == [], f"{len(missing)} of {len(committed)} batches never reached {name}"
    print(
        f"\ncommitted before the kills: {len(committed)} batches; after restart: MQTT "
        f"{len(ids)} distinct ids ({len(subscriber.telemetry())} messages), InfluxDB 1.6 "
        f"{sum(map(len, influx_ms.values()))} and VictoriaMetrics "
        f"{sum(map(len, victoria_ms.values()))} pressure timestamps; none missing"
    )
