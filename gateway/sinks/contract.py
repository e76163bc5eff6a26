"""The upstream contract in code: topics and payloads as docs/upstream.md (version 1) and
docs/asyncapi.yaml describe them. A change here is a change of the contract: bump
`CONTRACT_VERSION` when a consumer would have to change, and update both documents.
"""

from __future__ import annotations

import gzip
import json
import math
import time
from dataclasses import dataclass
from typing import Any

from gateway.batch import Batch, Event, Quality, number_kinds

CONTRACT_VERSION = 1
GZIP_MAGIC = b"\x1f\x8b"  # a JSON text never starts with these bytes, so gzip is recognisable
_TOPIC_UNSAFE = str.maketrans({"+": "_", "#": "_", "/": "_", "\0": "_"})


_last_second: tuple[int, str] = (0, "1970-01-01T00:00:00")  # the polls of a round share it


def iso_utc(ts: float) -> str:
    """Seconds since the epoch → ISO-8601 UTC with milliseconds, e.g. 2024-05-01T08:00:00.123Z."""
    global _last_second
    seconds, millis = divmod(round(ts * 1000), 1000)
    second, text = _last_second
    if seconds != second:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        _last_second = (seconds, text)
    return f"{text}.{millis:03d}Z"


def segment(name: str) -> str:
    """A topic level made safe: wildcards and separators would change the topic's meaning."""
    return name.translate(_TOPIC_UNSAFE) or "_"


_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str).encode


def dumps(body: dict[str, Any]) -> bytes:
    return _encode(body).encode("utf-8")


def compress(payload: bytes) -> bytes:
    """gzip (RFC 1952) with no timestamp, so the same message compresses to the same bytes."""
    return gzip.compress(payload, compresslevel=6, mtime=0)


def decode(payload: bytes) -> Any:
    """What a consumer does with any payload: gunzip if it starts with 1f 8b, then JSON."""
    if payload[:2] == GZIP_MAGIC:
        payload = gzip.decompress(payload)
    return json.loads(payload)


@dataclass(frozen=True, slots=True)
class Topics:
    """Every topic of one gateway: `<prefix>/<site>/<gateway>/...`."""

    base: str

    @classmethod
    def of(cls, prefix: str, site: str, gateway: str) -> Topics:
        return cls(f"{prefix}/{segment(site)}/{segment(gateway)}")

    @property
    def gateway_status(self) -> str:
        return f"{self.base}/gateway/status"

    def telemetry(self, device: str) -> str:
        return f"{self.base}/telemetry/{segment(device)}"

    def device_status(self, device: str) -> str:
        return f"{self.base}/status/{segment(device)}"

    def event(self, kind: str) -> str:
        return f"{self.base}/events/{segment(kind)}"

    def alarm(self, alarm_id: str) -> str:
        """Retained: the current state of one alarm (cleared when it closes)."""
        return f"{self.base}/alarms/{segment(alarm_id)}"

    def ticket(self, ticket_id: str) -> str:
        """Retained: the current state of one ticket (cleared when it is closed or cancelled)."""
        return f"{self.base}/tickets/{segment(ticket_id)}"

    @property
    def commands(self) -> str:
        return f"{self.base}/commands"

    def reply(self, request_id: str) -> str:
        return f"{self.base}/replies/{segment(request_id)}"


@dataclass(frozen=True, slots=True)
class Identity:
    """Who publishes: put in every payload so a consumer of a shared subscription need not
    parse topics."""

    site: str
    gateway: str


def telemetry(identity: Identity, record_id: str, seq: int, batch: Batch) -> dict[str, Any]:
    """One batch: good values in `values`; a point that was not read well is in `quality`
    and has no value (a value is never repeated as if it were new)."""
    quality: dict[str, str] = {}
    if number_kinds(batch) is not None:  # the usual poll
        values = dict(zip(batch.points, batch.values, strict=True))
    else:
        values = _values(batch, quality)
    body: dict[str, Any] = {
        "id": record_id,
        "seq": seq,
        "site": identity.site,
        "gateway": identity.gateway,
        "device": batch.device,
        "ts": iso_utc(batch.ts),
        "values": values,
    }
    if quality:
        body["quality"] = quality
    return body


