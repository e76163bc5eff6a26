"""MQTT driver: devices that publish to a broker (access controllers, IoT boxes, call buttons).

`payload` compiles each point's JSON path, value map and conversion once and decodes a
message from one parse, `limits` holds the token bucket and the once-a-minute log gate,
`broker` shares one paho client per broker among the devices on it, and `driver` turns
each message into one batch. The device is never polled: `gateway.poller.watch_forever`
takes it offline when it falls silent.
"""

from drivers.mqtt.broker import Broker, BrokerKey, broker_key
from drivers.mqtt.driver import MqttDriver, TopicPlan, compile_topics, join_topic
from drivers.mqtt.payload import (
    Message,
    OutOfRange,
    PayloadError,
    PointDecoder,
    Timestamp,
    compile_point,
    mask,
    parse_timestamp,
)

__all__ = [
    "Broker",
    "BrokerKey",
    "Message",
    "MqttDriver",
    "OutOfRange",
    "PayloadError",
    "PointDecoder",
    "Timestamp",
    "TopicPlan",
    "broker_key",
    "compile_point",
    "compile_topics",
    "join_topic",
    "mask",
    "parse_timestamp",
]
