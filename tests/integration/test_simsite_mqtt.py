"""Simulated MQTT equipment publishing to a real Mosquitto, and the demo's embedded broker.

The demo's access controller, emergency button and elevator IoT box (config/devices/
mqtt_devices.yaml) publish to the `mosquitto` fixture under a topic prefix of their own;
a plain paho subscriber collects what arrives and the MQTT driver's compiled profile
(`drivers.mqtt.compile_topics`) reads it, so a payload passes only if the gateway would
decode it. Each scenario is shown in the payloads. Silence is 1.5 s here, so heartbeats
come every half second; waits end on what arrives, never on elapsed time.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.client import topic_matches_sub

from drivers.mqtt import Message, compile_topics
from gateway.config.loader import load_site
from gateway.config.models import SiteConfig

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
from simsite import SimulatedSite  # noqa: E402
from simsite.mqtt.broker import EmbeddedBroker  # noqa: E402
from simsite.mqtt.elevator import FLOORS  # noqa: E402
from simsite.mqtt.equipment import FLOOD_RATE  # noqa: E402

pytestmark = pytest.mark.integration

SEED = 5
SILENCE = 1.5  # seconds; the simulator sends a heartbeat every third of it
GIVE_UP = 20.0  # seconds a wait may take before the test fails saying what never came
ACCESS, BUTTON, LIFT = "access_b1_gate", "sos_b3_1201", "lift_b2_1_box"


class Subscriber:
    """A paho client that keeps every message under `prefix` in arrival order."""

    def __init__(self, port: int, prefix: str) -> None:
        self.prefix = prefix
        self._lock = threading.Lock()
        self._messages: list[tuple[str, bytes]] = []
        self._subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-{uuid.uuid4().hex[:8]}")
        self.client.on_connect = lambda c, _u, _f, _r, _p: c.subscribe(f"{prefix}/#", qos=1)
        self.client.on_subscribe = lambda *_args: self._subscribed.set()
        self.client.on_message = self._keep
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _keep(self, _client: Any, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self._messages.append((message.topic, message.payload))

    async def ready(self) -> None:
        await until(self._subscribed.is_set, "the subscription to be granted")

    def messages(self, topic_filter: str = "#") -> list[tuple[str, bytes]]:
        with self._lock:
            return [(t, p) for t, p in self._messages if topic_matches_sub(topic_filter, t)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


async def until(check: Callable[[], Any], what: str) -> Any:
    """Wait until `check()` is truthy and return it; fail naming `what` if it never is."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + GIVE_UP
    while not (result := check()):
        if loop.time() > deadline:
            pytest.fail(f"never saw {what}")
        await asyncio.sleep(0.05)
    return result


def mqtt_site(port: int, prefix: str) -> SiteConfig:
    """The demo's MQTT devices on `port`, their base topics moved under `prefix`."""
    config = load_site(ROOT / "config" / "site.yaml")
    devices = []
    for device in config.devices:
        if device.connection.type != "mqtt":
            continue
        base = device.connection.base_topic.replace("estate/demo", prefix, 1)
        connection = device.connection.model_copy(update={"port": port, "silence": SILENCE, "base_topic": base})
        devices.append(device.model_copy(update={"connection": connection}))
    return config.model_copy(update={"devices": devices})


class Reader:
    """What the gateway reads from a device's publishes: the MQTT driver's compiled profile."""

    def __init__(self, config: SiteConfig, subscriber: Subscriber) -> None:
        self.devices = {d.id: d for d in config.devices}
        self.plans = {d.id: compile_topics(d, config.profiles[d.profile]) for d in config.devices}
        self.subscriber = subscriber

    def base(self, device_id: str) -> str:
        return self.devices[device_id].connection.base_topic

    def raw(self, device_id: str, topic: str = "#") -> list[tuple[str, bytes]]:
        return self.subscriber.messages(f"{self.base(device_id)}/{topic}")

    def values(self, device_id: str, topic: str) -> list[dict[str, Any]]:
        """Each well-formed message on `topic` of the device, decoded point by point; every
        point its topic carries must decode (a missing path or an unmapped text fails)."""
        decoded = []
        for full_topic, payload in self.raw(device_id, topic):
            message = Message(payload)
            try:
                message.document()
            except ValueError:
                continue  # malformed on purpose; see test_malformed_...
            values = {}
            for plan in self.plans[device_id]:
                if topic_matches_sub(plan.filter, full_topic):
                    values.update((d.name, d.decode(message)) for d in plan.decoders)
            decoded.append(values)
        return decoded

    def last(self, device_id: str, topic: str, **wanted: Any) -> Callable[[], dict[str, Any] | None]:
        """A check for `until`: the latest decoded message on `topic` if it holds `wanted`."""
        def check() -> dict[str, Any] | None:
            seen = self.values(device_id, topic)
            if seen and all(seen[-1].get(k) == v for k, v in wanted.items()):
                return seen[-1]
            return None
        return check


