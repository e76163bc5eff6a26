"""A Modbus device → the gateway (a real process) → VictoriaMetrics, InfluxDB 1.6, Mosquitto, history."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest
from gateway_process import (
    EXPECTED,
    STATUS_POINTS,
    GatewayProcess,
    StaticDevice,
    Subscriber,
    cursors,
    wait_until,
    write_site,
)
from services import influx1_create_db, influx1_query, victoria_export

pytestmark = pytest.mark.integration


def sinks_yaml(victoria, influxdb1, database: str) -> str:
    return f"""\
sinks:
  - type: influxdb
    name: central
    url: {victoria.url}
    api: v2
    org: estate
    bucket: readings
    flush_interval: 200ms
  - type: influxdb
    name: local
    url: {influxdb1.url}
    api: v1
    database: {database}
    flush_interval: 200ms
  - type: history
"""


def upstream_yaml(mosquitto, keepalive: str = "5s") -> str:
    return f"""\
upstream:
  host: 127.0.0.1
  port: {mosquitto.port}
  topic_prefix: pm
  keepalive: {keepalive}
"""


def test_readings_reach_every_sink_with_the_decoded_values(
    tmp_path, free_port, mosquitto, influxdb1, victoria
):
    site_id = f"e2e-{uuid.uuid4().hex[:8]}"
    database = site_id.replace("-", "_")
    influx1_create_db(influxdb1, database)
    site = write_site(
        tmp_path / "site", site_id=site_id, devices={"pump_1": free_port},
        sinks=sinks_yaml(victoria, influxdb1, database), upstream=upstream_yaml(mosquitto),
    )
    data_dir = tmp_path / "data"
    subscriber = Subscriber("127.0.0.1", mosquitto.port, f"pm/{site_id}/#")
    gateway = GatewayProcess(site, data_dir)
    try:
        with StaticDevice(free_port):
            gateway.start()
            wait_until(lambda: len(subscriber.telemetry()) >= 10, 30, "telemetry over MQTT")
            wait_until(
                lambda: min(cursors(data_dir).get(s, 0) for s in ("central", "local", "history")) >= 10,
                30, "every sink to confirm 10 records",
            )
            seconds = gateway.terminate()
        assert gateway.proc.returncode == 0, gateway.log_text()
        assert seconds < 5.0
    finally:
        gateway.stop_quietly()
        subscriber.close()

    # MQTT: the birth message, then telemetry with ids and the decoded values, then offline.
    states = [p["state"] for p in subscriber.on("/gateway/status")]
    assert states[0] == "online" and states[-1] == "offline"
    telemetry = subscriber.telemetry()
    for message in telemetry:
        assert message["device"] == "pump_1" and message["site"] == site_id
        assert message["values"] == pytest.approx(EXPECTED, rel=1e-6)
        assert "quality" not in message
    sent_ms = {_iso_to_ms(m["ts"]) for m in telemetry}
    assert len({m["id"] for m in telemetry}) == len(telemetry)

    # VictoriaMetrics (influxdb-client v2 write API), read back through its export API.
    series = victoria_export(victoria, f'{{__name__="readings_value",site="{site_id}"}}')
    by_point = {s["metric"]["point"]: s for s in series if s["metric"]["point"] not in STATUS_POINTS}
    assert set(by_point) == set(EXPECTED)
    for point, expected in EXPECTED.items():
        assert by_point[point]["values"] == [pytest.approx(expected, rel=1e-6)] * len(sent_ms)
        assert by_point[point]["metric"]["device"] == "pump_1"
        assert by_point[point]["metric"]["building"] == "1号楼"
    assert by_point["pressure"]["metric"]["unit"] == "MPa"
    assert set(by_point["pressure"]["timestamps"]) == sent_ms

    # InfluxDB 1.6 through /write, read back with InfluxQL.
    result = influx1_query(
        influxdb1, database,
        f"SELECT \"value\" FROM readings WHERE site='{site_id}' GROUP BY point",
    )
    rows = {s["tags"]["point"]: s["values"] for s in result["results"][0]["series"]
            if s["tags"]["point"] not in STATUS_POINTS}
    assert set(rows) == set(EXPECTED)
    for point, expected in EXPECTED.items():
        assert [v for _, v in rows[point]] == [pytest.approx(expected, rel=1e-6)] * len(sent_ms)

    # Local history, through the CLI.
    out = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "history", "-c", str(site), "--data-dir",
         str(data_dir), "pump_1", "pressure", "--json", "--limit", "5"],
        capture_output=True, text=True, check=True,
    )
    history = json.loads(out.stdout)
    assert len(history) == 5
    assert [row["value"] for row in history] == [pytest.approx(0.452)] * 5


def test_a_killed_gateway_leaves_its_last_will_on_the_status_topic(tmp_path, free_port, mosquitto):
    site_id = f"will-{uuid.uuid4().hex[:8]}"
    site = write_site(
        tmp_path / "site", site_id=site_id, devices={"pump_1": free_port},
        upstream=upstream_yaml(mosquitto, keepalive="2s"),
    )
    gateway = GatewayProcess(site, tmp_path / "data")
    with StaticDevice(free_port):
        gateway.start()
        try:
            subscriber = Subscriber("127.0.0.1", mosquitto.port, f"pm/{site_id}/+/gateway/status")
            wait_until(lambda: subscriber.on("/gateway/status"), 20, "the birth message")
            assert subscriber.on("/gateway/status")[0]["state"] == "online"
            gateway.kill()
            wait_until(
                lambda: subscriber.on("/gateway/status")[-1]["state"] == "offline", 10,
                "the last will",
            )
            # A late subscriber sees the retained state: offline.
            late = Subscriber("127.0.0.1", mosquitto.port, f"pm/{site_id}/+/gateway/status")
            wait_until(lambda: late.messages, 5, "the retained status")
            topic, payload, retained = late.messages[0]
            assert retained and payload["state"] == "offline"
            late.close()
            subscriber.close()
        finally:
            gateway.stop_quietly()


def _iso_to_ms(text: str) -> int:
    from datetime import datetime

    return round(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)
