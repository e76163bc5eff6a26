"""A passenger lift in an 18-storey residential building, seen through its controller."""

from __future__ import annotations

import math
import random

from gateway.config.models import Profile
from simsite.models.base import Model, SimTime, bump, chance

FLOORS = [-1, *range(1, 19)]  # B1, then 1 to 18: there is no floor 0
LOBBY = FLOORS.index(1)
STOREY = 3.0  # m
RATED_SPEED = 1.75  # m/s
OPENING, HOLD, CLOSING = 2.0, 4.0, 3.0  # door cycle, seconds
CLOSED, OPENING_STATE, OPEN, CLOSING_STATE = 0, 1, 2, 3  # door_state codes
STOPPED, UP, DOWN = 0, 1, 2  # direction codes
TRAPPED_CODE = 1  # 困人 in the profile's fault enum
FIRMWARE = "HGP-CTL V3.2.1"


class Elevator(Model):
    """Calls arrive more often in the morning and evening rush; the car travels at rated
    speed, levels, opens its doors, holds them and closes them, then waits for a call.

    `position` counts storeys from the lowest landing; `floor` shows the landing the car
    is at or passing, as a car's indicator does.
    elevator_stuck: the car stops between two floors with its doors closed, a passenger
    presses the alarm button: trapped (困人), out of service. Clearing it is the rescue:
    the car is wound to the nearest landing and opens its doors.
    """

    FAULTS = ("elevator_stuck",)
    MAX_STEP = 0.5

    def __init__(self, profile: Profile, rng: random.Random) -> None:
        super().__init__(profile, rng)
        self.position = float(LOBBY)
        self.target: int | None = None
        self.door_timer = 0.0
        self.values.update(
            floor=1, direction=STOPPED, door_state=CLOSED, running=0, in_service=1,
            door_zone=1, alarm_button=0, passengers_trapped=0, fault=0, inspection=0,
            fire_service=0, overload=0, fault_code=0, speed=0.0,
            run_count=rng.randint(40_000, 200_000), run_hours=rng.randint(3_000, 12_000),
            firmware_version=FIRMWARE,
        )
        self._hours = float(self.values["run_hours"])

    def step(self, dt: float, now: SimTime) -> None:
        if self.fault == "elevator_stuck":
            return
        v = self.values
        state = v["door_state"]
        if self.target is not None:
            self._travel(dt)
        elif state != CLOSED:
            self._doors(dt)
        elif chance(self.rng, self._calls_per_hour(now.hour), dt):
            self._call()
        v["floor"] = FLOORS[min(len(FLOORS) - 1, max(0, round(self.position)))]
        v["door_zone"] = int(abs(self.position - round(self.position)) < 0.03)

    def _calls_per_hour(self, hour: float) -> float:
        return 15 + 90 * bump(hour, 7.8, 1.2) + 40 * bump(hour, 12.2, 1.2) + 80 * bump(hour, 18.8, 2)

    def _call(self) -> None:
        here = round(self.position)
        choices = [i for i in range(len(FLOORS)) if i != here]
        # most trips start or end at the lobby
        target = LOBBY if here != LOBBY and self.rng.random() < 0.6 else self.rng.choice(choices)
        self.target = target
        v = self.values
        v["direction"] = UP if target > here else DOWN
        v["running"] = 1
        v["run_count"] += 1

    def _travel(self, dt: float) -> None:
        v = self.values
        assert self.target is not None
        distance = self.target - self.position
        move = RATED_SPEED * dt / STOREY
        self._hours += dt / 3600
        v["run_hours"] = math.floor(self._hours)
        if abs(distance) <= move:  # arrived: level, stop, open the doors
            self.position = float(self.target)
            self.target = None
            v.update(running=0, direction=STOPPED, speed=0.0, door_state=OPENING_STATE)
            self.door_timer = OPENING
            return
        self.position += math.copysign(move, distance)
        v["speed"] = math.copysign(RATED_SPEED, distance)

    def _doors(self, dt: float) -> None:
        v = self.values
        self.door_timer -= dt
        if self.door_timer > 0:
            return
        following = {OPENING_STATE: (OPEN, HOLD), OPEN: (CLOSING_STATE, CLOSING), CLOSING_STATE: (CLOSED, 0.0)}
        v["door_state"], self.door_timer = following[v["door_state"]]

    def set_fault(self, kind: str) -> None:
        super().set_fault(kind)
        v = self.values
        here = round(self.position)
        if abs(self.position - here) < 0.3:  # stuck just after leaving a landing
            up = (v["direction"] != DOWN or here == 0) and here < len(FLOORS) - 1
            self.position = here + (0.45 if up else -0.45)
        self.target = None
        v.update(
            running=0, speed=0.0, direction=STOPPED, door_state=CLOSED, door_zone=0,
            alarm_button=1, passengers_trapped=1, fault=1, in_service=0, fault_code=TRAPPED_CODE,
        )
        v["floor"] = FLOORS[round(self.position)]

    def clear(self) -> None:
        if self.fault == "elevator_stuck":
            self.position = float(round(self.position))  # wound to the nearest landing
            self.door_timer = OPENING
            self.values.update(
                door_state=OPENING_STATE, door_zone=1, alarm_button=0, passengers_trapped=0,
                fault=0, in_service=1, fault_code=0, floor=FLOORS[round(self.position)],
            )
        super().clear()
