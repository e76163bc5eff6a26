"""How simulated equipment behaves: one model per profile id, in engineering units.

Models know nothing of registers; the server encodes their values with the profile's own
point definitions, so the gateway decodes exactly what a real device of that map would
send. Time is simulated time: the site runs its clock faster than real time so a demo
shows a day's demand curve in minutes.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from datetime import datetime
from zoneinfo import ZoneInfo

from drivers.modbus.decode import codec_for
from gateway.config.models import Profile

FAULTS = ("pump_trip", "stop_answering", "silent", "exception")


class Model:
    """A device's simulated state: `values` maps point names to engineering values."""

    def __init__(self, profile: Profile, rng: random.Random) -> None:
        self.profile = profile
        self.rng = rng
        self.values: dict[str, float] = {}
        self.fault: str | None = None

    def step(self, dt: float, hour: float) -> None:
        """Advance by `dt` simulated seconds; `hour` is the simulated local hour of day."""

    def write(self, point: str, value: float) -> None:
        """The gateway wrote `point`; the default is to hold the value until the next change."""
        self.values[point] = value

    def set_fault(self, kind: str) -> None:
        """Enter a device-level fault; raise ValueError when this model has no such fault."""
        raise ValueError(f"profile {self.profile.id} has no fault {kind!r}")

    def clear(self) -> None:
        self.fault = None


class RandomWalk(Model):
    """Any profile without a model: every point wanders slowly within its type's range."""

    def __init__(self, profile: Profile, rng: random.Random, points: list[str] | None = None) -> None:
        super().__init__(profile, rng)
        self._limits: dict[str, tuple[float, float, float]] = {}  # low, high, step
        for name in points if points is not None else list(profile.points):
            point = profile.points[name]
            codec = codec_for(point, profile.order)
            raw_low, raw_high = codec.raw_range
            # keep to a modest slice of the range: a float32's full range is not a reading
            raw_low, raw_high = max(raw_low, 0.0), min(raw_high, 1000.0)
            ends = sorted((raw_low * point.scale + point.offset, raw_high * point.scale + point.offset))
            low, high = ends
            self._limits[name] = (low, high, max((high - low) / 500, abs(point.scale)))
            self.values[name] = low + (high - low) * rng.uniform(0.2, 0.5)

    def step(self, dt: float, hour: float) -> None:
        for name, (low, high, step) in self._limits.items():
            moved = self.values[name] + self.rng.gauss(0, step) * min(1.0, dt / 60)
            self.values[name] = min(high, max(low, moved))


def _bump(hour: float, centre: float, width: float) -> float:
    return math.exp(-(((hour - centre) / width) ** 2))


def _follow(current: float, target: float, dt: float, tau: float) -> float:
    """First-order lag: how a VFD ramps or a load settles."""
    return current + (target - current) * (1 - math.exp(-dt / tau))


class BoosterPump(Model):
    """A VFD-driven booster pump holding the outlet pressure at its setpoint.

    Demand follows a residential day (morning and evening peaks, a quiet night when the
    pump sleeps); the drive's frequency follows demand, current follows frequency.
    """

    RATED_HZ = 50.0
    TRIP_CODE = 21  # "overcurrent" on many VFDs

    def __init__(self, profile: Profile, rng: random.Random) -> None:
        super().__init__(profile, rng)
        self.setpoint = 0.45
        self.demand_noise = 0.0
        self.sleeping = False
        self.values.update(
            frequency=38.0, current=10.0, outlet_pressure=self.setpoint, running=1,
            fault_code=0, run_hours=rng.uniform(1000, 5000), starts=rng.randint(200, 900),
            setpoint_pressure=self.setpoint,
        )

    def demand(self, hour: float) -> float:
        base = 0.08 + 0.55 * _bump(hour, 7.5, 1.5) + 0.3 * _bump(hour, 12, 1.5)
        base += 0.65 * _bump(hour, 19.5, 2.0) + 0.25 * _bump(hour, 15, 4)
        return min(1.0, max(0.0, base + self.demand_noise))

    def step(self, dt: float, hour: float) -> None:
        v = self.values
        self.demand_noise = 0.9 * self.demand_noise + self.rng.gauss(0, 0.01)
        demand = self.demand(hour)
        if self.fault == "pump_trip":
            v.update(running=0, fault_code=self.TRIP_CODE, frequency=0.0, current=0.0)
            v["outlet_pressure"] = _follow(v["outlet_pressure"], 0.18, dt, 120)  # static head
            return
        # sleep below a low demand, with hysteresis so the pump does not chatter
        if self.sleeping and demand > 0.16:
            self.sleeping = False
        elif not self.sleeping and demand < 0.12:
            self.sleeping = True
        running = not self.sleeping
        if running and not v["running"]:
            v["starts"] += 1
        v["running"] = int(running)
        v["fault_code"] = 0
        if running:
            correction = 25 * (self.setpoint - 0.45) / 0.45
            target = min(self.RATED_HZ, max(20.0, 28 + 22 * demand + correction))
            v["frequency"] = _follow(max(v["frequency"], 15.0), target, dt, 40)
            lag = (target - v["frequency"]) / self.RATED_HZ
            v["outlet_pressure"] = max(0.0, self.setpoint - 0.03 * lag + self.rng.gauss(0, 0.004))
            load = (v["frequency"] / self.RATED_HZ) ** 3
            v["current"] = max(0.0, 3 + 19 * load + self.rng.gauss(0, 0.1))
            v["run_hours"] += dt / 3600
        else:
            v["frequency"] = 0.0
            v["current"] = 0.0
            v["outlet_pressure"] = max(0.0, self.setpoint - 0.02 + self.rng.gauss(0, 0.003))
        v["setpoint_pressure"] = self.setpoint

    def write(self, point: str, value: float) -> None:
        if point == "setpoint_pressure":
            self.setpoint = value
        super().write(point, value)

    def set_fault(self, kind: str) -> None:
        if kind != "pump_trip":
            super().set_fault(kind)
        self.fault = kind
        self.step(0.0, 12.0)

    def clear(self) -> None:
        if self.fault == "pump_trip":
            self.values["starts"] += 1  # the reset restarts the pump
            self.values["running"] = 1
            self.values["frequency"] = 30.0
        super().clear()