@pytest.fixture
async def site(mosquitto: Any) -> AsyncIterator[tuple[SimulatedSite, Reader]]:
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    config = mqtt_site(mosquitto.port, prefix)
    subscriber = Subscriber(mosquitto.port, prefix)
    await subscriber.ready()
    simulated = SimulatedSite(config, seed=SEED, tick=0.1)
    await simulated.start()
    yield simulated, Reader(config, subscriber)
    await simulated.stop()
    subscriber.close()


# --- every point of the three profiles --------------------------------------------


async def test_every_point_of_the_three_profiles_decodes_from_what_the_devices_publish(site):
    simulated, reader = site
    assert simulated.brokers == [], "Mosquitto listens there: nothing is embedded"
    await simulated.set_fault(ACCESS, "door_held")  # a granted swipe, then a wedged door
    await simulated.set_fault(BUTTON, "emergency_call")

    def all_points(device_id: str) -> Callable[[], bool]:
        profile = simulated.config.profiles[reader.devices[device_id].profile]
        return lambda: set().union(*reader.values(device_id, "#"), set()) >= set(profile.points)

    for device_id in (ACCESS, BUTTON, LIFT):
        await until(all_points(device_id), f"every point of {device_id}")

    card = reader.values(ACCESS, "events/card")[0]
    assert card["card_result"] == 1 and card["deny_reason"] == 0 and card["card_reader"] == 1
    assert len(card["card_no"]) == 8
    await simulated.stop()  # what the simulator shows is what arrived, once all has arrived
    for device_id in (ACCESS, BUTTON, LIFT):
        sent = simulated.devices[device_id].published  # type: ignore[attr-defined]
        await until(lambda d=device_id, n=sent: len(reader.raw(d)) == n, f"all {device_id} sent")
        merged: dict[str, Any] = {}
        for values in reader.values(device_id, "#"):
            merged.update(values)
        assert simulated.devices[device_id].shown == merged  # type: ignore[attr-defined]


async def test_payloads_carry_the_device_clock_in_the_format_its_profile_documents(site):
    simulated, reader = site
    await until(lambda: all(reader.raw(d) for d in (ACCESS, BUTTON, LIFT)), "a message from each device")
    access = json.loads(reader.raw(ACCESS)[0][1])
    assert datetime.fromisoformat(access["time"]).utcoffset() is not None  # ISO 8601 with +08:00
    button = json.loads(reader.raw(BUTTON)[0][1])
    lift = json.loads(reader.raw(LIFT)[0][1])
    assert isinstance(button["ts"], int) and isinstance(lift["timestamp"], int)
    assert lift["timestamp"] // 1000 - button["ts"] in (-1, 0, 1)  # milliseconds against seconds
    seqs = [json.loads(p)["seq"] for _t, p in reader.raw(LIFT)]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


# --- the access controller --------------------------------------------------------


async def test_door_forced_opens_the_door_with_the_lock_shut_and_latches_until_cleared(site):
    simulated, reader = site
    await simulated.set_fault(ACCESS, "door_forced")
    forced = await until(reader.last(ACCESS, "status", door_forced=True), "a forced door")
    assert forced["door_state"] == 1 and forced["lock_released"] is False
    await simulated.clear(ACCESS)
    await until(reader.last(ACCESS, "status", door_forced=False), "the alarm reset")


async def test_door_held_reports_held_open_once_the_door_passes_the_controllers_time(site):
    simulated, reader = site
    simulated.devices[ACCESS].model.held_after = 1.0  # the controller's setting, shortened
    await simulated.set_fault(ACCESS, "door_held")
    held = await until(reader.last(ACCESS, "status", door_held_open=True), "a held-open door")
    assert held["door_state"] == 1 and held["door_forced"] is False  # let in by a card
    assert held["door_open_time"] >= 1
    await simulated.clear(ACCESS)
    await until(reader.last(ACCESS, "status", door_state=0, door_held_open=False), "the door shut")


