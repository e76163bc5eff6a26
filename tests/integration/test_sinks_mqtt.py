"""The MQTT sink against a real Mosquitto: birth, telemetry, retained status, last will, outages."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

import gateway
from gateway.batch import Batch, Event, Kind, Record
from gateway.catalog import Catalog, DeviceInfo
from gateway.config.models import MqttSinkConfig
from gateway.sinks.base import SinkUnavailable
from gateway.sinks.mqtt import MqttSink

ROOT = Path(__file__).resolve().parents[2]


class Subscriber:
    """A separate paho client that records what the broker delivers."""

    def __init__(self, host: str, port: int, topic: str) -> None:
        self.messages: list[mqtt.MQTTMessage] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-{uuid.uuid4().hex[:8]}"
        )
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(host, port)
        self.client.loop_start()
        assert self._subscribed.wait(5), "subscriber did not get SUBACK"

    def _on_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.messages.append(message)
            self._cond.notify_all()

    def wait_for(
        self, topic: str, timeout: float = 5.0, **fields: Any
    ) -> tuple[dict[str, Any], bool]:
        """The JSON body and retain flag of the first message on `topic` whose body has `fields`."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for m in self.messages:
                    if m.topic == topic:
                        body = json.loads(m.payload)
                        if all(body.get(k) == v for k, v in fields.items()):
                            return body, m.retain
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = [(m.topic, m.payload[:200]) for m in self.messages]
                    raise AssertionError(f"no message on {topic} with {fields}; got {seen}")
                self._cond.wait(remaining)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _catalog(site: str) -> Catalog:
    info = DeviceInfo(
        "pump1", "1号生活水泵", "pump", "water_supply", {"site": site, "device": "pump1"}
    )
    return Catalog(site, "测试小区", {"pump1": info})


def _sink(service: Any, site: str, client_id: str) -> MqttSink:
    config = MqttSinkConfig(host=service.host, port=service.port, gateway_id=client_id)
    return MqttSink(config, _catalog(site), client_id=client_id)


def _site() -> str:
    return f"t{uuid.uuid4().hex[:10]}"  # a topic tree of its own per test


async def test_birth_telemetry_and_retained_device_status(mosquitto) -> None:
    site = _site()
    sink = _sink(mosquitto, site, "gw-a")
    await sink.start()
    try:
        assert await sink.wait_connected(5)
        ts = 1_715_000_000.123
        await sink.send(
            [
                Record(
                    1,
                    "rec-1",
                    Kind.READING,
                    Batch(
                        "pump1",
                        ts,
                        ("p_out", "run", "mode", "flow"),
                        [0.42, True, "自动", None],
                        ["good", "good", "good", "comm_failure"],
                    ),
                ),
                Record(2, "rec-2", Kind.READING, Batch("pump1", ts + 5, ("p_out",), [0.43])),
                Record(
                    3,
                    "ev-3",
                    Kind.EVENT,
                    Event("device_status", ts, "pump1", {"online": False, "原因": "超时"}),
                ),
                Record(
                    4, "ev-4", Kind.EVENT, Event("alarm_raised", ts, "pump1", {"severity": "high"})
                ),
            ]
        )
        assert sink.published == 4
    finally:
        await sink.stop()

    # A subscriber arriving afterwards still gets what is retained: the last gateway state
    # (offline, from the clean stop) and the device status.
    late = Subscriber(mosquitto.host, mosquitto.port, f"pm/{site}/#")
    try:
        status, retained = late.wait_for(f"pm/{site}/gw-a/gateway/status")
        assert retained and status["state"] == "offline" and status["gateway"] == "gw-a"
        assert status["reason"] == "stopped"
        device_status, retained = late.wait_for(f"pm/{site}/gw-a/status/pump1")
        assert retained
        assert device_status == {
            "id": "ev-3",
            "seq": 3,
            "site": site,
            "gateway": "gw-a",
            "device": "pump1",
            "ts": "2024-05-06T12:53:20.123Z",
            "type": "device_status",
            "online": False,
            "原因": "超时",
        }
        time.sleep(0.2)
        assert not any("telemetry" in m.topic for m in late.messages), (
            "telemetry must not be retained"
        )
    finally:
        late.close()


