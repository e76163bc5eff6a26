"""The benchmark's MQTT subscriber: counts telemetry per device, checks every value against
what the simulator serves, and times each reading from its `ts` to its arrival here.

Two dialects: `ours` (the upstream contract, docs/upstream.md: one message per batch on
pm/<site>/<gateway>/telemetry/<device>, `ts` the gateway's read time) and `tb` (ThingsBoard
IoT Gateway: v1/gateway/telemetry, `{"<device>": [{"ts": ms, "values": {...}}]}`, `ts` the
time its converter ran). For `tb` the subscriber also answers the gateway's
`getSessionLimits` RPC the way a ThingsBoard server would, or it publishes nothing.
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import paho.mqtt.client as mqtt

SESSION_LIMITS = {"maxPayloadSize": 65536, "maxInflightMessages": 100, "rateLimits": {},
                  "gatewayRateLimits": {}}


@dataclass(slots=True)
class Reading:
    """One device's readings of one poll, as it arrived."""

    arrival: float
    device: str
    ts: float
    points: int
    bad: int  # values that differ from what the simulator serves
    seq: int | None


@dataclass
class Message:
    arrival: float
    topic: str
    payload: dict | None
    retain: bool


def _iso(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


@dataclass
class Subscriber:
    host: str
    port: int
    dialect: str = "ours"  # or "tb"
    topics: tuple[str, ...] = ("pm/#",)
    # expected(device, key) -> the value the simulator serves now, or None: not checked
    expected: Callable[[str, str], float | None] | None = None
    client_id: str = "bench-subscriber"
    persistent: bool = False  # a persistent session (survives a broker restart with persistence)
    keep_other: bool = True  # keep non-telemetry messages (alarms, events, status)
    readings: list[Reading] = field(default_factory=list)
    others: list[Message] = field(default_factory=list)
    seen_ids: set[str] = field(default_factory=set)
    duplicates: int = 0
    rpc_answered: int = 0
    connected: threading.Event = field(default_factory=threading.Event)
    bad_examples: list[tuple[str, str, object, object]] = field(default_factory=list)

    def start(self, timeout: float = 10.0) -> Subscriber:
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id,
                                  clean_session=not self.persistent)
        self.client.max_inflight_messages_set(1000)
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.connect(self.host, self.port, keepalive=30)
        self.client.loop_start()
        if not self.connected.wait(timeout):
            raise RuntimeError(f"subscriber could not connect to {self.host}:{self.port}")
        time.sleep(0.2)  # the SUBACK
        return self

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()

    def _on_connect(self, client, userdata, flags, reason, properties) -> None:
        for topic in self.topics:
            client.subscribe(topic, qos=1)
        if self.dialect == "tb":
            client.subscribe("v1/devices/me/rpc/request/+", qos=1)
        self.connected.set()

    def _on_message(self, client, userdata, message) -> None:
        now = time.time()
        topic = message.topic
        try:
            payload = json.loads(message.payload) if message.payload else None
        except ValueError:
            payload = None
        if self.dialect == "tb":
            if topic.startswith("v1/devices/me/rpc/request/"):
                if isinstance(payload, dict) and payload.get("method") == "getSessionLimits":
                    request_id = topic.rsplit("/", 1)[1]
                    client.publish(f"v1/devices/me/rpc/response/{request_id}",
                                   json.dumps(SESSION_LIMITS), qos=1)
                    self.rpc_answered += 1
                return
            if topic == "v1/gateway/telemetry" and isinstance(payload, dict):
                for device, entries in payload.items():
                    for entry in entries if isinstance(entries, list) else [entries]:
                        values = entry.get("values", entry)
                        ts = entry.get("ts", now * 1000) / 1000
                        self._reading(now, device, ts, values, None)
                return
        elif "/telemetry/" in topic and isinstance(payload, dict):
            ident = payload.get("id")
            if ident is not None:
                if ident in self.seen_ids:
                    self.duplicates += 1
                    return
                self.seen_ids.add(ident)
            self._reading(now, payload["device"], _iso(payload["ts"]), payload.get("values", {}),
                          payload.get("seq"))
            return
        if self.keep_other:
            self.others.append(Message(now, topic, payload, bool(message.retain)))

    def _reading(self, arrival: float, device: str, ts: float, values: dict, seq: int | None) -> None:
        bad = 0
        if self.expected is not None:
            for key, got in values.items():
                want = self.expected(device, key)
                if want is not None and got != want:
                    bad += 1
                    if len(self.bad_examples) < 10:
                        self.bad_examples.append((device, key, got, want))
        self.readings.append(Reading(arrival, device, ts, len(values), bad, seq))

    # --- figures ----------------------------------------------------------------------

    def window(self, t0: float, t1: float) -> list[Reading]:
        """Readings that arrived within [t0, t1)."""
        return [r for r in list(self.readings) if t0 <= r.arrival < t1]

    def per_device(self, readings: list[Reading]) -> dict[str, list[Reading]]:
        out: dict[str, list[Reading]] = defaultdict(list)
        for r in readings:
            out[r.device].append(r)
        return out
