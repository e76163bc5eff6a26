"""What the gateway really publishes is what docs/asyncapi.yaml says: topics and payloads."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import uuid

import pytest
from upstream_tools import CHILD_GATEWAY, ROOT, Contract, Recorder

from gateway.batch import Batch, Event, Kind, Record
from gateway.catalog import Catalog
from gateway.config.models import MqttSinkConfig
from gateway.health import DeviceHealth
from gateway.sinks.contract import GZIP_MAGIC
from gateway.sinks.mqtt import MqttSink

pytestmark = pytest.mark.integration

EPOCH = "3fa2c1d0"


@pytest.fixture(scope="module")
def contract() -> Contract:
    return Contract()


def test_every_example_in_the_asyncapi_document_fits_its_schema(contract):
    for name, message in contract.doc["components"]["messages"].items():
        validator = contract.validator(message["payload"]["$ref"])
        examples = message.get("examples", [])
        assert examples or name == "telemetryGzip", f"{name} has no example"
        for example in examples:
            errors = [e.message for e in validator.iter_errors(example["payload"])]
            assert not errors, f"example {example['name']} of {name}: {errors}"
    # and the schemas do refuse: a telemetry message without its sequence number
    example = contract.message("#/components/messages/telemetry")["examples"][0]["payload"]
    broken = {k: v for k, v in example.items() if k != "seq"}
    assert not contract.validator("#/components/schemas/Telemetry").is_valid(broken)


def test_every_example_in_upstream_md_fits_the_message_it_is_marked_with(contract):
    text = (ROOT / "docs" / "upstream.md").read_text(encoding="utf-8")
    blocks = re.findall(r"<!-- message: (\w+) -->\s*```json\n(.*?)```", text, re.S)
    messages = contract.doc["components"]["messages"]
    assert {name for name, _ in blocks} >= set(messages) - {"telemetryGzip"}
    for name, block in blocks:
        errors = [
            e.message
            for e in contract.validator(messages[name]["payload"]["$ref"]).iter_errors(
                json.loads(block)
            )
        ]
        assert not errors, f"upstream.md example of {name}: {errors}"


def _catalog(site: str) -> Catalog:
    return Catalog(site, "契约小区", {})


async def test_birth_telemetry_device_status_events_and_stop_fit_the_contract(mosquitto, contract):
    site = f"c{uuid.uuid4().hex[:8]}"
    recorder = Recorder(mosquitto.host, mosquitto.port, f"pm/{site}/#")
    config = MqttSinkConfig(host=mosquitto.host, port=mosquitto.port, gateway_id="ipc-1")
    sink = MqttSink(config, _catalog(site), config_hash="sha256:" + "ab" * 32)
    health = DeviceHealth("pump1", offline_after=1)
    health.failed("comm_failure", "no response from 127.0.0.1:1502 unit 1")
    ts = 1_715_000_000.25
    records = [
        Record(1, f"{EPOCH}:1", Kind.READING, Batch(
            "pump1", ts, ("p_out", "run", "mode", "flow", "nan"),
            [0.42, True, "自动", None, float("nan")],
            ["good", "good", "good", "comm_failure", "good"],
        )),
        Record(2, f"{EPOCH}:2", Kind.EVENT, health.status_event(ts)),
        Record(3, f"{EPOCH}:3", Kind.EVENT, Event("door_forced", ts, "door1", {"door": "b1"})),
    ]
    await sink.start()
    try:
        assert await sink.wait_connected(10)
        await sink.send(records)
    finally:
        await sink.stop()
    messages = recorder.wait(
        lambda ms: len(ms) >= 5 and ms[-1].topic.endswith("/gateway/status"), 10, "five messages"
    )
    recorder.close()
    names = [contract.validate(m.topic, m.body) for m in messages]
    assert names == ["birth", "telemetry", "deviceStatus", "event", "offline"]
    topics = [m.topic.removeprefix(f"pm/{site}/ipc-1/") for m in messages]
    assert topics == [
        "gateway/status", "telemetry/pump1", "status/pump1", "events/door_forced", "gateway/status",
    ]
    birth, telemetry, status = (m.body for m in messages[:3])
    assert birth["config_hash"] == "sha256:" + "ab" * 32 and birth["uptime"] >= 0
    assert telemetry["seq"] == 1 and telemetry["id"] == f"{EPOCH}:1"
    assert telemetry["quality"] == {"flow": "comm_failure", "nan": "out_of_range"}
    assert status["online"] is False and status["errors"] == {"comm_failure": 1}


async def test_a_compressed_telemetry_message_is_gzip_of_the_same_json(mosquitto, contract):
    site = f"z{uuid.uuid4().hex[:8]}"
    recorder = Recorder(mosquitto.host, mosquitto.port, f"pm/{site}/+/telemetry/#")
    config = MqttSinkConfig(
        host=mosquitto.host, port=mosquitto.port, gateway_id="ipc-z", compression="gzip"
    )
    sink = MqttSink(config, _catalog(site))
    points = tuple(f"t{i}" for i in range(40))
    batch = Batch("ahu1", 1_715_000_000.0, points, [20.5 + i / 10 for i in range(40)])
    await sink.start()
    try:
        assert await sink.wait_connected(10)
        await sink.send([Record(7, f"{EPOCH}:7", Kind.READING, batch)])
    finally:
        await sink.stop()
    (message,) = recorder.wait(lambda ms: ms, 10, "the compressed telemetry")
    recorder.close()
    assert message.payload[:2] == GZIP_MAGIC
    assert contract.validate(message.topic, message.body) == "telemetry"
    plain = json.dumps(message.body, separators=(",", ":")).encode()
    assert len(message.payload) < len(plain)
    print(f"\ncompressed telemetry: {len(plain)} bytes of JSON sent as {len(message.payload)}")


async def test_the_last_will_fits_the_contract(mosquitto, contract):
    site = f"w{uuid.uuid4().hex[:8]}"
    recorder = Recorder(mosquitto.host, mosquitto.port, f"pm/{site}/+/gateway/status")
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD_GATEWAY, mosquitto.host, str(mosquitto.port), site,
         "ipc-w", "pump1"],
        stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT,
    )
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(child.stdout.readline), 20)
        assert line.strip() == b"ready"
        child.send_signal(signal.SIGKILL)
        child.wait(5)
        messages = recorder.wait(
            lambda ms: any(m.body["state"] == "offline" for m in ms), 15, "the last will"
        )
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(5)
        recorder.close()
    will = messages[-1]
    assert contract.validate(will.topic, will.body) == "offline"
    assert will.body["reason"] == "connection_lost"
