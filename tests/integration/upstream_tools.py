"""Helpers for the upstream tests: a raw recorder on the broker, the AsyncAPI document as a
validator, and a gateway sink in a child process that a test can SIGKILL."""

from __future__ import annotations

import re
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import paho.mqtt.client as mqtt
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from gateway.sinks.contract import decode

ROOT = Path(__file__).resolve().parents[2]
ASYNCAPI = ROOT / "docs" / "asyncapi.yaml"
_DOC_URI = "urn:site-gateway:asyncapi"


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    payload: bytes
    retain: bool

    @property
    def body(self) -> Any:
        return decode(self.payload)


class Recorder:
    """A separate paho client that keeps every message (raw bytes) under a topic filter.

    `session` names a persistent session (clean_session=False): with a broker that keeps
    sessions across a restart, nothing published while this client reconnects is missed.
    """

    def __init__(
        self, host: str, port: int, topic: str, *, session: str | None = None,
        tls_context: Any = None,
    ) -> None:
        self.messages: list[Message] = []
        self._cond = threading.Condition()
        subscribed = threading.Event()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=session or f"rec-{uuid.uuid4().hex[:8]}",
            clean_session=session is None,
        )
        if tls_context is not None:
            self.client.tls_set_context(tls_context)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: subscribed.set()
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(min_delay=0.2, max_delay=1)
        self.client.connect(host, port)
        self.client.loop_start()
        assert subscribed.wait(10), "recorder did not get SUBACK"

    def _on_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.messages.append(Message(message.topic, bytes(message.payload), message.retain))
            self._cond.notify_all()

    def wait(self, predicate, timeout: float, what: str) -> list[Message]:
        """Wait until `predicate(messages)` is true; the messages so far."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self.messages):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = [(m.topic, m.payload[:120]) for m in self.messages[-10:]]
                    raise AssertionError(f"timed out waiting for {what}; last seen {seen}")
                self._cond.wait(remaining)
            return list(self.messages)

    def on(self, suffix: str) -> list[Message]:
        with self._cond:
            return [m for m in self.messages if m.topic.endswith(suffix)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Contract:
    """docs/asyncapi.yaml as a validator: which channel a topic is on, and its payload schemas."""

    def __init__(self, path: Path = ASYNCAPI) -> None:
        self.doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        resource = Resource.from_contents(self.doc, default_specification=DRAFT7)
        self.registry = Registry().with_resource(_DOC_URI, resource)
        self._channels = [
            (name, re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", channel["address"]) + "$"))
            for name, channel in self.doc["channels"].items()
        ]

    def channel_of(self, topic: str) -> str:
        matches = [name for name, pattern in self._channels if pattern.match(topic)]
        assert len(matches) == 1, f"{topic} matches channels {matches} of the contract"
        return matches[0]

    def message(self, ref: str) -> dict[str, Any]:
        node: Any = self.doc
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]
        return node

    def messages_of(self, channel: str) -> dict[str, dict[str, Any]]:
        return {
            name: self.message(entry["$ref"])
            for name, entry in self.doc["channels"][channel]["messages"].items()
        }

    def validator(self, payload_ref: str) -> jsonschema.Draft7Validator:
        return jsonschema.Draft7Validator(
            {"$ref": f"{_DOC_URI}{payload_ref}"}, registry=self.registry,
            format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER,
        )

    def validate(self, topic: str, body: Any) -> str:
        """The message name `body` is valid as on `topic`; AssertionError with every reason if none."""
        errors: dict[str, list[str]] = {}
        for name, message in self.messages_of(self.channel_of(topic)).items():
            found = [e.message for e in self.validator(message["payload"]["$ref"]).iter_errors(body)]
            if not found:
                return name
            errors[name] = found
        raise AssertionError(f"{topic}: {body} fits no message of the contract: {errors}")


CHILD_GATEWAY = """
import asyncio, sys
from gateway.batch import Batch, Kind, Record
from gateway.catalog import Catalog
from gateway.config.models import MqttSinkConfig
from gateway.logs import configure
from gateway.sinks.mqtt import MqttSink

async def main():
    host, port, site, gateway, device = sys.argv[1:6]
    configure("warning", "json")  # logs to stderr; stdout carries only "ready"
    sink = MqttSink(MqttSinkConfig(host=host, port=int(port), gateway_id=gateway),
                    Catalog(site, "site", {}))
    await sink.start()
    if not await sink.wait_connected(10):
        sys.exit(3)
    batch = Batch(device, 1_715_000_000.0, ("p",), [1.0])
    await sink.send([Record(1, f"{gateway}:1", Kind.READING, batch)])
    print("ready", flush=True)
    await asyncio.sleep(120)

asyncio.run(main())
"""
