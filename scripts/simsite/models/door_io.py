"""Doors on an 8-channel IO module: residents through the controlled door, staff now and then."""

from __future__ import annotations

import random

from gateway.config.models import Profile
from simsite.models.base import Model, SimTime, bump, chance

WALK_THROUGH = 1.0  # seconds from the lock release to the door opening
# door -> visits an hour outside the rush (doors 2-6 are staff and escape doors)
VISITS = {1: 30.0, 2: 0.3, 3: 0.5, 4: 0.02, 5: 0.2, 6: 0.3}


class DoorIO(Model):
    """Door 1 (the unit entrance) opens only after its lock is released: a resident's card
    or the exit button (which this model presses now and then) energises the release
    relay for `release_seconds`. The other doors open now and then and close again.
    A release written by the gateway lets someone through too.

    door_forced: door 1 is pushed open with no release and stays open until cleared.
    """

    FAULTS = ("door_forced",)
    MAX_STEP = 1.0

    def __init__(self, profile: Profile, rng: random.Random) -> None:
        super().__init__(profile, rng)
        self.open_for = {door: 0.0 for door in VISITS}  # seconds each door stays open
        self.release_left = 0.0
        self.walk_in = 0.0  # seconds until a released door 1 opens
        self.button_left = 0.0
        self.values.update({f"door{door}_open": 0 for door in VISITS})
        self.values.update(exit_button=0, tamper=0, lock_release=0, sounder=0, release_seconds=5)

    def step(self, dt: float, now: SimTime) -> None:
        rush = 1 + 3 * bump(now.hour, 7.8, 1.2) + 3 * bump(now.hour, 18.8, 2)
        night = 0.2 if now.hour < 6 else 1.0
        if self.fault != "door_forced" and not self.release_left and chance(self.rng, VISITS[1] * rush * night, dt):
            if self.rng.random() < 0.4:  # leaving: the exit button releases the lock
                self.button_left = 1.0
            self._release()
        for door in range(2, 7):
            if not self.open_for[door] and chance(self.rng, VISITS[door], dt):
                self.open_for[door] = self.rng.uniform(3, 20)
        self._timers(dt)

    def _release(self) -> None:
        self.release_left = float(self.values["release_seconds"])
        self.walk_in = WALK_THROUGH

    def _timers(self, dt: float) -> None:
        v = self.values
        self.button_left = max(0.0, self.button_left - dt)
        v["exit_button"] = int(self.button_left > 0)
        if self.walk_in > 0:
            self.walk_in -= dt
            if self.walk_in <= 0:
                self.open_for[1] = self.rng.uniform(3, 8)
        if self.release_left > 0:
            self.release_left = max(0.0, self.release_left - dt)
        v["lock_release"] = int(self.release_left > 0)
        for door, left in self.open_for.items():
            if self.fault == "door_forced" and door == 1:
                v["door1_open"] = 1
                continue
            self.open_for[door] = max(0.0, left - dt)
            v[f"door{door}_open"] = int(self.open_for[door] > 0)

    def write(self, point: str, value: float) -> None:
        if point == "lock_release":
            if value:
                self._release()
            else:
                self.release_left = 0.0
            self.values["lock_release"] = int(bool(value))
            return
        if point == "sounder":
            value = int(bool(value))
        super().write(point, value)

    def set_fault(self, kind: str) -> None:
        super().set_fault(kind)
        self.release_left = self.walk_in = 0.0
        self.values.update(lock_release=0, door1_open=1)

    def clear(self) -> None:
        self.open_for[1] = 0.0
        self.values["door1_open"] = 0
        super().clear()