async def test_card_denied_burst_is_one_blacklisted_card_refused_again_and_again(site):
    simulated, reader = site
    await simulated.set_fault(ACCESS, "card_denied_burst")

    def denials() -> list[dict[str, Any]] | None:
        denied = [v for v in reader.values(ACCESS, "events/card") if v["card_result"] == 0]
        return denied if len(denied) >= 4 else None

    denied = await until(denials, "four denied swipes")
    assert {v["deny_reason"] for v in denied} == {4}  # 黑名单卡
    assert len({v["card_no"] for v in denied}) == 1
    assert {v["card_reader"] for v in denied} == {1}


# --- the emergency button ---------------------------------------------------------


async def test_emergency_call_is_pressed_pending_in_heartbeats_then_cleared(site):
    simulated, reader = site
    await until(reader.last(BUTTON, "heartbeat", sos_pending=False), "a quiet heartbeat")
    await simulated.set_fault(BUTTON, "emergency_call")
    pressed = await until(reader.last(BUTTON, "event", sos=True), "the press")
    assert pressed["press_count"] == 1
    await until(reader.last(BUTTON, "heartbeat", sos_pending=True), "a heartbeat with the alarm pending")
    await simulated.clear(BUTTON)
    await until(reader.last(BUTTON, "event", sos=False), "the button reset")
    await until(reader.last(BUTTON, "heartbeat", sos_pending=False), "a heartbeat with nothing pending")


# --- the elevator IoT box ---------------------------------------------------------


async def test_lift_trapped_stops_the_car_outside_a_landing_with_a_passenger_inside(site):
    simulated, reader = site
    await simulated.set_fault(LIFT, "lift_trapped")
    trapped = await until(reader.last(LIFT, "status", passengers_trapped=True), "trapped passengers")
    assert trapped["running"] is False and trapped["door_zone"] is False
    assert trapped["door_state"] == 0 and trapped["direction"] == 0
    assert trapped["alarm_button"] is True and trapped["passenger_present"] is True
    assert trapped["fault_code"] == 1 and trapped["mode"] == 3  # 困人, 故障
    profile = simulated.config.profiles["elevator_iot_box"]
    assert profile.points["fault_code"].enum[1].startswith("困人")
    await simulated.clear(LIFT)
    rescued = await until(reader.last(LIFT, "status", passengers_trapped=False), "the rescue")
    assert rescued["fault_code"] == 0 and rescued["door_state"] in (1, 2)  # doors opening at a landing


async def test_a_call_sends_the_car_up_reporting_each_floor_it_passes(site):
    simulated, reader = site
    lift = simulated.devices[LIFT].model
    await until(lambda: lift.phase == "idle", "the car idle")  # it starts idle at floor 1 or ends a trip
    start = lift.floor
    here = FLOORS.index(start)
    target = FLOORS[here + 2] if here + 2 < len(FLOORS) else FLOORS[here - 2]
    before = len(reader.values(LIFT, "status"))
    lift.call(target)
    arrived = await until(reader.last(LIFT, "status", floor=target, door_state=2), f"the car open at {target}")
    assert arrived["running"] is False and arrived["door_zone"] is True
    trip = [v for v in reader.values(LIFT, "status")[before:] if v["running"]]
    step = 1 if target > start else -1
    expected = [FLOORS[i] for i in range(FLOORS.index(start), FLOORS.index(target), step)]
    assert [v["floor"] for v in trip] == expected  # every floor it passes, once, in order
    assert all(v["direction"] == (1 if step > 0 else 2) and v["door_state"] == 0 for v in trip)
    assert all(v["door_zone"] is False and v["speed"] > 0 for v in trip)


# --- the firmware and radio faults, any device ---------------------------------------


async def test_device_silent_stops_one_device_while_the_others_go_on(site):
    simulated, reader = site
    silent = simulated.devices[BUTTON]
    await until(lambda: reader.raw(BUTTON), "the button's first heartbeat")
    await simulated.set_fault(BUTTON, "device_silent")
    sent = silent.published  # type: ignore[attr-defined]
    lift_beats = len(reader.raw(LIFT, "heartbeat"))
    await until(lambda: len(reader.raw(LIFT, "heartbeat")) >= lift_beats + 4, "four more lift heartbeats")
    await until(lambda: len(reader.raw(BUTTON)) == sent, "everything sent before the fault")
    assert silent.published == sent and len(reader.raw(BUTTON)) == sent  # type: ignore[attr-defined]
    await simulated.clear(BUTTON)
    await until(lambda: len(reader.raw(BUTTON)) > sent, "the button back")


