"""How the simulated HVAC plant behaves: an air-handling unit and a heat-exchange station.

Models hold engineering values keyed by point name, as the Modbus models do; binary
points are 0/1 and multi-state points their state number (from 1). Commandable points
(setpoints, start/stop commands) are inputs: the device copies the objects' effective
present values in before each step, so a write at any priority, or its relinquish, is
what the equipment obeys.
"""

from __future__ import annotations

import random
from typing import Any

from gateway.config.models import Profile
from simsite.models.base import Model, SimTime, bump, follow

# The AHU's alarm_state states (the profile's enum): what the controller reports.
NORMAL, FAN_FAILURE, FILTER_CLOGGED, SUPPLY_OFF_SETPOINT = 1, 2, 3, 4
DIRTY_FILTER_PA = 250.0  # the controller's filter alarm threshold


class AirHandler(Model):
    """An office-hours AHU: the fan runs on command, the supply air follows its setpoint
    through the coil valves, the return air follows the space's load, and the filter's
    differential pressure creeps up as it loads with dust.

    fan_fail: the fan is commanded on but its status stays off (tripped overload);
    the supply air drifts to the return temperature. filter_clogged: the filter's
    differential pressure climbs past the alarm threshold. supply_drift: the supply air
    drifts off its setpoint (a stuck valve) while everything else looks normal.
    """

    FAULTS = ("fan_fail", "filter_clogged", "supply_drift")
    MAX_STEP = 60.0

    def __init__(self, profile: Profile, rng: random.Random) -> None:
        super().__init__(profile, rng)
        self.clean_dp = rng.uniform(110, 140)  # a fresh filter at full airflow
        self.dust = rng.uniform(0, 60)  # Pa the filter has gained since it was changed
        self.values.update(
            supply_air_temp=16.0, return_air_temp=25.0, supply_air_temp_setpoint=16.0,
            fan_command=1, fan_status=1, filter_dp=self.clean_dp + self.dust,
            chw_valve=40.0, hw_valve=0.0, alarm_state=NORMAL,
        )

    def load(self, hour: float) -> float:
        """Cooling load, 0-1: people and sun in an office building's day."""
        return min(1.0, 0.15 + 0.6 * bump(hour, 14, 4) + 0.2 * bump(hour, 10, 2))

    def step(self, dt: float, now: SimTime) -> None:
        v = self.values
        load = self.load(now.hour)
        running = bool(v["fan_command"]) and self.fault != "fan_fail"
        v["fan_status"] = int(running)
        setpoint = float(v["supply_air_temp_setpoint"])
        v["return_air_temp"] = follow(v["return_air_temp"], 23.5 + 3.0 * load, dt, 900)
        v["return_air_temp"] += self.rng.gauss(0, 0.02)
        if running:
            target = setpoint + (4.0 if self.fault == "supply_drift" else 0.0)
            v["supply_air_temp"] = follow(v["supply_air_temp"], target, dt, 120)
            # the controller opens the chilled water valve with the load and the gap to
            # the return air; below the return air temperature it never heats
            cooling = (v["return_air_temp"] - setpoint) / 12 * (0.4 + load)
            v["chw_valve"] = min(100.0, max(0.0, 100 * cooling))
            v["hw_valve"] = 0.0 if setpoint < v["return_air_temp"] else min(100.0, 8 * (setpoint - v["return_air_temp"]))
            # Pa per running hour: months to the alarm threshold, or hours once clogging
            self.dust += dt / 3600 * (30.0 if self.fault == "filter_clogged" else 0.05)
            v["filter_dp"] = max(0.0, self.clean_dp + self.dust + self.rng.gauss(0, 1.5))
        else:
            v["supply_air_temp"] = follow(v["supply_air_temp"], v["return_air_temp"], dt, 300)
            v["chw_valve"] = v["hw_valve"] = 0.0
            v["filter_dp"] = follow(v["filter_dp"], 0.0, dt, 20)
        v["supply_air_temp"] += self.rng.gauss(0, 0.02)
        v["alarm_state"] = self._alarm(setpoint)

    def _alarm(self, setpoint: float) -> int:
        v = self.values
        if v["fan_command"] and not v["fan_status"]:
            return FAN_FAILURE
        if v["filter_dp"] >= DIRTY_FILTER_PA:
            return FILTER_CLOGGED
        if v["fan_status"] and abs(v["supply_air_temp"] - setpoint) > 3.0:
            return SUPPLY_OFF_SETPOINT
        return NORMAL

    def set_fault(self, kind: str) -> None:
        super().set_fault(kind)
        v = self.values
        # the fault shows at once, before the next tick
        if kind == "fan_fail":
            v["fan_status"] = 0
        elif kind == "filter_clogged":
            self.dust = DIRTY_FILTER_PA + 120 - self.clean_dp
            v["filter_dp"] = self.clean_dp + self.dust
        elif kind == "supply_drift":
            v["supply_air_temp"] = float(v["supply_air_temp_setpoint"]) + 4.0
        v["alarm_state"] = self._alarm(float(v["supply_air_temp_setpoint"]))

    def clear(self) -> None:
        if self.fault == "filter_clogged":
            self.dust = 0.0  # a new filter
            self.values["filter_dp"] = self.clean_dp
        if self.fault == "supply_drift":
            self.values["supply_air_temp"] = float(self.values["supply_air_temp_setpoint"])
        super().clear()
        self.values["fan_status"] = int(bool(self.values["fan_command"]))
        self.values["alarm_state"] = self._alarm(float(self.values["supply_air_temp_setpoint"]))


