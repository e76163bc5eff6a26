"""Delivery upstream through the real outbox and runner: a broker outage loses nothing and
alarms go first; a backlog drains at backlog_rate while a new event still goes first."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
import services
from upstream_tools import Recorder

from gateway.batch import Batch, Event
from gateway.catalog import Catalog
from gateway.config.models import MqttSinkConfig
from gateway.outbox import Outbox
from gateway.sinks.mqtt import MqttSink
from gateway.sinks.runner import SinkRunner
from rules.alarms import Alarm, AlarmDefinition
from rules.engine.events import alarm_event, alarm_state

pytestmark = pytest.mark.integration

DEVICES = ("pump_1", "pump_2", "meter_1")
OUTAGE = 100_000  # point n of readings produced during the outage counts from here


async def _until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def _batch(device: str, n: int) -> Batch:
    return Batch(device, 1_715_000_000.0 + n, ("n", "p"), [n, 0.4 + n / 1000])


def _alarm_raised(phase: str, n: int, ts: float) -> list[Event]:
    """A real alarm raised: its `alarm_event` and its retained `alarm_state`, as the rule
    engine puts them in the outbox."""
    alarm = Alarm(AlarmDefinition(f"door_1.forced_open_{phase}_{n}", "door_1", "major",
                                  "门被强行打开 door forced open"))
    events = [alarm_event(e, "门被强行打开") for e in alarm.update(ts, True)]
    return [*events, alarm_state(alarm, "门被强行打开", ts)]


async def _produce(
    outbox: Outbox, phase: str, readings: int, events: int, first: int = 0
) -> None:
    """`readings` batches over the devices (point n counts from `first`) with `events`
    alarms raised among them (two messages each: the event and the retained state)."""
    every = max(1, readings // max(events, 1))
    produced_events = 0
    for n in range(readings):
        outbox.append_batch(_batch(DEVICES[n % len(DEVICES)], first + n))
        if n % every == 0 and produced_events < events:
            for event in _alarm_raised(phase, produced_events, 1_715_000_000.0 + n):
                outbox.append_event(event)
            produced_events += 1
        if n % 50 == 0:
            await asyncio.sleep(0)  # let group commits happen while we produce
    await outbox.flush()


def _alarm_of(body: dict) -> tuple[str, int] | None:
    """(phase, n) of an alarm message from `_alarm_raised`, else None."""
    alarm = body.get("alarm") or ""
    if not alarm.startswith("door_1.forced_open_"):
        return None
    phase, n = alarm.removeprefix("door_1.forced_open_").rsplit("_", 1)
    return phase, int(n)


@pytest.fixture
def persistent_broker(tmp_path):
    """A Mosquitto of its own that keeps sessions across stop() and start(), so the test's
    recorder misses nothing published while it reconnects after the restart."""
    broker = services.start_mosquitto(tmp_path / "mosquitto", persistence=True)
    try:
        yield broker
    finally:
        broker.stop()


async def test_a_broker_outage_loses_nothing_and_alarms_arrive_before_the_backlog(
    tmp_path, persistent_broker
):
    broker = persistent_broker
    site = f"out{uuid.uuid4().hex[:6]}"
    recorder = Recorder(broker.host, broker.port, f"pm/{site}/#", session=f"platform-{site}")
    outbox = Outbox(tmp_path / "outbox.db", flush_interval=0.05)
    await outbox.open()
    config = MqttSinkConfig(host=broker.host, port=broker.port, gateway_id="ipc-1", batch_size=200)
    sink = MqttSink(config, Catalog(site, "outage site", {}))
    runner = SinkRunner(sink, outbox)
    task = asyncio.create_task(runner.run())
    try:
        await _produce(outbox, "before", readings=30, events=3)
        await runner.drain(10)
        assert sink.connected

        broker.stop()
        await _until(lambda: not sink.connected, 10, "the sink to see the broker gone")
        await _produce(outbox, "outage", readings=900, events=30, first=OUTAGE)
        assert runner.status()["behind"] >= 960

        broker.start()  # same port; the recorder's session and subscription come back

        def outage_arrived() -> bool:
            ids = {m.body["id"] for m in recorder.messages if "/gateway/" not in m.topic}
            return len(ids) >= 36 + 960
        await _until(outage_arrived, 60, "every message produced during the outage")
        assert await runner.drain(10)
    finally:
        runner.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await sink.stop()
        await outbox.close()
        recorder.close()

    messages = [m for m in recorder.messages if "/gateway/" not in m.topic]
    bodies = [m.body for m in messages]
    unique = {b["id"]: b for b in bodies}
    outage_telemetry = [b for b in unique.values() if b.get("values", {}).get("n", 0) >= OUTAGE]
    outage_events = [b for b in unique.values() if (_alarm_of(b) or ("",))[0] == "outage"]
    print(
        f"\nbroker outage: produced 36 messages before it, and 900 telemetry batches and 30 "
        f"alarms (an alarm_event and a retained alarm_state each) while the broker was down; "
        f"the gateway had {sink.published} messages confirmed; received {len(bodies)} "
        f"({len(bodies) - len(unique)} duplicates), {len(unique)} distinct ids, of which "
        f"{len(outage_telemetry)} telemetry batches and {len(outage_events)} alarm messages "
        f"from the outage"
    )
    assert len(unique) == 36 + 960
    assert len(outage_telemetry) == 900 and len(outage_events) == 60
    assert sorted(_alarm_of(b)[1] for b in outage_events if b["type"] == "alarm_event") == list(range(30))
    states = [m for m in messages if "/alarms/" in m.topic and "_outage_" in m.topic]
    assert len({m.topic for m in states}) == 30 and all(m.body["state"] == "active_unacknowledged"
                                                          for m in states)

    # Alarms first: every outage alarm arrived before the first outage telemetry batch.
    first_seen = {}
    for index, body in enumerate(bodies):
        first_seen.setdefault(body["id"], index)
    last_event = max(first_seen[b["id"]] for b in outage_events)
    first_reading = min(first_seen[b["id"]] for b in outage_telemetry)
    assert last_event < first_reading

    # Readings in order per device.
    for device in DEVICES:
        seqs = [b["seq"] for b in bodies if b.get("device") == device and "values" in b]
        firsts = list(dict.fromkeys(seqs))
        assert firsts == sorted(firsts), f"{device} out of order"


async def test_a_backlog_drains_at_backlog_rate_and_a_new_event_overtakes_it(
    tmp_path, mosquitto
):
    site = f"drain{uuid.uuid4().hex[:6]}"
    recorder = Recorder(mosquitto.host, mosquitto.port, f"pm/{site}/#")
    outbox = Outbox(tmp_path / "outbox.db", flush_interval=0.05)
    await outbox.open()
    await _produce(outbox, "backlog", readings=600, events=0)  # an outage's worth, waiting
    rate = 200.0
    config = MqttSinkConfig(
        host=mosquitto.host, port=mosquitto.port, gateway_id="ipc-d", batch_size=100,
        backlog_rate=rate,
    )
    sink = MqttSink(config, Catalog(site, "drain site", {}))
    runner = SinkRunner(sink, outbox)
    started = time.monotonic()
    task = asyncio.create_task(runner.run())
    try:
        await _until(lambda: any("/telemetry/" in m.topic for m in recorder.messages), 20,
                     "the first telemetry of the backlog")
        outbox.append_event(Event("door_forced", time.time(), "door_1", {"phase": "drain"}))
        await _until(lambda: len(recorder.on("/telemetry/pump_1")) +
                     len(recorder.on("/telemetry/pump_2")) +
                     len(recorder.on("/telemetry/meter_1")) >= 600, 30, "the whole backlog")
        drained = time.monotonic() - started
        await _until(lambda: recorder.on("/events/door_forced"), 10, "the event")
    finally:
        runner.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await sink.stop()
        await outbox.close()
        recorder.close()

    topics = [m.topic for m in recorder.messages]
    event_at = next(i for i, t in enumerate(topics) if t.endswith("/events/door_forced"))
    telemetry_at = [i for i, t in enumerate(topics) if "/telemetry/" in t]
    behind_event = sum(1 for i in telemetry_at if i > event_at)
    print(f"\nbacklog of 600 drained in {drained:.2f} s at backlog_rate {rate:g}/s; "
          f"the event raised during the drain overtook {behind_event} readings")
    # Pacing can only slow the drain: while more than one batch (100) waited it was paced.
    assert drained >= (600 - 100 - sink.max_batch) / rate
    assert behind_event > 0  # it did not wait for the end of the backlog
