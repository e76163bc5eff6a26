"""The upstream sink's paho client: a PUBACK confirms what paho's own handling confirms."""

from __future__ import annotations

import struct

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from gateway.paho_loop import LeanPubackClient


def _acked(client_class: type[mqtt.Client], protocol: int, packet: bytes, command: int = 0x40):
    """Publish three QoS 1 messages on a client with no connection (paho keeps them), feed it
    `packet` as a PUBACK for the second, and return what it reported."""
    client = client_class(CallbackAPIVersion.VERSION2, client_id="t", protocol=protocol)
    seen: list[tuple[int, bool]] = []
    client.on_publish = lambda c, u, mid, reason, props: seen.append((mid, reason.is_failure))
    infos = [client.publish("pm/s/gw/telemetry/d", b"{}", qos=1) for _ in range(3)]
    second = infos[1].mid
    client._in_packet["command"] = command
    client._in_packet["packet"] = bytearray(packet or struct.pack("!H", second))
    try:
        rc = client._packet_handle()
    except Exception as exc:  # a malformed packet: the same error either way
        rc = type(exc)
    return rc, seen, sorted(client._out_messages)


@pytest.mark.parametrize("packet", [b"", b"\x7f\x7f", b"\x00"])
@pytest.mark.parametrize("protocol", [mqtt.MQTTv311, mqtt.MQTTv5])
def test_a_puback_is_handled_as_paho_handles_it(protocol: int, packet: bytes) -> None:
    ours = _acked(LeanPubackClient, protocol, packet)
    pahos = _acked(mqtt.Client, protocol, packet)
    assert ours == pahos


def test_a_puback_confirms_exactly_its_message() -> None:
    rc, seen, waiting = _acked(LeanPubackClient, mqtt.MQTTv311, b"")
    assert rc == mqtt.MQTT_ERR_SUCCESS
    assert seen == [(2, False)] and waiting == [1, 3]
