"""An elevator IoT box (电梯物联网盒子): sensors fitted to a lift that has no data port.

Modelled on the monitoring boxes regulators ask estates to fit (floor from an
accelerometer and a leveling sensor, the door from a magnet, a person from infrared, the
car's alarm button wired in): a status report on `status` whenever floor, direction or
door changes and at least every STATUS_EVERY_S seconds, and a heartbeat on `heartbeat`.
Time is epoch milliseconds in `$.timestamp`, as most such boxes send it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

from gateway.config.models import Profile
from simsite.mqtt.equipment import Body, MqttEquipment

FLOORS = (-2, -1, *range(1, 19))  # B2 to 18F
FLOOR_S = 2.0  # 1.5 m/s past 3 m floors
DOOR_MOVE_S = 2.0
DOOR_OPEN_S = (3.0, 6.0)
IDLE_S = (2.0, 20.0)
STATUS_EVERY_S = 5.0
SPEED = 1.5  # m/s, rated
TRAPPED_CODE = 1  # 困人, as GB/T 24476-2017 numbers the fault events
FIRMWARE = "EB-4G V3.2.7"
_DOORS = {"opening": "opening", "open": "open", "closing": "closing"}


class ElevatorBox(MqttEquipment):
    """One car moving between floors on the wall clock; `lift_trapped` stops it between two."""

    EQUIPMENT_FAULTS = ("lift_trapped",)
    RETAINED = frozenset({"status"})

    def __init__(
        self, profile: Profile, rng: random.Random, *, heartbeat: float, clock: Callable[[], float] = time.time
    ) -> None:
        super().__init__(profile, rng, heartbeat=heartbeat, clock=clock)
        now = clock()
        self.booted = now - rng.uniform(3600, 30 * 86400)
        self.level = FLOORS.index(1)
        self.target = self.level
        self.phase = "idle"  # idle, running, opening, open, closing, stuck
        self.until = now + rng.uniform(*IDLE_S)
        self.direction = "stop"
        self.passengers = 0
        self.trapped = False
        self.button = False
        self.fault_code = 0
        self._call: int | None = None  # a landing call waiting for the car
        self._reported: tuple[Any, ...] | None = None
        self._reported_at = now

    @property
    def floor(self) -> int:
        return FLOORS[self.level]

    def timestamp(self, now: float) -> dict[str, Any]:
        return {"timestamp": int(now * 1000)}

    def react(self, now: float, dt: float) -> list[Body]:
        while self.phase != "stuck" and now >= self.until:
            self._next_phase(self.until)
        if self._state() != self._reported or now - self._reported_at >= STATUS_EVERY_S:
            return [self.snapshot(now)]
        return []

    def beat(self, now: float) -> list[Body]:
        return [("heartbeat", self.body(now, {
            "uptime": int(now - self.booted),
            "csq": self.rng.randint(16, 31),  # 4G signal quality, 0-31
            "fw": FIRMWARE,
        }))]

    def snapshot(self, now: float) -> Body:
        self._reported, self._reported_at = self._state(), now
        running = self.phase == "running"
        return "status", self.body(now, {
            "elevator": {
                "floor": self.floor,
                "display": f"B{-self.floor}" if self.floor < 0 else str(self.floor),
                "direction": self.direction,
                "running": running,
                "door": _DOORS.get(self.phase, "closed"),
                "leveling": self.phase != "stuck" and not running,  # in a door zone
                "speed": SPEED if running else 0.0,
                "load": min(100, self.passengers * 8),
                "mode": "fault" if self.fault_code else "normal",
            },
            "passenger": {"present": self.passengers > 0, "trapped": self.trapped},
            "alarm": {"button": self.button, "fault_code": self.fault_code},
        })

    def call(self, floor: int) -> None:
        """Someone presses the call button at `floor`: an idle car sets off at once."""
        self._call = FLOORS.index(floor)
        if self.phase == "idle":
            self.until = min(self.until, self.clock())

    def enter(self, kind: str, now: float) -> None:
        # the safety circuit opens mid-run: the car stops between floors, doors shut
        self.phase, self.direction = "stuck", "stop"
        self.passengers = max(1, self.passengers)
        self.trapped, self.button, self.fault_code = True, True, TRAPPED_CODE

    def leave(self, kind: str, now: float) -> None:
        # rescued: the car is wound to the nearest floor and the doors opened
        self.trapped, self.button, self.fault_code = False, False, 0
        self.target = self.level
        self.phase, self.until = "opening", now + DOOR_MOVE_S

    def _next_phase(self, at: float) -> None:
        if self.phase == "idle":
            self.target = self._call if self._call is not None else self.rng.choice(range(len(FLOORS)))
            self._call = None
            if self.target == self.level:  # called where it stands: it just opens its doors
                self.phase, self.until = "opening", at + DOOR_MOVE_S
                return
            self.direction = "up" if self.target > self.level else "down"
            self.phase, self.until = "running", at + FLOOR_S
        elif self.phase == "running":
            self.level += 1 if self.direction == "up" else -1
            if self.level == self.target:
                self.phase, self.direction, self.until = "opening", "stop", at + DOOR_MOVE_S
            else:
                self.until = at + FLOOR_S
        elif self.phase == "opening":
            self.phase, self.until = "open", at + self.rng.uniform(*DOOR_OPEN_S)
            self.passengers = self.rng.randint(0, 8)  # who gets off and on
        elif self.phase == "open":
            self.phase, self.until = "closing", at + DOOR_MOVE_S
        elif self.phase == "closing":
            self.phase, self.until = "idle", at + self.rng.uniform(*IDLE_S)
            if self.passengers == 0:
                self.until += self.rng.uniform(*IDLE_S)  # an empty car waits longer

    def _state(self) -> tuple[Any, ...]:
        return (self.floor, self.direction, self.phase, self.trapped, self.button, self.fault_code)