async def test_malformed_sends_bad_payloads_now_and_then_between_good_ones(site):
    simulated, reader = site
    await until(lambda: reader.raw(LIFT), "the lift's first message")
    before = len(reader.raw(LIFT))
    await simulated.set_fault(LIFT, "malformed")

    def bad_and_good() -> tuple[list[bytes], list[bytes]] | None:
        after = [p for _t, p in reader.raw(LIFT)[before:]]
        bad = [p for p in after if not _is_json_object(p)]
        good = [p for p in after if _is_json_object(p)]
        return (bad, good) if len(bad) >= 3 and len(good) >= 3 else None

    bad, _good = await until(bad_and_good, "three bad and three good payloads")
    assert len({*bad}) >= 3  # cut short, single quotes, GBK text (then empty): not one kind
    await simulated.clear(LIFT)
    clean_from = len(reader.raw(LIFT))
    await until(lambda: len(reader.raw(LIFT)) >= clean_from + 4, "four more messages")
    assert all(_is_json_object(p) for _t, p in reader.raw(LIFT)[clean_from:])


async def test_flood_publishes_far_above_the_devices_rate_limit(site):
    simulated, reader = site
    lift = simulated.devices[LIFT]
    await until(lambda: reader.raw(LIFT), "the lift's first message")
    first_flood_seq = lift.model.seq + 1
    await simulated.set_fault(LIFT, "flood")

    def flooded() -> list[dict[str, Any]] | None:
        reports = [json.loads(p) for _t, p in reader.raw(LIFT, "status")]
        during = [r for r in reports if r["seq"] >= first_flood_seq]
        return during if len(during) >= 200 else None

    flood = await until(flooded, "two hundred flooded status reports")
    await simulated.clear(LIFT)
    # by the device's own clock: a second's worth of messages is many times its max_rate
    stamps = sorted(m["timestamp"] for m in flood)
    per_second = max(sum(1 for t in stamps if start <= t < start + 1000) for start in stamps)
    assert per_second > 2 * reader.devices[LIFT].connection.max_rate
    assert per_second <= FLOOD_RATE * 1.5


def _is_json_object(payload: bytes) -> bool:
    try:
        return isinstance(json.loads(payload), dict)
    except ValueError:
        return False


# --- the embedded broker ----------------------------------------------------------


async def test_the_embedded_broker_relays_a_publish_on_a_free_port(free_port: int):
    broker = EmbeddedBroker("127.0.0.1", free_port)
    await broker.start()
    try:
        subscriber = Subscriber(free_port, "estate")
        await subscriber.ready()
        publisher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-publisher")
        publisher.connect("127.0.0.1", free_port)
        publisher.loop_start()
        publisher.publish("estate/x/status", '{"door": {"state": "open"}}', qos=1)
        topic, payload = (await until(subscriber.messages, "the relayed publish"))[0]
        assert (topic, json.loads(payload)) == ("estate/x/status", {"door": {"state": "open"}})
        publisher.disconnect()
        publisher.loop_stop()
        subscriber.close()
    finally:
        await broker.stop()


async def test_the_demo_devices_get_an_embedded_broker_where_nothing_listens(free_port: int):
    config = load_site(ROOT / "config" / "site.yaml")
    demo = [d for d in config.devices if d.connection.type == "mqtt"]
    assert {d.connection.port for d in demo} == {18830} and len(demo) == 6  # access, SOS button, lift box; 3 patrol readers
    config = mqtt_site(free_port, "estate/demo")  # the demo's topics, on a port of our own
    simulated = SimulatedSite(config, seed=SEED, tick=0.1)
    await simulated.start()
    try:
        assert [(b.host, b.port) for b in simulated.brokers] == [("127.0.0.1", free_port)]
        subscriber = Subscriber(free_port, "estate")
        await subscriber.ready()
        reader = Reader(config, subscriber)
        for device in config.devices:
            await until(lambda d=device: reader.values(d.id, "#"), f"a decoded message from {device.id}")
        subscriber.close()
    finally:
        await simulated.stop()
    assert not simulated.brokers[0].running
