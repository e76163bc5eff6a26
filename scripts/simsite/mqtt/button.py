"""An emergency-call button (紧急呼叫按钮) in the flat of an elderly resident living alone.

Modelled on the NB-IoT and LoRa SOS buttons estates hand out: a press sends an alarm on
`event` and repeats it until someone resets the button on site, which sends `cleared`;
the heartbeat on `heartbeat` carries the battery, the signal and whether an alarm is still
pending, so a platform that missed the event still learns of it. Time is epoch seconds
in `$.ts`.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

from gateway.config.models import Profile
from simsite.mqtt.equipment import Body, MqttEquipment

RESEND_S = 10.0  # a pressed button repeats its alarm this often until reset
DRAIN_PER_DAY = 0.3  # battery percent; a CR123A lasts about a year of heartbeats
FIRMWARE = "SOS-NB V2.3.1"


class EmergencyButton(MqttEquipment):
    """A wall or pendant button; `emergency_call` is the resident pressing it."""

    EQUIPMENT_FAULTS = ("emergency_call",)
    RETAINED = frozenset({"heartbeat"})

    def __init__(
        self, profile: Profile, rng: random.Random, *, heartbeat: float, clock: Callable[[], float] = time.time
    ) -> None:
        super().__init__(profile, rng, heartbeat=heartbeat, clock=clock)
        self.battery = rng.uniform(62.0, 97.0)
        self.rssi = rng.uniform(-95.0, -70.0)  # where the flat is: a basement flat is worse
        self.pressed = False
        self.presses = 0
        self._next_resend = 0.0

    def timestamp(self, now: float) -> dict[str, Any]:
        return {"ts": int(now)}

    def react(self, now: float, dt: float) -> list[Body]:
        self.battery = max(0.0, self.battery - DRAIN_PER_DAY * dt / 86400)
        if self.pressed and now >= self._next_resend:
            self._next_resend = now + RESEND_S
            return [self._event(now, "pressed")]
        return []

    def snapshot(self, now: float) -> Body:
        voltage = 2.5 + 0.5 * self.battery / 100 + self.rng.gauss(0, 0.01)  # a 3 V lithium cell
        return "heartbeat", self.body(now, {
            "battery": {"percent": round(self.battery), "voltage": round(voltage, 2)},
            "rssi": round(self.rssi + self.rng.gauss(0, 3)),
            "alarm": int(self.pressed),
            "fw": FIRMWARE,
        })

    def enter(self, kind: str, now: float) -> None:
        self.pressed = True
        self.presses += 1
        self._next_resend = now  # the alarm goes out at once

    def leave(self, kind: str, now: float) -> None:
        self.pressed = False
        self.queue(self._event(now, "cleared"))

    def _event(self, now: float, state: str) -> Body:
        return "event", self.body(now, {"type": "sos", "state": state, "press_count": self.presses})