async def test_subscriber_sees_birth_then_telemetry_in_order(mosquitto) -> None:
    site = _site()
    watcher = Subscriber(mosquitto.host, mosquitto.port, f"pm/{site}/#")
    sink = _sink(mosquitto, site, "gw-b")
    await sink.start()
    try:
        assert await sink.wait_connected(5)
        birth, _ = watcher.wait_for(f"pm/{site}/gw-b/gateway/status", state="online")
        assert birth["site"] == site and birth["gateway"] == "gw-b" and birth["client_id"] == "gw-b"
        assert birth["version"] == gateway.__version__ and birth["ts"].endswith("Z")
        await sink.send(
            [
                Record(
                    1,
                    "rec-1",
                    Kind.READING,
                    Batch(
                        "pump1",
                        1_715_000_000.0,
                        ("p", "q"),
                        [1.5, None],
                        ["good", "device_exception"],
                    ),
                )
            ]
        )
        telemetry, retained = watcher.wait_for(f"pm/{site}/gw-b/telemetry/pump1")
        assert not retained
        assert telemetry == {
            "id": "rec-1",
            "seq": 1,
            "site": site,
            "gateway": "gw-b",
            "device": "pump1",
            "ts": "2024-05-06T12:53:20.000Z",
            "values": {"p": 1.5},
            "quality": {"q": "device_exception"},
        }
        await sink.send(
            [Record(2, "rec-2", Kind.READING, Batch("pump1", 1_715_000_001.0, ("p",), [2]))]
        )
        body, _ = watcher.wait_for(f"pm/{site}/gw-b/telemetry/pump1", id="rec-2")
        assert "quality" not in body  # omitted when every point is good
        # the retained birth is there for anyone subscribing later
        late = Subscriber(mosquitto.host, mosquitto.port, f"pm/{site}/gw-b/gateway/status")
        try:
            birth, retained = late.wait_for(f"pm/{site}/gw-b/gateway/status")
            assert retained and birth["state"] == "online"
        finally:
            late.close()
    finally:
        await sink.stop()
        watcher.close()


