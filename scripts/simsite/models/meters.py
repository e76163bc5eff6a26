"""Meters that count up: three- and single-phase energy meters, a pulse water meter.

Counters integrate their flow over simulated time, so a ledger built from the readings
adds up; the loads follow a property's day. Every meter can play `meter_silent` (the
server stops answering), which needs nothing from the model.
"""

from __future__ import annotations

import math
import random

from gateway.config.models import Profile
from simsite.models.base import Model, SimTime, bump


class EnergyMeter3P(Model):
    """A building feeder: load follows the day, energy integrates power."""

    METER = True
    PHASE_AMPS = 160.0

    def __init__(self, profile: Profile, rng: random.Random) -> None:
        super().__init__(profile, rng)
        self.imbalance = [rng.uniform(-0.08, 0.08) for _ in range(3)]
        self.values.update(
            energy_import=rng.uniform(50_000, 150_000), energy_export=rng.uniform(10, 200),
            frequency=50.0, serial_number=rng.randint(20_000_000, 29_999_999),
        )
        self._electrics(12.0)

    def step(self, dt: float, now: SimTime) -> None:
        self._electrics(now.hour)
        self.values["energy_import"] += self.values["total_power"] * dt / 3600

    def _electrics(self, hour: float) -> None:
        v = self.values
        load = 0.3 + 0.4 * bump(hour, 10, 3) + 0.5 * bump(hour, 20, 2.5)
        pf = min(0.98, max(0.85, 0.92 + self.rng.gauss(0, 0.01)))
        power_w = 0.0
        for phase in range(3):
            volts = min(235.0, max(220.0, 228 - 4 * load + self.rng.gauss(0, 1.0)))
            amps = max(0.0, self.PHASE_AMPS * load * (1 + self.imbalance[phase]) + self.rng.gauss(0, 1.5))
            v[f"voltage_l{phase + 1}"] = volts
            v[f"current_l{phase + 1}"] = amps
            power_w += volts * amps * pf
        v["total_power"] = power_w / 1000  # kW
        v["power_factor"] = pf
        v["frequency"] = min(50.1, max(49.9, 50 + self.rng.gauss(0, 0.02)))


class EnergyMeter1P(Model):
    """A stairwell and corridor lighting circuit: emergency lights day and night, the
    lamps on from dusk to dawn (sensor lamps, so the load flickers)."""

    METER = True

    def __init__(self, profile: Profile, rng: random.Random) -> None:
        super().__init__(profile, rng)
        self.values.update(
            energy_import=rng.uniform(3_000, 12_000), energy_export=0.0,
            serial_number=rng.randint(10_000_000, 19_999_999), frequency=50.0,
        )
        self.values["energy_total"] = self.values["energy_import"]
        self._electrics(150.0)

    def step(self, dt: float, now: SimTime) -> None:
        hour = now.hour
        dark = hour >= 18.5 or hour < 6.0
        lamps = 1100 * (0.5 + 0.5 * self.rng.random()) if dark else 0.0
        watts = 150.0 + lamps + self.rng.gauss(0, 5)
        self._electrics(max(0.0, watts))
        self.values["energy_import"] += self.values["active_power"] * dt / 3_600_000
        self.values["energy_total"] = self.values["energy_import"] + self.values["energy_export"]

    def _electrics(self, watts: float) -> None:
        v = self.values
        pf = min(0.97, max(0.85, 0.9 + self.rng.gauss(0, 0.01)))  # LED drivers
        volts = min(235.0, max(215.0, 224 + self.rng.gauss(0, 1.5)))
        apparent = watts / pf
        v.update(
            voltage=volts, current=apparent / volts, active_power=watts, apparent_power=apparent,
            reactive_power=math.sqrt(max(0.0, apparent**2 - watts**2)), power_factor=pf,
            frequency=min(50.1, max(49.9, 50 + self.rng.gauss(0, 0.02))),
        )


class WaterMeter(Model):
    """A water meter behind a pulse collector: a building's main, or a sub-meter it feeds.

    A main's flow follows a residential day with a night minimum that never reaches zero:
    the building's cisterns and dripping taps (the number a loss analysis looks at). The
    counter moves in whole pulses of 10 litres, as the reed switch does.

    A main with sub-meters (`feed`, linked by the site from its energy groups) passes
    what its households draw on to them, by share: the main counts the sum of its
    sub-meters plus the common area's use (cleaning, the garden: COMMON_SHARE) and a
    small pipe loss, about 4 % together, under the 8 % a loss alarm waits for.
    `water_leak` adds a constant flow only the main sees: a burst pipe under the
    courtyard. The loss rate climbs and the night minimum rises with it.
    """

    METER = True
    FAULTS = ("water_leak",)
    MAX_STEP = 60.0
    NIGHT_MINIMUM = 0.35  # m³/h
    COMMON_SHARE = 0.03  # of the households' use: the common area, not sub-metered
    PIPE_LOSS = 0.02  # m³/h lost between the main and the sub-meters in any case
    LEAK = 1.2  # m³/h: water_leak, about 29 m³ a day, over 30 % of the building's use

    def __init__(self, profile: Profile, rng: random.Random) -> None:
        super().__init__(profile, rng)
        self.volume = rng.uniform(20_000, 80_000)  # m³, unrounded
        self.noise = 0.0
        self.subs: list[tuple[WaterMeter, float]] = []  # sub-meters and their shares
        self.fed = False  # a sub-meter: its main moves it
        self.values.update(
            flow_rate=self.NIGHT_MINIMUM, wire_break=0, magnetic_tamper=0,
            meter_number=rng.randint(21_000_000, 21_999_999), pulse_litres=10,
        )
        self._count()

    def feed(self, subs: list[tuple[WaterMeter, float]]) -> None:
        """Make this the main of `subs` (meter, share of the households' use; shares sum to 1)."""
        self.subs = subs
        for sub, _share in subs:
            sub.fed = True
            sub.volume = self.rng.uniform(2_000, 8_000)
            sub.values["flow_rate"] = 0.0
            sub._count()

    def flow(self, hour: float) -> float:
        """m³/h for a building of about 150 households (without a leak)."""
        day = 6.0 * bump(hour, 7.5, 1.3) + 3.0 * bump(hour, 12.0, 1.5) + 7.5 * bump(hour, 20.0, 1.8)
        day += 2.0 * bump(hour, 15.0, 4.0)
        return max(self.NIGHT_MINIMUM, self.NIGHT_MINIMUM + day + self.noise)

    def step(self, dt: float, now: SimTime) -> None:
        if self.fed:
            return  # moved by its main, in the main's step
        self.noise = 0.95 * self.noise + self.rng.gauss(0, 0.05)
        use = self.flow(now.hour)
        leak = self.LEAK if self.fault == "water_leak" else 0.0
        self._run(use + leak, dt)
        if self.subs:
            households = max(0.0, use - self.PIPE_LOSS) / (1 + self.COMMON_SHARE)
            for sub, share in self.subs:
                sub._run(households * share, dt)

    def _run(self, flow: float, dt: float) -> None:
        self.values["flow_rate"] = flow
        self.volume += flow * dt / 3600
        self._count()

    def _count(self) -> None:
        litres = self.values["pulse_litres"]
        pulses = math.floor(self.volume * 1000 / litres)
        self.values["total_volume"] = pulses * litres / 1000
