"""The MQTT driver against a real Mosquitto: devices publish, batches come out.

Each test gets its own topic namespace (a random base), so tests share the session's broker
without seeing each other's messages.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import structlog

from drivers.base import DriverError
from drivers.mqtt.driver import MqttDriver
from drivers.registry import DriverSet
from gateway.batch import Batch, Event, Quality
from gateway.config.models import Device, Profile, SiteConfig
from gateway.daemon import Gateway
from gateway.health import DeviceHealth
from gateway.poller import watch_forever

ACCESS = Profile.model_validate({
    "id": "access_controller",
    "name": "门禁控制器",
    "system": "access",
    "protocol": "mqtt",
    "points": {
        "door_state": {"topic": "door", "path": "$.state", "type": "integer",
                       "map": {"open": 1, "closed": 0}},
        "door_held_s": {"topic": "door", "path": "$.held.seconds", "max": 3600},
        "card_id": {"topic": "events/+", "path": "$.card", "type": "text", "sensitive": True},
        "granted": {"topic": "events/+", "path": "$.granted", "type": "bool"},
        "door_forced": {"topic": "alarm/forced", "type": "bool"},
        "barrier": {"topic": "barrier", "type": "text"},
        "temperature": {"topic": "env", "path": "$.t", "scale": 0.1, "unit": "°C"},
        "relay": {"topic": "relay", "type": "bool", "writable": True},
        "buzzer_s": {"topic": "buzzer", "type": "integer", "writable": True, "min": 0, "max": 60},
    },
})

BUTTON = Profile.model_validate({
    "id": "emergency_button",
    "name": "紧急呼叫按钮",
    "system": "access",
    "protocol": "mqtt",
    "points": {"pressed": {"topic": "#", "path": "$.pressed", "type": "bool"}},
})

CARD = "0012345678"


def device(device_id: str, profile: Profile, port: int, base: str, **connection: Any) -> Device:
    return Device.model_validate({
        "id": device_id,
        "profile": profile.id,
        "connection": {"type": "mqtt", "host": "127.0.0.1", "port": port, "base_topic": base,
                       **connection},
    })


class Publisher:
    """A separate paho client playing the devices."""

    def __init__(self, port: int) -> None:
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=f"device-{uuid.uuid4().hex[:8]}")
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    async def send(self, topic: str, payload: Any, *, retain: bool = False) -> None:
        if not isinstance(payload, bytes):
            payload = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        await asyncio.to_thread(info.wait_for_publish, 5)

    async def send_many(self, messages: list[tuple[str, Any]]) -> None:
        infos = [self.client.publish(t, json.dumps(p).encode(), qos=1) for t, p in messages]
        for info in infos:
            await asyncio.to_thread(info.wait_for_publish, 5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Subscriber:
    def __init__(self, port: int, topic: str) -> None:
        self.messages: list[mqtt.MQTTMessage] = []
        subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=f"platform-{uuid.uuid4().hex[:8]}")
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: subscribed.set()
        self.client.on_message = lambda c, u, m: self.messages.append(m)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert subscribed.wait(5), "subscriber did not get SUBACK"

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


async def until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Wait for `condition`; fail naming `what` if it never holds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(0.01)


@pytest.fixture
def base() -> str:
    return f"test/{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def publisher(mosquitto: Any) -> AsyncIterator[Publisher]:
    pub = Publisher(mosquitto.port)
    yield pub
    pub.close()


@pytest.fixture
def logs() -> Any:
    with structlog.testing.capture_logs() as captured:
        yield captured


async def started(driver: MqttDriver, batches: list[Batch]) -> MqttDriver:
    await driver.start(batches.append)
    assert await driver.wait_subscribed(10), "the broker did not acknowledge the subscriptions"
    return driver


def values(batch: Batch) -> dict[str, Any]:
    return {point: value for point, value, _q in batch.items()}


# --- southbound mapping ----------------------------------------------------------------


async def test_json_paths_plain_payloads_and_value_maps_become_one_batch_per_message(
    mosquitto: Any, publisher: Publisher, base: str
) -> None:
    batches: list[Batch] = []
    driver = await started(MqttDriver(device("door_1", ACCESS, mosquitto.port, base), ACCESS), batches)
    try:
        await publisher.send(f"{base}/door", {"state": "open", "held": {"seconds": 42}})
        await publisher.send(f"{base}/alarm/forced", "1")
        await publisher.send(f"{base}/barrier", "raised")
        await publisher.send(f"{base}/env", {"t": 215})
        await until(lambda: len(batches) == 4, "four batches")
    finally:
        await driver.stop()

    assert [values(b) for b in batches] == [
        {"door_state": 1, "door_held_s": 42.0},
        {"door_forced": True},
        {"barrier": "raised"},
        {"temperature": 21.5},
    ]
    assert all(b.quality is None and b.device == "door_1" for b in batches)
    assert driver.stats()["messages"] == 4 and driver.last_seen is not None


async def test_the_time_in_the_payload_is_the_batch_time(
    mosquitto: Any, publisher: Publisher, base: str
) -> None:
    batches: list[Batch] = []
    door = device("door_1", ACCESS, mosquitto.port, base, timestamp_path="$.ts")
    driver = await started(MqttDriver(door, ACCESS), batches)
    try:
        await publisher.send(f"{base}/door", {"state": "closed", "held": {"seconds": 0},
                                              "ts": "2024-05-01T08:00:00Z"})
        await publisher.send(f"{base}/door", {"state": "open", "held": {"seconds": 0},
                                              "ts": 1714550460000})
        await publisher.send(f"{base}/barrier", "lowered")  # no timestamp: arrival time
        await until(lambda: len(batches) == 3, "three batches")
    finally:
        await driver.stop()

    assert [b.ts for b in batches[:2]] == [1714550400.0, 1714550460.0]
    assert batches[2].ts == pytest.approx(driver.last_seen)


async def test_a_wildcard_topic_takes_every_matching_topic(
    mosquitto: Any, publisher: Publisher, base: str
) -> None:
    batches: list[Batch] = []
    door = MqttDriver(device("door_1", ACCESS, mosquitto.port, f"{base}/door-1"), ACCESS)
    button = MqttDriver(device("button_7", BUTTON, mosquitto.port, f"{base}/button-7"), BUTTON)
    await started(door, batches)
    await started(button, batches)
    try:
        await publisher.send(f"{base}/door-1/events/granted", {"card": CARD, "granted": True})
        await publisher.send(f"{base}/door-1/events/denied", {"card": "0099", "granted": False})
        await publisher.send(f"{base}/button-7/lobby/call", {"pressed": True})
        await publisher.send(f"{base}/door-2/events/granted", {"card": "1", "granted": True})
        await until(lambda: len(batches) == 3, "three batches")
    finally:
        await door.stop()
        await button.stop()

    # each stand-alone driver has its own client: order holds per device only
    assert [values(b) for b in batches if b.device == "door_1"] == [
        {"card_id": CARD, "granted": True},  # the batch keeps the real card id
        {"card_id": "0099", "granted": False},
    ]
    assert [values(b) for b in batches if b.device == "button_7"] == [{"pressed": True}]


async def test_a_value_outside_min_max_is_out_of_range_and_its_neighbours_still_arrive(
    mosquitto: Any, publisher: Publisher, base: str
) -> None:
    batches: list[Batch] = []
    driver = await started(MqttDriver(device("door_1", ACCESS, mosquitto.port, base), ACCESS), batches)
    try:
        await publisher.send(f"{base}/door", {"state": "open", "held": {"seconds": 99999}})
        await until(lambda: len(batches) == 1, "one batch")
    finally:
        await driver.stop()

    assert list(batches[0].items()) == [
        ("door_state", 1, Quality.GOOD), ("door_held_s", None, Quality.OUT_OF_RANGE),
    ]


# --- malformed payloads ------------------------------------------------------------------


async def test_malformed_and_oversized_payloads_are_counted_by_reason_and_logged_once(
    mosquitto: Any, publisher: Publisher, base: str, logs: list[dict[str, Any]]
) -> None:
    batches: list[Batch] = []
    door = device("door_1", ACCESS, mosquitto.port, base, max_payload=256)
    driver = await started(MqttDriver(door, ACCESS), batches)
    try:
        await publisher.send(f"{base}/door", b'{"state": "open"')  # cut short
        await publisher.send(f"{base}/door", {"state": "ajar", "held": {"seconds": 3}})
        await publisher.send(f"{base}/door", {"state": "open"})  # held.seconds missing
        await publisher.send(f"{base}/events/granted", {"card": CARD, "granted": "perhaps"})
        await publisher.send(f"{base}/env", {"t": "x" * 300})  # over max_payload
        await publisher.send(f"{base}/env", {"t": 200})  # a good one after all that
        await until(lambda: driver.stats()["received"] == 6, "six messages")
    finally:
        await driver.stop()

    assert driver.stats()["errors"] == {
        "bad_json": 1, "unmapped": 1, "missing_path": 1, "wrong_type": 1, "oversized": 1,
    }
    # every decodable point still arrived; the oversized message made no batch at all
    assert [list(b.items()) for b in batches] == [
        [("door_state", None, Quality.DECODE_ERROR), ("door_held_s", None, Quality.DECODE_ERROR)],
        [("door_state", None, Quality.DECODE_ERROR), ("door_held_s", 3.0, Quality.GOOD)],
        [("door_state", 1, Quality.GOOD), ("door_held_s", None, Quality.DECODE_ERROR)],
        [("card_id", CARD, Quality.GOOD), ("granted", None, Quality.DECODE_ERROR)],
        [("temperature", 20.0, Quality.GOOD)],
    ]
    malformed = [e for e in logs if e["event"] == "malformed mqtt payload"]
    assert len(malformed) == 1  # once per device per minute
    assert malformed[0]["device"] == "door_1"
    assert malformed[0]["topic"] == f"{base}/door"
    assert malformed[0]["reason"] == "bad_json"
    assert CARD not in json.dumps(logs, default=str)


async def test_a_sensitive_value_is_masked_in_the_log(
    mosquitto: Any, publisher: Publisher, base: str, logs: list[dict[str, Any]]
) -> None:
    profile = Profile.model_validate({
        "id": "card_reader", "name": "读卡器", "system": "access", "protocol": "mqtt",
        "points": {
            "card_no": {"topic": "card", "path": "$.card", "type": "integer", "sensitive": True},
        },
    })
    batches: list[Batch] = []
    driver = await started(MqttDriver(device("door_1", profile, mosquitto.port, base), profile),
                           batches)
    try:
        await publisher.send(f"{base}/card", {"card": "A012345678"})
        await until(lambda: len(batches) == 1, "one batch")
    finally:
        await driver.stop()

    (entry,) = [e for e in logs if e["event"] == "malformed mqtt payload"]
    assert entry["reason"] == "wrong_type" and entry["point"] == "card_no"
    assert "A012345678" not in json.dumps(logs, default=str)
    assert "****5678" in entry["detail"]


async def test_the_driver_subscribes_again_after_the_broker_restarts(
    mosquitto: Any, base: str
) -> None:
    batches: list[Batch] = []
    driver = await started(MqttDriver(device("button_7", BUTTON, mosquitto.port, base), BUTTON),
                           batches)
    try:
        mosquitto.stop()
        await until(lambda: not driver.broker.connected, "the disconnect")
        mosquitto.start()
        assert await driver.wait_subscribed(30), "not subscribed again after the restart"
        publisher = Publisher(mosquitto.port)
        try:
            await publisher.send(f"{base}/b", {"pressed": True})
            await until(lambda: len(batches) == 1, "a message after the restart")
        finally:
            publisher.close()
    finally:
        await driver.stop()

    assert values(batches[0]) == {"pressed": True}
    assert driver.broker.stats()["connects"] == 2


# --- floods ------------------------------------------------------------------------------


async def test_a_flood_from_one_device_is_throttled_while_its_neighbour_loses_nothing(
    mosquitto: Any, publisher: Publisher, base: str, logs: list[dict[str, Any]]
) -> None:
    drivers = DriverSet()
    noisy_batches: list[Batch] = []
    quiet_batches: list[Batch] = []
    noisy = drivers.create(device("noisy", BUTTON, mosquitto.port, f"{base}/noisy", max_rate=1),
                           BUTTON)
    quiet = drivers.create(device("quiet", BUTTON, mosquitto.port, f"{base}/quiet"), BUTTON)
    assert isinstance(noisy, MqttDriver) and isinstance(quiet, MqttDriver)
    assert noisy.broker is quiet.broker  # one client for the broker
    await started(noisy, noisy_batches)
    await started(quiet, quiet_batches)
    try:
        flood = [(f"{base}/noisy/b", {"pressed": i % 2 == 0}) for i in range(200)]
        calm = [(f"{base}/quiet/b", {"pressed": True}) for _ in range(20)]
        # the quiet device's messages are spread through the flood
        await publisher.send_many([m for pair in zip(flood[::10], calm, strict=True)
                                   for m in pair] + [m for i, m in enumerate(flood) if i % 10])
        await until(lambda: noisy.stats()["received"] == 200 and quiet.stats()["received"] == 20,
                    "every message routed")
    finally:
        await noisy.stop()
        await quiet.stop()
        await drivers.close()

    assert len(quiet_batches) == 20 and quiet.stats()["throttled"] == 0
    stats = noisy.stats()
    assert stats["throttled"] > 0
    assert stats["messages"] + stats["throttled"] == 200 == len(noisy_batches) + stats["throttled"]
    throttled_logs = [e for e in logs if e["event"].startswith("mqtt device publishes too fast")]
    assert [e["device"] for e in throttled_logs] == ["noisy"]
    assert not noisy.broker.connected  # DriverSet.close() closed the shared client


# --- silence -----------------------------------------------------------------------------


class RecordingPipeline:
    """What watch_forever emits, in order."""

    def __init__(self) -> None:
        self.batches: list[Batch] = []
        self.events: list[Event] = []

    def emit_batch(self, batch: Batch) -> None:
        self.batches.append(batch)

    def emit_event(self, event: Event) -> None:
        self.events.append(event)

    def states(self) -> list[bool | None]:
        return [e.body["online"] for e in self.events if e.type == "device_status"]


async def test_a_silent_device_goes_offline_once_and_comes_back_with_its_next_message(
    mosquitto: Any, publisher: Publisher, base: str
) -> None:
    pipeline = RecordingPipeline()
    button = device("button_7", BUTTON, mosquitto.port, base, silence="1s")
    driver = await started(MqttDriver(button, BUTTON), pipeline.batches)
    health = DeviceHealth("button_7")
    watch = asyncio.create_task(watch_forever(driver, pipeline, health, button.connection.silence))
    try:
        await publisher.send(f"{base}/b", {"pressed": False})
        await until(lambda: pipeline.states() == [True], "online")
        await until(lambda: pipeline.states() == [True, False], "offline after 1 s of silence")
        await asyncio.sleep(1.0)  # several more looks while it stays silent
        await publisher.send(f"{base}/b", {"pressed": True})
        await until(lambda: pipeline.states() == [True, False, True], "online again")
    finally:
        watch.cancel()
        await driver.stop()

    gaps = [b for b in pipeline.batches if b.quality_of(0) == Quality.COMM_FAILURE]
    assert len(gaps) == 1  # the gap is marked once, no value repeated
    assert gaps[0].points == ("pressed",) and gaps[0].values == [None]
    assert [values(b) for b in pipeline.batches] == [
        {"pressed": False}, {"pressed": None}, {"pressed": True},
    ]
    assert health.errors == {"comm_failure": 1}


async def test_a_retained_message_is_decoded_but_is_no_proof_of_life(
    mosquitto: Any, publisher: Publisher, base: str
) -> None:
    await publisher.send(f"{base}/b", {"pressed": True}, retain=True)
    batches: list[Batch] = []
    driver = await started(MqttDriver(device("button_7", BUTTON, mosquitto.port, base), BUTTON),
                           batches)
    try:
        await until(lambda: len(batches) == 1, "the retained message")
    finally:
        await driver.stop()
        await publisher.send(f"{base}/b", b"", retain=True)  # clear it

    assert values(batches[0]) == {"pressed": True}
    assert driver.last_seen is None


async def test_the_gateway_watches_an_mqtt_device_instead_of_polling_it(
    mosquitto: Any, publisher: Publisher, base: str, tmp_path: Any
) -> None:
    button = device("button_7", BUTTON, mosquitto.port, base, silence="2s")
    config = SiteConfig.model_validate({"site": {"id": "test-site", "name": "测试小区"}})
    config = config.model_copy(update={"profiles": {BUTTON.id: BUTTON}, "devices": [button]})
    gateway = Gateway(config, data_dir=tmp_path)
    await gateway.start()
    try:
        names = {task.get_name() for task in gateway._poll_tasks}
        assert "watch:button_7" in names and not any(n.startswith("poll:") for n in names)
        (driver,) = gateway.drivers
        assert isinstance(driver, MqttDriver) and await driver.wait_subscribed(10)
        await publisher.send(f"{base}/b", {"pressed": True})
        await until(lambda: gateway.health["button_7"].online is True, "online")
    finally:
        await gateway.stop()

    (value, quality, _ts) = gateway.pipeline.current()["button_7"]["pressed"]
    assert (value, quality) == (True, Quality.GOOD)


# --- writes ------------------------------------------------------------------------------


async def test_a_write_publishes_the_point_and_value_to_the_command_topic(
    mosquitto: Any, base: str
) -> None:
    platform = Subscriber(mosquitto.port, f"{base}/cmd")
    door = device("door_1", ACCESS, mosquitto.port, base, command_topic=f"{base}/cmd")
    driver = await started(MqttDriver(door, ACCESS), [])
    try:
        await driver.write("relay", True)
        await driver.write("buzzer_s", 30)
        with pytest.raises(DriverError) as not_writable:
            await driver.write("door_state", 1)
        with pytest.raises(DriverError) as out_of_range:
            await driver.write("buzzer_s", 61)
        with pytest.raises(DriverError) as wrong_type:
            await driver.write("relay", "yes")
        await until(lambda: len(platform.messages) == 2, "two commands")
    finally:
        await driver.stop()
        platform.close()

    bodies = [json.loads(m.payload) for m in platform.messages]
    assert [(b["point"], b["value"]) for b in bodies] == [("relay", True), ("buzzer_s", 30)]
    assert all(b["ts"].endswith("Z") for b in bodies)
    assert {e.value.quality for e in (not_writable, out_of_range, wrong_type)} == {"bad_request"}
    assert "not writable" in str(not_writable.value)
    assert "outside" in str(out_of_range.value)


async def test_a_write_without_a_broker_is_a_comm_failure(free_port: int, base: str) -> None:
    door = device("door_1", ACCESS, free_port, base, command_topic=f"{base}/cmd")
    driver = MqttDriver(door, ACCESS)
    await driver.start(lambda batch: None)  # nothing listens there: start must not raise
    try:
        with pytest.raises(DriverError) as caught:
            await driver.write("relay", True)
    finally:
        await driver.stop()
    assert caught.value.quality == Quality.COMM_FAILURE
