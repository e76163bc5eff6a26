"""Commands subscribed while the CONNACK is being handled are not lost."""

from __future__ import annotations

from gateway.catalog import Catalog
from gateway.config.models import MqttSinkConfig
from gateway.sinks.mqtt import MqttSink


class RecordingClient:
    def __init__(self) -> None:
        self.subscribed: list[tuple[str, int]] = []

    def subscribe(self, topic: str, qos: int) -> None:
        self.subscribed.append((topic, qos))


async def test_a_subscription_made_before_the_connection_is_marked_up_is_sent_once_it_is():
    sink = MqttSink(MqttSinkConfig(host="127.0.0.1"), Catalog("s", "s", {}), client_id="c")
    client = RecordingClient()
    sink._client = client  # connected at the broker, CONNACK not yet handled on the loop
    sink.subscribe("pm/s/gw/commands", lambda topic, payload: None)
    assert client.subscribed == []  # not connected yet: nothing sent, nothing lost
    sink._set_connected()
    assert client.subscribed == [("pm/s/gw/commands", 1)]
