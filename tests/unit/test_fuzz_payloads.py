"""Fuzzed input from the outside: MQTT device payloads and upstream commands.

A device or a platform may send anything: bad JSON, the right keys with the wrong types,
huge or deeply nested bodies, bytes that are not UTF-8. Every message must come out as a
batch whose unreadable points are marked bad (never a made-up value) or as a refusal that
says why; nothing raises, and one device's garbage never touches another device.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from drivers.mqtt.driver import MqttDriver
from gateway.batch import Batch, Quality
from gateway.commands.models import MAX_PAYLOAD, MODELS, Rejected, parse_command
from gateway.config.loader import load_site
from gateway.config.models import SiteConfig

REPO = Path(__file__).resolve().parents[2]

JSON_LEAF = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20),
)
JSON_VALUE = st.recursive(
    JSON_LEAF,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@pytest.fixture(scope="module")
def site() -> SiteConfig:
    return load_site(REPO / "config" / "site.yaml")


def mqtt_drivers(site: SiteConfig) -> list[MqttDriver]:
    return [
        MqttDriver(device, site.profiles[device.profile])
        for device in site.devices
        if device.connection.type == "mqtt"
    ]


def json_like(driver: MqttDriver) -> st.SearchStrategy[bytes]:
    """Bodies shaped like the device's own: its JSON keys with values of any type."""
    keys = set()
    for point in driver.profile.points.values():
        path = getattr(point, "path", None) or ""
        keys.update(part for part in path.replace("$", "").replace("[", ".").split(".")
                    if part and not part.endswith("]"))
    keys.update(["ts", "time", "timestamp"])
    body = st.recursive(
        st.dictionaries(st.sampled_from(sorted(keys)), JSON_VALUE, max_size=6),
        lambda children: st.dictionaries(st.sampled_from(sorted(keys)), children, max_size=4),
        max_leaves=12,
    )
    return body.map(lambda b: json.dumps(b).encode())


PAYLOADS = st.one_of(
    st.binary(max_size=300),
    JSON_VALUE.map(lambda v: json.dumps(v).encode()),
    st.sampled_from([b"", b"{", b"null", b"[]", b'{"a":', b"\xff\xfe\x00", b"NaN", b"1e999",
                     b'{"value": NaN}', b'{"value": Infinity}', b"[" * 5000 + b"]" * 5000]),
)


def check_batch(driver: MqttDriver, batch: Batch) -> None:
    """A batch the rest of the gateway can trust: every point present, bad ones valueless."""
    assert batch.device == driver.device.id
    assert len(batch.values) == len(batch.points)
    assert math.isfinite(batch.ts)
    qualities = batch.quality or [Quality.GOOD] * len(batch.values)
    for value, quality in zip(batch.values, qualities, strict=True):
        if quality != Quality.GOOD:
            continue
        if isinstance(value, float):
            assert math.isfinite(value), "a good float must be a number"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_payload_becomes_a_batch_with_bad_points_marked_or_is_counted(
        site: SiteConfig, data: st.DataObject) -> None:
    drivers = mqtt_drivers(site)
    driver = data.draw(st.sampled_from(drivers))
    batches: list[Batch] = []
    driver._emit = batches.append  # what start() sets, without a broker
    plan = data.draw(st.sampled_from(driver.plans))
    topic = plan.filter.replace("+", data.draw(st.sampled_from(["x", "1", "门"]))).replace("#", "a/b")
    payload = data.draw(st.one_of(PAYLOADS, json_like(driver)))
    driver.receive(topic, payload, False, 1_790_000_000.0, 1.0)
    stats = driver.stats()
    assert stats["received"] == 1
    if batches:
        [batch] = batches
        check_batch(driver, batch)
        event("bad points marked" if batch.quality else "all points good")
    else:
        event("refused whole")


def test_one_device_garbage_never_reaches_another(site: SiteConfig) -> None:
    first, second, *_ = mqtt_drivers(site)
    got: dict[str, list[Batch]] = {first.device.id: [], second.device.id: []}
    first._emit = got[first.device.id].append
    second._emit = got[second.device.id].append
    first.receive(first.plans[0].filter.replace("+", "x").replace("#", "a"), b"\x00garbage", False,
                  1_790_000_000.0, 1.0)
    assert got[second.device.id] == []
    assert second.stats()["received"] == 0


# --- upstream commands ---------------------------------------------------------------

KNOWN_FIELDS = sorted({name for model in MODELS.values() for name in model.model_fields})


@st.composite
def command_like(draw: st.DrawFn) -> bytes:
    """A JSON object with a command type and its field names, holding values of any type."""
    body: dict[str, Any] = draw(st.dictionaries(st.sampled_from(KNOWN_FIELDS), JSON_VALUE,
                                                max_size=8))
    if draw(st.booleans()):
        body["type"] = draw(st.sampled_from(sorted(MODELS)))
    if draw(st.booleans()):
        body["id"] = draw(st.text(max_size=40))
    if draw(st.booleans()):
        body[draw(st.text(max_size=10))] = draw(JSON_VALUE)  # an unknown field
    return json.dumps(body).encode()


@settings(max_examples=500, deadline=None)
@given(payload=st.one_of(command_like(), PAYLOADS))
def test_any_command_payload_is_parsed_or_refused_with_a_reason(payload: bytes) -> None:
    parsed = parse_command(payload)
    if isinstance(parsed, Rejected):
        event("refused")
        assert parsed.reason.strip()
        assert len(parsed.reason) < 4_000, "a refusal quotes the payload, never all of it"
        if parsed.request_id is not None:
            assert parsed.request_id.strip()
            assert not any(c in parsed.request_id for c in "/+#"), "a reply topic must be safe"
    else:
        event(f"parsed {parsed.type}")
        assert parsed.type in MODELS


def test_a_huge_command_is_refused_without_being_parsed() -> None:
    payload = json.dumps({"id": "big", "type": "reload", "pad": "x" * (MAX_PAYLOAD + 10)}).encode()
    parsed = parse_command(payload)
    assert isinstance(parsed, Rejected)
    assert str(MAX_PAYLOAD) in parsed.reason or "large" in parsed.reason
