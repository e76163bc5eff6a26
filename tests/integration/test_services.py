"""The service fixtures are real: each answers on loopback, stores data, and survives a restart."""

from __future__ import annotations

import queue
import socket
import uuid

import paho.mqtt.client as mqtt
import pytest
from services import (
    influx1_create_db,
    influx1_query,
    influx1_write,
    victoria_export,
    victoria_write,
)


def _connect(port: int) -> tuple[mqtt.Client, queue.Queue]:
    received: queue.Queue = queue.Queue()
    connected: queue.Queue = queue.Queue()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"t-{uuid.uuid4().hex[:8]}")
    client.on_connect = lambda c, u, flags, reason, props: connected.put(reason)
    client.on_message = lambda c, u, msg: received.put((msg.topic, msg.payload))
    client.connect("127.0.0.1", port, keepalive=10)
    client.loop_start()
    reason = connected.get(timeout=10)
    assert not reason.is_failure, reason
    return client, received


def _pubsub_roundtrip(port: int) -> None:
    topic = f"test/{uuid.uuid4().hex}"
    sub, received = _connect(port)
    pub, _ = _connect(port)
    try:
        subscribed: queue.Queue = queue.Queue()
        sub.on_subscribe = lambda c, u, mid, codes, props: subscribed.put(codes)
        sub.subscribe(topic, qos=1)
        assert not subscribed.get(timeout=10)[0].is_failure
        pub.publish(topic, b"hello", qos=1).wait_for_publish(timeout=10)
        assert received.get(timeout=10) == (topic, b"hello")
    finally:
        for client in (sub, pub):
            client.disconnect()
            client.loop_stop()


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def _influx_values(influxdb1, db: str, measurement: str) -> list:
    result = influx1_query(influxdb1, db, f'SELECT "value" FROM "{measurement}"', epoch_ms=True)
    series = result["results"][0].get("series", [])
    return series[0]["values"] if series else []


def test_mosquitto_publish_subscribe(mosquitto):
    assert mosquitto.host == "127.0.0.1"
    _pubsub_roundtrip(mosquitto.port)


def test_influxdb1_write_and_influxql_read(influxdb1):
    db = f"t_{uuid.uuid4().hex[:8]}"
    influx1_create_db(influxdb1, db)
    influx1_write(influxdb1, db, "smoke,site=a value=1.25 1700000000000", precision="ms")
    assert _influx_values(influxdb1, db, "smoke") == [[1700000000000, 1.25]]


def test_victoria_v2_write_and_export(victoria):
    import urllib.request

    name = f"smoke{uuid.uuid4().hex[:8]}"
    body = f"{name},site=a value=2.5 1700000000000000000".encode()
    req = urllib.request.Request(
        f"{victoria.url}/api/v2/write?org=o&bucket=readings", data=body, method="POST"
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 204
    series = victoria_export(victoria, f'{{__name__="{name}_value"}}')
    assert len(series) == 1
    assert series[0]["metric"]["site"] == "a"
    assert series[0]["values"] == [2.5]
    assert series[0]["timestamps"] == [1700000000000]


def test_mosquitto_stop_start_keeps_its_port(mosquitto):
    port = mosquitto.port
    mosquitto.stop()
    assert not mosquitto.is_running()
    assert _refused(port)
    mosquitto.start()
    assert mosquitto.port == port
    _pubsub_roundtrip(port)


def test_influxdb1_stop_start_keeps_port_and_data(influxdb1):
    db = f"t_{uuid.uuid4().hex[:8]}"
    influx1_create_db(influxdb1, db)
    influx1_write(influxdb1, db, "kept value=7 1700000000000", precision="ms")
    port = influxdb1.port
    influxdb1.stop()
    assert _refused(port)
    with pytest.raises(OSError):
        influx1_query(influxdb1, db, "SHOW DATABASES")
    influxdb1.start()
    assert influxdb1.port == port
    assert _influx_values(influxdb1, db, "kept") == [[1700000000000, 7.0]]


def test_victoria_stop_start_keeps_port_and_data(victoria):
    name = f"kept{uuid.uuid4().hex[:8]}"
    victoria_write(victoria, f"{name} value=3 1700000000000000000")
    assert victoria_export(victoria, f"{name}_value")  # visible before the restart
    port = victoria.port
    victoria.stop()
    assert _refused(port)
    victoria.start()
    assert victoria.port == port
    series = victoria_export(victoria, f"{name}_value")
    assert [(s["values"], s["timestamps"]) for s in series] == [([3.0], [1700000000000])]


def test_a_test_may_leave_a_service_stopped(mosquitto):
    mosquitto.stop()
    assert not mosquitto.is_running()


def test_the_next_test_finds_it_running_again_on_the_same_port(mosquitto):
    # conftest restarts session services a test left stopped (same port, same data dir).
    assert mosquitto.is_running()
    _pubsub_roundtrip(mosquitto.port)