class HeatExchangeStation(Model):
    """A heating-season station: the heat load follows the outdoor temperature's day, the
    secondary supply follows its setpoint while the pump runs, the return follows the load,
    and the heat meter integrates the power.

    supply_drift: the secondary supply drifts off its setpoint (a sticking primary valve).
    """

    FAULTS = ("supply_drift",)
    MAX_STEP = 60.0
    RATED_KW = 1200.0
    FLOW_KW_PER_K = 70.0  # secondary flow × c_p: kW per kelvin of supply-return difference

    def __init__(self, profile: Profile, rng: random.Random) -> None:
        super().__init__(profile, rng)
        self.values.update(
            primary_supply_temp=95.0, primary_return_temp=50.0, secondary_supply_temp=50.0,
            secondary_return_temp=40.0, secondary_supply_setpoint=50.0, pump_command=1,
            pump_status=1, secondary_supply_pressure=420.0, heat_power=600.0,
            heat_energy=rng.uniform(200_000, 900_000),
        )

    def load(self, hour: float) -> float:
        """Heat demand, 0-1: coldest before dawn, least in the afternoon sun."""
        return min(1.0, max(0.1, 0.75 - 0.35 * bump(hour, 14, 4) + 0.15 * bump(hour, 5, 2)))

    def step(self, dt: float, now: SimTime) -> None:
        v = self.values
        running = bool(v["pump_command"])
        v["pump_status"] = int(running)
        v["primary_supply_temp"] = follow(v["primary_supply_temp"], 95.0, dt, 1800) + self.rng.gauss(0, 0.05)
        if running:
            target = float(v["secondary_supply_setpoint"]) + (6.0 if self.fault == "supply_drift" else 0.0)
            v["secondary_supply_temp"] = follow(v["secondary_supply_temp"], target, dt, 300)
            power = self.RATED_KW * self.load(now.hour)
            delta = power / self.FLOW_KW_PER_K
            v["secondary_return_temp"] = follow(v["secondary_return_temp"], v["secondary_supply_temp"] - delta, dt, 600)
            v["heat_power"] = max(0.0, self.FLOW_KW_PER_K * (v["secondary_supply_temp"] - v["secondary_return_temp"]))
            v["secondary_supply_pressure"] = follow(v["secondary_supply_pressure"], 420.0, dt, 20)
            v["primary_return_temp"] = v["secondary_return_temp"] + 5.0
        else:
            ambient = 20.0
            v["secondary_supply_temp"] = follow(v["secondary_supply_temp"], ambient, dt, 3600)
            v["secondary_return_temp"] = follow(v["secondary_return_temp"], ambient, dt, 3600)
            v["heat_power"] = 0.0
            v["secondary_supply_pressure"] = follow(v["secondary_supply_pressure"], 250.0, dt, 20)  # static
            v["primary_return_temp"] = follow(v["primary_return_temp"], v["primary_supply_temp"] - 5, dt, 600)
        v["secondary_supply_pressure"] += self.rng.gauss(0, 0.5)
        v["heat_energy"] += v["heat_power"] * dt / 3600

    def set_fault(self, kind: str) -> None:
        super().set_fault(kind)
        v = self.values
        v["secondary_supply_temp"] = float(v["secondary_supply_setpoint"]) + 6.0

    def clear(self) -> None:
        if self.fault == "supply_drift":
            self.values["secondary_supply_temp"] = float(self.values["secondary_supply_setpoint"])
        super().clear()


MODELS: dict[str, type[Model]] = {"ahu": AirHandler, "heat_exchange_station": HeatExchangeStation}


class Holding(Model):
    """A BACnet profile the simulator has no model for: every point holds its first value
    (0, or the state 1 of a multi-state point) until it is written."""

    def __init__(self, profile: Profile, rng: random.Random) -> None:
        super().__init__(profile, rng)
        for name, point in profile.points.items():
            self.values[name] = 1 if point.object.startswith("multi-state") else 0


def make_bacnet_model(profile: Profile, rng: random.Random) -> Model:
    """The behaviour for a BACnet device of `profile`."""
    factory: Any = MODELS.get(profile.id, Holding)
    return factory(profile, rng)
