"""Alarms and tickets on a real Mosquitto, through the real outbox, runner and MQTT sink:
the newest state of an alarm is retained on alarms/<id>, a closed alarm's retained message
is deleted by an empty payload, and a ticket's state is retained on tickets/<id>.

Whether a new subscriber got every retained message is decided without waiting on a
clock: after subscribing it publishes a marker under the same filter, and the broker
queues retained messages at SUBSCRIBE, before anything published after it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from upstream_tools import Contract, Message, Recorder

from gateway.batch import Event
from gateway.catalog import Catalog
from gateway.config.models import MqttSinkConfig
from gateway.outbox import Outbox
from gateway.sinks.mqtt import MqttSink
from gateway.sinks.runner import SinkRunner
from rules.alarms import Alarm, AlarmDefinition
from rules.engine import events
from rules.tickets import TicketBook, TicketRequest

pytestmark = pytest.mark.integration

GATEWAY = "ipc-a"
ALARM = "pump_b1_1.low_outlet_pressure"
T0 = 1_795_428_000.0


@dataclass
class Link:
    """The gateway side: an outbox drained to the broker by a runner and an MQTT sink."""

    outbox: Outbox
    runner: SinkRunner
    site: str

    async def send(self, items: list[Event]) -> None:
        """Append in order and wait until the broker confirmed all of it."""
        for item in items:
            self.outbox.append_event(item)
        await self.outbox.flush()
        assert await self.runner.drain(10), self.runner.status()

    @property
    def base(self) -> str:
        return f"pm/{self.site}/{GATEWAY}"


@pytest.fixture
async def link(tmp_path, mosquitto) -> AsyncIterator[Link]:
    site = f"al{uuid.uuid4().hex[:8]}"
    outbox = Outbox(tmp_path / "outbox.db", flush_interval=0.05)
    await outbox.open()
    config = MqttSinkConfig(host=mosquitto.host, port=mosquitto.port, gateway_id=GATEWAY)
    sink = MqttSink(config, Catalog(site, "告警小区", {}))
    runner = SinkRunner(sink, outbox)
    task = asyncio.create_task(runner.run())
    try:
        yield Link(outbox, runner, site)
    finally:
        runner.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await sink.stop()
        await outbox.close()


def _retained(mosquitto, link: Link) -> list[Message]:
    """What a platform that subscribes now to alarms/+ and tickets/+ is given."""
    recorder = Recorder(mosquitto.host, mosquitto.port, f"{link.base}/#")
    try:
        marker = f"{link.base}/test/marker"
        recorder.client.publish(marker, b"end of retained", qos=1)
        messages = recorder.wait(lambda ms: any(m.topic == marker for m in ms), 10, "the marker")
    finally:
        recorder.close()
    return [m for m in messages if "/alarms/" in m.topic or "/tickets/" in m.topic]


def _alarm() -> Alarm:
    return Alarm(AlarmDefinition(ALARM, "pump_b1_1", "major", "出水压力低 {outlet_pressure:.2f} MPa",
                                 chatter_limit=None))


def _alarm_items(alarm: Alarm, happened: list, now: float) -> list[Event]:
    """What the engine emits for a change: the transitions, then the state they left."""
    return [events.alarm_event(e, "出水压力低") for e in happened] + [
        events.alarm_state(alarm, "出水压力低", now)]


async def test_an_alarm_is_retained_while_open_and_deleted_when_it_closes(
    mosquitto, link: Link
) -> None:
    contract = Contract()
    topic = f"{link.base}/alarms/{ALARM}"
    live = Recorder(mosquitto.host, mosquitto.port, f"{link.base}/#")
    try:
        alarm = _alarm()
        raised = _alarm_items(alarm, alarm.update(T0, True, {"outlet_pressure": 0.12}), T0)
        acked = _alarm_items(alarm, alarm.acknowledge(T0 + 30, "监控中心 刘工", "已派人"), T0 + 30)
        await link.send(raised + acked)

        (state,) = _retained(mosquitto, link)
        assert (state.topic, state.retain) == (topic, True)
        assert contract.validate(state.topic, state.body) == "alarmState"
        assert state.body["state"] == "active_acknowledged"  # the newest, never the raise's
        assert state.body["acknowledged_by"] == "监控中心 刘工"

        cleared = _alarm_items(alarm, alarm.update(T0 + 90, False), T0 + 90)
        assert cleared[-1].body["closed"] is True
        await link.send(cleared)

        assert _retained(mosquitto, link) == []  # a platform that comes now sees no alarm
        on_topic = live.wait(lambda ms: sum(m.topic == topic for m in ms) >= 3, 10,
                             "three messages on the alarm's topic")
    finally:
        live.close()
    # a platform that was listening saw both states, then the empty payload that closed it
    states = [m.payload and m.body["state"] for m in on_topic if m.topic == topic]
    assert states == ["active_unacknowledged", "active_acknowledged", b""]
    history = [m.body["transition"] for m in on_topic if m.topic.endswith("/events/alarm_event")]
    assert history == ["raised", "acknowledged", "cleared"]
    for message in on_topic:
        if message.payload and "/test/" not in message.topic:  # not the markers
            contract.validate(message.topic, message.body)


async def test_a_ticket_state_is_retained_until_the_ticket_is_cancelled(
    mosquitto, link: Link
) -> None:
    contract = Contract()
    book = TicketBook()
    ticket, opened = book.open(
        TicketRequest("pump_b1_1", "low_outlet_pressure", category="water",
                      title="1号生活水泵出水压力低"), T0)
    dispatched = book.dispatch(ticket.id, T0 + 60, "调度-王", owner="李工", backup="赵工")
    items = [events.ticket_event(e) for e in opened + dispatched]
    await link.send([*items, events.ticket_state(ticket, T0 + 60)])

    (state,) = _retained(mosquitto, link)
    assert (state.topic, state.retain) == (f"{link.base}/tickets/{ticket.id}", True)
    assert contract.validate(state.topic, state.body) == "ticketState"
    assert (state.body["state"], state.body["owner"], state.body["due"]) == (
        "dispatched", "李工", "2026-11-23T10:15:00.000Z")

    cancelled = book.cancel(ticket.id, T0 + 120, "调度-王", "误报")
    await link.send([events.ticket_event(e) for e in cancelled]
                    + [events.ticket_state(ticket, T0 + 120)])
    assert _retained(mosquitto, link) == []
