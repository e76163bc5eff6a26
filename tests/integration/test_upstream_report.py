"""Report by exception against a real broker: a changed point and a heartbeat go upstream,
an unchanged one does not; status events are never filtered."""

from __future__ import annotations

import uuid

import pytest
from upstream_tools import Recorder

from gateway.batch import Batch, Event, Kind, Record
from gateway.catalog import Catalog
from gateway.config.models import MqttSinkConfig, ReportPolicy
from gateway.sinks.mqtt import MqttSink

pytestmark = pytest.mark.integration


async def test_a_changed_point_and_a_heartbeat_are_sent_an_unchanged_one_is_not(mosquitto):
    site = f"rbe{uuid.uuid4().hex[:6]}"
    recorder = Recorder(mosquitto.host, mosquitto.port, f"pm/{site}/#")
    config = MqttSinkConfig(
        host=mosquitto.host, port=mosquitto.port, gateway_id="ipc-4g", report_by_exception=True,
        report=ReportPolicy(deadband=0.5, max_interval=60),
    )
    sink = MqttSink(config, Catalog(site, "4G site", {}))
    t0 = 1_715_000_000.0
    polls = [  # (seconds after t0, p, q)
        (0, 10.0, 1), (10, 10.2, 1), (20, 11.0, 1), (30, 11.0, 1), (60, 11.1, 1),
    ]
    records = [
        Record(n + 1, f"0abc:{n + 1}", Kind.READING, Batch("pump1", t0 + dt, ("p", "q"), [p, q]))
        for n, (dt, p, q) in enumerate(polls)
    ]
    records.append(Record(9, "0abc:9", Kind.EVENT, Event("device_status", t0, "pump1", {})))
    await sink.start()
    try:
        assert await sink.wait_connected(10)
        await sink.send(records)
    finally:
        await sink.stop()
    messages = recorder.wait(lambda ms: any("/status/" in m.topic for m in ms), 10, "the status")
    recorder.close()
    sent = [(m.body["seq"], m.body["values"]) for m in messages if "/telemetry/" in m.topic]
    assert sent == [
        (1, {"p": 10.0, "q": 1}),  # first sight
        (3, {"p": 11.0}),  # changed beyond the deadband; q unchanged
        (5, {"q": 1}),  # q's heartbeat (60 s); p moved 0.1 only, 40 s after it was sent
    ]
    assert sink.report is not None and sink.report.filtered == 6
