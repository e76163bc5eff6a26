"""One simulated MQTT device: its equipment and the paho client it publishes with.

It has the face of the Modbus `SimulatedDevice` (device, profile, model, host, port,
shown, refresh, start, stop, play, serving), so `SimulatedSite` runs both alike: the
site's tick calls `refresh`, which publishes whatever the equipment has to say by then.
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
from collections.abc import Sequence
from typing import Any
from zoneinfo import ZoneInfo

import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.client import topic_matches_sub

from drivers.mqtt import Message as Payload
from drivers.mqtt import OutOfRange, PayloadError, compile_topics
from gateway.config.models import Device, MqttConnection, Profile
from simsite.mqtt.access import AccessController
from simsite.mqtt.button import EmergencyButton
from simsite.mqtt.elevator import ElevatorBox
from simsite.mqtt.equipment import MqttEquipment
from simsite.mqtt.patrol import PatrolReader

log = structlog.get_logger(__name__)

# Equipment by profile id, then by the profile's system for a site's own copy of a profile.
BY_PROFILE: dict[str, type[MqttEquipment]] = {
    "access_controller": AccessController, "emergency_button": EmergencyButton,
    "elevator_iot_box": ElevatorBox, "patrol_reader": PatrolReader,
}
BY_SYSTEM: dict[str, type[MqttEquipment]] = {
    "access": AccessController, "emergency": EmergencyButton, "elevator": ElevatorBox,
    "patrol": PatrolReader,
}
HEARTBEATS_PER_SILENCE = 3  # the device files set silence to three missed heartbeats
CONNECT_TIMEOUT = 10.0  # seconds for the broker to accept the device
# A broker outage is survived the way a device survives it: paho reconnects, backing off.
RECONNECT_DELAY = (1, 8)


class SimulatedMqttDevice:
    """A device publishing to the broker its connection names; `published` counts messages."""

    # Beyond its equipment's and transport faults: stop_answering disconnects it from the broker.
    comm_faults = ("stop_answering",)

    def __init__(self, device: Device, profile: Profile, model: MqttEquipment) -> None:
        assert isinstance(device.connection, MqttConnection)
        self.device = device
        self.profile = profile
        self.model = model
        self.connection: MqttConnection = device.connection
        self.host = self.connection.host
        self.port = self.connection.port
        self.shown: dict[str, Any] = {}  # each point as the gateway decodes the latest publish
        self._plans = compile_topics(device, profile)  # the MQTT driver's own reading of the map
        self.published = 0
        self.mode: str | None = None
        self._client: mqtt.Client | None = None

    async def start(self) -> None:
        """Connect to the broker; RuntimeError when none accepts the device."""
        connected = threading.Event()
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"simsite-{self.device.id}-{os.getpid()}"
        )
        if self.connection.username:
            password = self.connection.password.reveal() if self.connection.password else None
            client.username_pw_set(self.connection.username, password)
        client.reconnect_delay_set(*RECONNECT_DELAY)
        client.on_connect = lambda _c, _u, _f, reason, _p: None if reason.is_failure else connected.set()
        client.connect_async(self.host, self.port, keepalive=30)
        client.loop_start()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CONNECT_TIMEOUT
        while not connected.is_set():
            if loop.time() > deadline:
                client.loop_stop()
                raise RuntimeError(f"{self.device.id}: no MQTT broker accepted it at {self.host}:{self.port}")
            await asyncio.sleep(0.02)
        self._client = client
        log.info("simulated MQTT device publishing", device=self.device.id,
                 broker=f"{self.host}:{self.port}", base_topic=self.connection.base_topic)
        self.refresh()

    async def stop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.disconnect()
            await asyncio.to_thread(client.loop_stop)

    def refresh(self) -> None:
        """Publish what the equipment has to say by now; nothing until connected."""
        if self._client is None:
            return
        base = self.connection.base_topic
        for message in self.model.due():
            topic = f"{base}/{message.topic}" if message.topic else base
            self._client.publish(topic, message.payload, qos=self.connection.qos, retain=message.retain)
            self.published += 1
            self._show(topic, message.payload)

    def _show(self, topic: str, raw: bytes) -> None:
        payload = Payload(raw)
        for plan in self._plans:
            if not topic_matches_sub(plan.filter, topic):
                continue
            for decoder in plan.decoders:
                try:
                    self.shown[decoder.name] = decoder.decode(payload)
                except (PayloadError, OutOfRange):
                    continue  # a malformed publish leaves the last good value shown

    def play(self, mode: str | None) -> None:
        """Kept for the site's sake: an MQTT device has no request-answer modes."""
        self.mode = mode

    @property
    def serving(self) -> bool:
        return self._client is not None


def make_mqtt_device(device: Device, profile: Profile, rng: random.Random, timezone: str, *,
                     cards: Sequence[str] = ()) -> SimulatedMqttDevice | None:
    """The simulated device for `device`, or None when the simulator knows no such equipment.

    `cards`: the patrol guards' cards (site.yaml `patrols:`), which patrol readers swipe."""
    kind = BY_PROFILE.get(profile.id) or BY_SYSTEM.get(profile.system)
    if kind is None:
        log.warning("no simulated MQTT equipment for this profile; the device is not played",
                    device=device.id, profile=profile.id,
                    known=", ".join(BY_PROFILE))
        return None
    heartbeat = device.connection.silence / HEARTBEATS_PER_SILENCE  # type: ignore[union-attr]
    extra: dict[str, Any] = {"zone": ZoneInfo(timezone)} if kind in (AccessController, PatrolReader) else {}
    if kind is PatrolReader:
        extra["cards"] = cards
    return SimulatedMqttDevice(device, profile, kind(profile, rng, heartbeat=heartbeat, **extra))
