"""What every simulated piece of equipment shares: state in engineering units, faults, time.

Models know nothing of registers; the server encodes their values with the profile's own
point definitions, so the gateway decodes exactly what a real device of that map sends.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

from gateway.config.models import Profile


@dataclass(frozen=True, slots=True)
class SimTime:
    """A moment of simulated time: epoch seconds, and the site's local hour of day."""

    epoch: float
    zone: ZoneInfo

    @property
    def local(self) -> datetime:
        return datetime.fromtimestamp(self.epoch, self.zone)

    @property
    def hour(self) -> float:
        local = self.local
        return local.hour + local.minute / 60 + local.second / 3600

    def earlier(self, seconds: float) -> SimTime:
        return SimTime(self.epoch - seconds, self.zone)


class Model:
    """A device's simulated state: `values` maps point names to engineering values.

    `FAULTS` lists the scenarios this equipment can play; `MAX_STEP` (simulated seconds)
    makes the site split a long advance into steps short enough for the model's events
    (a lift passes a floor in under two seconds). `METER` marks meters, which may play
    `meter_silent`.
    """

    FAULTS: ClassVar[tuple[str, ...]] = ()
    MAX_STEP: ClassVar[float | None] = None
    METER: ClassVar[bool] = False

    def __init__(self, profile: Profile, rng: random.Random) -> None:
        self.profile = profile
        self.rng = rng
        self.values: dict[str, Any] = {}
        self.fault: str | None = None

    def step(self, dt: float, now: SimTime) -> None:
        """Advance by `dt` simulated seconds, ending at `now`."""

    def write(self, point: str, value: Any) -> None:
        """The gateway wrote `point`; the default is to hold the value until the next change."""
        self.values[point] = value

    def set_fault(self, kind: str) -> None:
        """Enter a fault scenario; raise ValueError when this equipment has no such fault."""
        if kind not in self.FAULTS:
            offered = ", ".join(self.FAULTS) or "none"
            raise ValueError(f"profile {self.profile.id} has no fault {kind!r} (it has: {offered})")
        self.fault = kind

    def clear(self) -> None:
        self.fault = None


def bump(hour: float, centre: float, width: float) -> float:
    """A smooth daily peak around `centre` o'clock."""
    return math.exp(-(((hour - centre) / width) ** 2))


def follow(current: float, target: float, dt: float, tau: float) -> float:
    """First-order lag: how a VFD ramps, a load settles or a level sensor smooths."""
    return current + (target - current) * (1 - math.exp(-dt / tau))


def chance(rng: random.Random, per_hour: float, dt: float) -> bool:
    """Whether an event with `per_hour` mean rate happens within `dt` seconds."""
    return rng.random() < 1 - math.exp(-per_hour * dt / 3600)
