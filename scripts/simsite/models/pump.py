"""A VFD-driven booster pump holding the outlet pressure at its setpoint (二次供水)."""

from __future__ import annotations

import random

from gateway.config.models import Profile
from simsite.models.base import Model, SimTime, bump, follow

LOW_PRESSURE = 0.15  # MPa with a burst main: the pump at full speed cannot hold the setpoint
# A drive's sleep function waits before it sleeps or wakes (sleep delay); with the
# pressure tank this keeps a healthy pump well under 6 starts an hour.
MIN_DWELL = 12 * 60.0  # simulated seconds in one state before the next change


class BoosterPump(Model):
    """Demand follows a residential day (morning and evening peaks, a quiet night when the
    pump sleeps); the drive's frequency follows demand, current follows frequency.

    pump_trip: the drive trips on motor overload and the pressure falls to the static
    head. low_pressure: demand beyond the pump (a burst main): full speed, the pressure
    sags to about 0.15 MPa.
    """

    FAULTS = ("pump_trip", "low_pressure")
    RATED_HZ = 50.0
    TRIP_CODE = 11  # 电机过载 motor overload, in the profile's enum

    def __init__(self, profile: Profile, rng: random.Random) -> None:
        super().__init__(profile, rng)
        self.setpoint = 0.45
        self.demand_noise = 0.0
        self.sleeping = False
        self.dwell = MIN_DWELL  # seconds since the last sleep or wake
        self.values.update(
            frequency=38.0, current=10.0, outlet_pressure=self.setpoint, running=1,
            fault_code=0, run_hours=rng.uniform(1000, 5000), starts=rng.randint(200, 900),
            setpoint_pressure=self.setpoint, remote=1, dry_run=0,
        )

    def demand(self, hour: float) -> float:
        base = 0.08 + 0.55 * bump(hour, 7.5, 1.5) + 0.3 * bump(hour, 12, 1.5)
        base += 0.65 * bump(hour, 19.5, 2.0) + 0.25 * bump(hour, 15, 4)
        return min(1.0, max(0.0, base + self.demand_noise))

    def step(self, dt: float, now: SimTime) -> None:
        v = self.values
        v["setpoint_pressure"] = self.setpoint
        if self.fault is not None:
            self._play_fault(dt)
            return
        self.demand_noise = 0.9 * self.demand_noise + self.rng.gauss(0, 0.01)
        demand = self.demand(now.hour)
        v["fault_code"] = 0
        # sleep below a low demand, with hysteresis and a sleep delay so it does not chatter
        self.dwell += dt
        if self.dwell >= MIN_DWELL and (demand > 0.16 if self.sleeping else demand < 0.12):
            self.sleeping = not self.sleeping
            self.dwell = 0.0
        running = not self.sleeping
        if running and not v["running"]:
            v["starts"] += 1
        v["running"] = int(running)
        if running:
            correction = 25 * (self.setpoint - 0.45) / 0.45
            target = min(self.RATED_HZ, max(20.0, 28 + 22 * demand + correction))
            v["frequency"] = follow(max(v["frequency"], 15.0), target, dt, 40)
            lag = (target - v["frequency"]) / self.RATED_HZ
            v["outlet_pressure"] = max(0.0, self.setpoint - 0.03 * lag + self.rng.gauss(0, 0.004))
            load = (v["frequency"] / self.RATED_HZ) ** 3
            v["current"] = max(0.0, 3 + 19 * load + self.rng.gauss(0, 0.1))
            v["run_hours"] += dt / 3600
        else:
            v["frequency"] = 0.0
            v["current"] = 0.0
            v["outlet_pressure"] = max(0.0, self.setpoint - 0.02 + self.rng.gauss(0, 0.003))

    def _play_fault(self, dt: float) -> None:
        v = self.values
        if self.fault == "pump_trip":
            v.update(running=0, fault_code=self.TRIP_CODE, frequency=0.0, current=0.0)
            v["outlet_pressure"] = follow(v["outlet_pressure"], 0.18, dt, 120)  # static head
        elif self.fault == "low_pressure":
            self.sleeping = False
            if not v["running"]:
                v["starts"] += 1
            v.update(running=1, frequency=self.RATED_HZ, fault_code=0)
            v["current"] = 22.5 + self.rng.gauss(0, 0.2)
            v["outlet_pressure"] = max(0.05, LOW_PRESSURE + self.rng.gauss(0, 0.005))
            v["run_hours"] += dt / 3600

    def write(self, point: str, value: float) -> None:
        if point == "setpoint_pressure":
            self.setpoint = value
        super().write(point, value)

    def set_fault(self, kind: str) -> None:
        super().set_fault(kind)
        self._play_fault(0.0)  # shows at once, before the next tick

    def clear(self) -> None:
        if self.fault == "pump_trip":
            self.values["starts"] += 1  # the reset restarts the pump
            self.values["running"] = 1
            self.values["frequency"] = 30.0
        if self.fault is not None:
            self.values["outlet_pressure"] = self.setpoint
        super().clear()

