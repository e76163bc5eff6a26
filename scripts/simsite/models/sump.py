"""A sump pit (集水井) with two submersible pumps run by level, lead and lag."""

from __future__ import annotations

import random

from gateway.config.models import Profile
from simsite.models.base import Model, SimTime, bump, chance

PIT_AREA = 4.0  # m²
PIT_DEPTH = 3.0  # m, the level sensor's range
HIGH_SWITCH = 2.2  # m, the high-level float
LOW_SWITCH = 0.3  # m, the low-level float
PUMP_CAPACITY = 12.0  # m³/h each
LAG_OFFSET = 0.4  # the lag pump starts this far above the start level
FLOOD_INFLOW = 40.0  # m³/h in sump_high: more than both pumps together


class Sump(Model):
    """Seepage and drainage fill the pit, a rain shower now and then; the controller starts
    the lead pump at the start level, the lag pump 0.4 m higher, stops both at the stop
    level and alternates the lead pump at each cycle.

    In manual mode (auto_mode written 0) the relays follow what the gateway writes.
    sump_high: inflow above the two pumps' capacity; the level climbs past the high float.
    """

    FAULTS = ("sump_high",)
    MAX_STEP = 5.0

    def __init__(self, profile: Profile, rng: random.Random) -> None:
        super().__init__(profile, rng)
        self.level = rng.uniform(0.6, 1.0)
        self.rain = 0.0  # m³/h from a shower, decaying
        self.lead = 1
        self.values.update(
            start_level=1.2, stop_level=0.5, auto_mode=1, pump1_relay=0, pump2_relay=0,
            pump1_fault=0, pump2_fault=0, pump1_running=0, pump2_running=0,
            pump1_run_hours=rng.uniform(300, 900), pump2_run_hours=rng.uniform(300, 900),
        )
        self._show()

    def inflow(self, hour: float) -> float:
        """m³/h: groundwater seepage, plus drains busiest when people are about."""
        if self.fault == "sump_high":
            return FLOOD_INFLOW
        return 1.5 + 1.5 * bump(hour, 8, 2) + 2.0 * bump(hour, 19, 2.5) + self.rain

    def step(self, dt: float, now: SimTime) -> None:
        v = self.values
        if chance(self.rng, 0.05, dt):  # a shower about once in twenty hours
            self.rain = self.rng.uniform(5, 15)
        self.rain *= 0.999 ** dt
        if v["auto_mode"]:
            self._control()
        pumped = 0.0
        for n in (1, 2):
            running = int(bool(v[f"pump{n}_relay"]) and not v[f"pump{n}_fault"])
            v[f"pump{n}_running"] = running
            if running:
                pumped += PUMP_CAPACITY
                v[f"pump{n}_run_hours"] += dt / 3600
        if self.level <= LOW_SWITCH * 0.5:  # the pumps suck air: nothing more comes out
            pumped = min(pumped, self.inflow(now.hour))
        self.level += (self.inflow(now.hour) - pumped) * dt / 3600 / PIT_AREA
        self.level = min(PIT_DEPTH, max(0.05, self.level))
        self._show()

    def _control(self) -> None:
        v = self.values
        lag = 3 - self.lead
        if self.level >= v["start_level"] and not v[f"pump{self.lead}_relay"]:
            v[f"pump{self.lead}_relay"] = 1
        if self.level >= v["start_level"] + LAG_OFFSET:
            v[f"pump{lag}_relay"] = 1
        if self.level <= v["stop_level"] and (v["pump1_relay"] or v["pump2_relay"]):
            v["pump1_relay"] = v["pump2_relay"] = 0
            self.lead = lag  # wear both pumps evenly

    def _show(self) -> None:
        v = self.values
        v["level"] = self.level
        v["level_percent"] = 100 * self.level / PIT_DEPTH
        v["high_level"] = int(self.level >= HIGH_SWITCH)
        v["low_level"] = int(self.level <= LOW_SWITCH)

    def write(self, point: str, value: float) -> None:
        if point in ("pump1_relay", "pump2_relay", "auto_mode"):
            value = int(bool(value))
        super().write(point, value)
        self._show()