def _values(batch: Batch, quality: dict[str, str]) -> dict[str, Any]:
    """Good values by point; the others' quality into `quality`."""
    values: dict[str, Any] = {}
    for point, value, q in batch.items():
        if q != Quality.GOOD:
            quality[point] = str(q)
        elif isinstance(value, float) and not math.isfinite(value):
            quality[point] = str(Quality.OUT_OF_RANGE)  # JSON has no NaN or infinity
        else:
            values[point] = value
    return values


def event(identity: Identity, record_id: str, seq: int, item: Event) -> dict[str, Any]:
    """An event: the envelope, then the event's own fields (the envelope wins a clash)."""
    body: dict[str, Any] = {
        "id": record_id,
        "seq": seq,
        "site": identity.site,
        "gateway": identity.gateway,
        "device": item.device,
        "ts": iso_utc(item.ts),
        "type": item.type,
    }
    for key, value in item.body.items():
        body.setdefault(key, value)
    return body


# Event types whose latest message is the state of one thing, kept retained on a topic of
# its own: (the body field naming the thing, the topic for it). A subscriber reads the
# current set by subscribing; an empty retained payload removes a closed one from it.
RETAINED_STATES = {
    "alarm_state": ("alarm", Topics.alarm),
    "ticket_state": ("ticket", Topics.ticket),
}


def event_message(
    topics: Topics, identity: Identity, record_id: str, seq: int, item: Event
) -> tuple[str, bytes, bool]:
    """Topic, payload and retain flag of one event.

    `device_status` is retained on `status/<device>`; `alarm_state` and `ticket_state` on
    `alarms/<alarm>` and `tickets/<ticket>`, where a state with `"closed": true` becomes an
    empty retained payload: the broker then deletes the retained message, so a platform
    that subscribes later sees only what is still open. Everything else goes to
    `events/<type>`, not retained (history, not state).

    ValueError for a state that does not name what it is the state of: it cannot be
    placed, and guessing a topic would leave a wrong retained message behind.
    """
    if item.type == "device_status" and item.device:
        body = dumps(event(identity, record_id, seq, item))
        return topics.device_status(item.device), body, True
    retained = RETAINED_STATES.get(item.type)
    if retained is None:
        return topics.event(item.type), dumps(event(identity, record_id, seq, item)), False
    field, topic_of = retained
    name = item.body.get(field)
    if not isinstance(name, str) or not name:
        raise ValueError(f"{item.type} without a {field} id: {item.body!r:.200}")
    if item.body.get("closed") is True:
        return topic_of(topics, name), b"", True
    return topic_of(topics, name), dumps(event(identity, record_id, seq, item)), True


@dataclass(frozen=True, slots=True)
class GatewayInfo:
    """What the gateway status says about the running gateway."""

    client_id: str
    version: str
    started: float  # seconds since the epoch
    config_hash: str | None  # "sha256:<hex>" of the loaded config; None outside the daemon
    compression: str
    report_by_exception: bool


def gateway_status(
    identity: Identity, info: GatewayInfo, state: str, reason: str | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """Birth (`online`), the last will and a clean stop (`offline`, with the reason).

    The will is registered with the broker when the connection opens, so it carries no
    `ts`: the time it would say is not when the gateway went away.
    """
    body: dict[str, Any] = {
        "state": state,
        "contract": CONTRACT_VERSION,
        "site": identity.site,
        "gateway": identity.gateway,
        "client_id": info.client_id,
        "version": info.version,
        "started": iso_utc(info.started),
    }
    if reason is not None:
        body["reason"] = reason
    if state == "online":
        body["config_hash"] = info.config_hash
        body["compression"] = info.compression
        body["report_by_exception"] = info.report_by_exception
    if now is not None:
        if state == "online":
            body["uptime"] = round(max(0.0, now - info.started), 3)
        body["ts"] = iso_utc(now)
    return body