_CHILD = """
import asyncio, sys
from gateway.catalog import Catalog
from gateway.config.models import MqttSinkConfig
from gateway.logs import configure
from gateway.sinks.mqtt import MqttSink

async def main():
    configure("warning", "json")  # logs to stderr; stdout carries only "ready"
    sink = MqttSink(MqttSinkConfig(host=sys.argv[1], port=int(sys.argv[2]), gateway_id="gw-killed"),
                    Catalog(sys.argv[3], "site", {}), client_id="gw-killed")
    await sink.start()
    if not await sink.wait_connected(10):
        sys.exit(3)
    print("ready", flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


async def test_killed_gateway_gets_its_last_will_delivered(mosquitto) -> None:
    site = _site()
    watcher = Subscriber(mosquitto.host, mosquitto.port, f"pm/{site}/gw-killed/gateway/status")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, mosquitto.host, str(mosquitto.port), site],
        stdout=subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(child.stdout.readline), 15)
        assert line.strip() == b"ready"
        watcher.wait_for(f"pm/{site}/gw-killed/gateway/status", state="online")
        child.send_signal(signal.SIGKILL)  # no DISCONNECT: only the will can tell
        child.wait(5)
        will, _ = watcher.wait_for(
            f"pm/{site}/gw-killed/gateway/status", timeout=5, state="offline"
        )
        assert will["site"] == site and will["gateway"] == "gw-killed"
        assert will["reason"] == "connection_lost" and "ts" not in will  # registered at connect
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(5)
        watcher.close()


async def test_broker_down_raises_then_reconnects_and_delivers(mosquitto) -> None:
    site = _site()
    sink = _sink(mosquitto, site, "gw-c")
    await sink.start()
    record = Record(1, "rec-outage", Kind.READING, Batch("pump1", 1_715_000_000.0, ("p",), [3.25]))
    try:
        assert await sink.wait_connected(5)
        mosquitto.stop()
        deadline = time.monotonic() + 5
        while sink.connected and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        with pytest.raises(SinkUnavailable):
            await sink.send([record])
        mosquitto.start()
        watcher = Subscriber(mosquitto.host, mosquitto.port, f"pm/{site}/#")
        try:
            assert await sink.wait_connected(15), "sink did not reconnect"
            await sink.send([record])  # what the runner does after SinkUnavailable
            body, _ = watcher.wait_for(f"pm/{site}/gw-c/telemetry/pump1", id="rec-outage")
            assert body["values"] == {"p": 3.25}
            watcher.wait_for(f"pm/{site}/gw-c/gateway/status", state="online")  # birth again
        finally:
            watcher.close()
    finally:
        await sink.stop()


async def test_start_with_broker_unreachable_does_not_raise_and_stop_is_prompt() -> None:
    sink = MqttSink(MqttSinkConfig(host="127.0.0.1", port=1), _catalog("s1"), client_id="gw-d")
    await sink.start()
    with pytest.raises(SinkUnavailable):
        await sink.send([Record(1, "x", Kind.READING, Batch("pump1", 0.0, ("p",), [1.0]))])
    started = time.monotonic()
    await sink.stop()
    assert time.monotonic() - started < 2.5


async def test_the_upstream_connection_carries_commands_in_and_replies_out(mosquitto):
    """Commands ride the gateway's one upstream connection: subscribed again after a
    reconnect, and replies are confirmed by the broker."""
    import paho.mqtt.client as mqtt
    import paho.mqtt.publish as publish

    from gateway.catalog import Catalog
    from gateway.config.models import MqttSinkConfig
    from gateway.sinks.mqtt import MqttSink

    sink = MqttSink(MqttSinkConfig(host="127.0.0.1", port=mosquitto.port),
                    Catalog("cmd-site", "cmd site", {}), client_id="cmd-gateway")
    received: list[tuple[str, bytes]] = []
    arrived = asyncio.Event()

    async def on_command(topic: str, payload: bytes) -> None:
        received.append((topic, payload))
        arrived.set()

    sink.subscribe("pm/cmd-site/cmd-gateway/commands/#", on_command)
    await sink.start()
    try:
        assert await sink.wait_connected(10)
        await asyncio.sleep(0.2)  # the SUBSCRIBE goes out right after CONNACK
        await asyncio.to_thread(
            publish.single, "pm/cmd-site/cmd-gateway/commands/write", b'{"id": "r1"}',
            qos=1, hostname="127.0.0.1", port=mosquitto.port,
        )
        await asyncio.wait_for(arrived.wait(), 10)
        assert received == [("pm/cmd-site/cmd-gateway/commands/write", b'{"id": "r1"}')]
        assert await sink.publish_now("pm/cmd-site/cmd-gateway/replies/r1", b'{"ok": true}')
        assert mqtt.topic_matches_sub("pm/+/+/commands/#", received[0][0])
    finally:
        await sink.stop()


async def test_a_record_that_cannot_be_encoded_is_skipped_not_retried_for_ever(mosquitto):
    """A batch with an absurd timestamp (a device clock gone mad) must not stall the link."""
    from gateway.batch import Batch, Kind, Record
    from gateway.catalog import Catalog
    from gateway.config.models import MqttSinkConfig
    from gateway.sinks.mqtt import MqttSink

    sink = MqttSink(MqttSinkConfig(host="127.0.0.1", port=mosquitto.port),
                    Catalog("skip-site", "skip", {}), client_id="skip-gateway")
    await sink.start()
    try:
        assert await sink.wait_connected(10)
        records = [
            Record(1, "e:1", Kind.READING, Batch("pump", 1e30, ("p",), [1.0])),
            Record(2, "e:2", Kind.READING, Batch("pump", 1_795_428_000.0, ("p",), [2.0])),
        ]
        await sink.send(records)  # returns: the good one confirmed, the bad one skipped
        assert (sink.skipped, sink.published) == (1, 1)
    finally:
        await sink.stop()
