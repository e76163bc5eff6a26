"""One behaviour per profile id; profiles without one get a random walk (see dynamics)."""

from __future__ import annotations

import random
from collections.abc import Callable

from gateway.config.models import Profile
from simsite.models.base import Model, SimTime
from simsite.models.door_io import DoorIO
from simsite.models.elevator import Elevator
from simsite.models.fire_panel import FirePanel
from simsite.models.meters import EnergyMeter1P, EnergyMeter3P, WaterMeter
from simsite.models.pump import BoosterPump
from simsite.models.sump import Sump

MODELS: dict[str, Callable[[Profile, random.Random], Model]] = {
    "booster_pump": BoosterPump,
    "energy_meter_3p": EnergyMeter3P,
    "energy_meter_1p": EnergyMeter1P,
    "water_meter": WaterMeter,
    "sump_level": Sump,
    "elevator": Elevator,
    "fire_panel": FirePanel,
    "door_contact_io": DoorIO,
}

__all__ = ["MODELS", "Model", "SimTime"]