class EnergyMeter3P(Model):
    """A three-phase meter on a building feeder: load follows the day, energy integrates power."""

    PHASE_AMPS = 160.0

    def __init__(self, profile: Profile, rng: random.Random) -> None:
        super().__init__(profile, rng)
        self.imbalance = [rng.uniform(-0.08, 0.08) for _ in range(3)]
        self.values.update(energy_import=rng.uniform(50_000, 150_000), frequency=50.0)
        self.step(0.0, 12.0)

    def step(self, dt: float, hour: float) -> None:
        v = self.values
        load = 0.3 + 0.4 * _bump(hour, 10, 3) + 0.5 * _bump(hour, 20, 2.5)
        pf = min(0.98, max(0.85, 0.92 + self.rng.gauss(0, 0.01)))
        power_w = 0.0
        for phase in range(3):
            volts = min(235.0, max(220.0, 228 - 4 * load + self.rng.gauss(0, 1.0)))
            amps = max(0.0, self.PHASE_AMPS * load * (1 + self.imbalance[phase]) + self.rng.gauss(0, 1.5))
            v[f"voltage_l{phase + 1}"] = volts
            v[f"current_l{phase + 1}"] = amps
            power_w += volts * amps * pf
        v["total_power"] = power_w / 1000  # kW
        v["frequency"] = min(50.1, max(49.9, 50 + self.rng.gauss(0, 0.02)))
        v["energy_import"] += v["total_power"] * dt / 3600


MODELS: dict[str, Callable[[Profile, random.Random], Model]] = {
    "booster_pump": BoosterPump,
    "energy_meter_3p": EnergyMeter3P,
}


class Composite(Model):
    """A known model for the points it knows, a random walk for any extra points in the map."""

    def __init__(self, profile: Profile, rng: random.Random) -> None:
        super().__init__(profile, rng)
        factory = MODELS.get(profile.id)
        self.known = factory(profile, rng) if factory is not None else None
        known = set(self.known.values) if self.known is not None else set()
        extra = [name for name in profile.points if name not in known]
        self.walk = RandomWalk(profile, rng, extra)
        self._merge()

    def _merge(self) -> None:
        self.values = {**self.walk.values, **(self.known.values if self.known else {})}

    def step(self, dt: float, hour: float) -> None:
        if self.known is not None:
            self.known.step(dt, hour)
        self.walk.step(dt, hour)
        self._merge()

    def write(self, point: str, value: float) -> None:
        target = self.known if self.known is not None and point in self.known.values else self.walk
        target.write(point, value)
        self._merge()

    def set_fault(self, kind: str) -> None:
        if self.known is None:
            super().set_fault(kind)
        self.known.set_fault(kind)
        self._merge()

    def clear(self) -> None:
        if self.known is not None:
            self.known.clear()
            self._merge()


def make_model(profile: Profile, rng: random.Random) -> Model:
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
    def hour(self) -> float:
        local = datetime.fromtimestamp(self.now, self.zone)
        return local.hour + local.minute / 60 + local.second / 3600
