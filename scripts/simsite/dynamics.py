"""How simulated equipment behaves: one model per profile id (see `models/`), a random
walk for anything else, and the simulated clock they share.

Time is simulated time: the site runs its clock faster than real time so a demo shows a
day's demand curve in minutes; a long advance is split into steps short enough for each
model's events.
"""

from __future__ import annotations

import math
import random
from typing import Any
from zoneinfo import ZoneInfo

from drivers.modbus.decode import codec_for
from gateway.config.models import Profile
from simsite.models import MODELS, Model, SimTime

# Faults the server plays for any device: it closes, it holds requests, it refuses them.
COMM_FAULTS = ("stop_answering", "silent", "exception")
# meter_silent: a meter drops off its bus (the server holds requests, like `silent`).
FAULTS = (
    *COMM_FAULTS, "meter_silent", "water_leak", "pump_trip", "low_pressure", "elevator_stuck", "fire_alarm",
    "sump_high", "door_forced", "fan_fail", "filter_clogged", "supply_drift",
    # MQTT equipment (simsite/mqtt): its own scenarios, then the firmware's and radio's
    "door_held", "card_denied_burst", "emergency_call", "lift_trapped", "patrol_skipped",
    "device_silent", "malformed", "flood",
)


class RandomWalk(Model):
    """Any profile without a model: every number wanders slowly within a modest range;
    bits stay 0 and strings empty, which is what an idle device shows."""

    def __init__(self, profile: Profile, rng: random.Random, points: list[str] | None = None) -> None:
        super().__init__(profile, rng)
        self._limits: dict[str, tuple[float, float, float]] = {}  # low, high, step
        for name in points if points is not None else list(profile.points):
            point = profile.points[name]
            if point.type == "bool":
                self.values[name] = 0
                continue
            if point.type == "string":
                self.values[name] = ""
                continue
            if point.type in ("bcd16", "bcd32"):
                raw_low, raw_high = 0.0, 9999.0
            else:
                raw_low, raw_high = codec_for(point, profile.order).raw_range
            # keep to a modest slice of the range: a float32's full range is not a reading
            raw_low, raw_high = max(raw_low, 0.0), min(raw_high, 1000.0)
            low, high = sorted((raw_low * point.scale + point.offset, raw_high * point.scale + point.offset))
            self._limits[name] = (low, high, max((high - low) / 500, abs(point.scale)))
            self.values[name] = low + (high - low) * rng.uniform(0.2, 0.5)

    def step(self, dt: float, now: SimTime) -> None:
        for name, (low, high, step) in self._limits.items():
            moved = self.values[name] + self.rng.gauss(0, step) * min(1.0, dt / 60)
            self.values[name] = min(high, max(low, moved))


class Composite(Model):
    """A known model for the points it knows, a random walk for any extra points in the map
    (a site may add points to a profile that the simulator has never heard of)."""

    def __init__(self, profile: Profile, rng: random.Random) -> None:
        super().__init__(profile, rng)
        factory = MODELS.get(profile.id)
        self.known = factory(profile, rng) if factory is not None else None
        known = set(self.known.values) if self.known is not None else set()
        extra = [name for name in profile.points if name not in known]
        self.walk = RandomWalk(profile, rng, extra)
        self._merge()

    @property
    def faults(self) -> tuple[str, ...]:
        """The scenarios this device can play beyond the server's communication faults."""
        if self.known is None:
            return ()
        return (*self.known.FAULTS, "meter_silent") if self.known.METER else self.known.FAULTS

    def _merge(self) -> None:
        self.values = {**self.walk.values, **(self.known.values if self.known else {})}

    def step(self, dt: float, now: SimTime) -> None:
        if self.known is not None:
            limit = self.known.MAX_STEP
            steps = max(1, math.ceil(dt / limit)) if limit else 1
            for left in range(steps - 1, -1, -1):
                self.known.step(dt / steps, now.earlier(left * dt / steps))
        self.walk.step(dt, now)
        self._merge()

    def write(self, point: str, value: Any) -> None:
        target = self.known if self.known is not None and point in self.known.values else self.walk
        target.write(point, value)
        self._merge()

    def set_fault(self, kind: str) -> None:
        if self.known is None:
            super().set_fault(kind)
            return
        self.known.set_fault(kind)
        self.fault = kind
        self._merge()

    def clear(self) -> None:
        if self.known is not None:
            self.known.clear()
            self._merge()
        super().clear()


def make_model(profile: Profile, rng: random.Random) -> Composite:
    """The behaviour for a device of `profile`."""
    return Composite(profile, rng)


class SimClock:
    """Simulated time running `speed` times faster than the wall clock, in the site's zone."""

    def __init__(self, start: float, speed: float, timezone: str) -> None:
        self.now = start
        self.speed = speed
        self.zone = ZoneInfo(timezone)

    def advance(self, real_seconds: float) -> float:
        """Move on; return the simulated seconds that passed."""
        dt = real_seconds * self.speed
        self.now += dt
        return dt

    @property
    def time(self) -> SimTime:
        return SimTime(self.now, self.zone)

    @property
    def hour(self) -> float:
        return self.time.hour
