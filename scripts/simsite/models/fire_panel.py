"""A fire alarm panel that is quiet, as it should be, until a scenario says otherwise."""

from __future__ import annotations

import random

from gateway.config.models import Profile
from simsite.models.base import Model, SimTime

ZONES = 8
ALARM_ZONE = 3  # the zone fire_alarm sets: 1号楼7-12层 on the demo site


class FirePanel(Model):
    """Every zone normal, automatic linkage allowed, the panel clock in BCD following
    simulated time.

    fire_alarm: a detector in zone 3 goes into alarm: its zone bit, the panel-wide fire
    flag and the fire count, and (linkage being automatic) linkage started.
    """

    FAULTS = ("fire_alarm",)

    def __init__(self, profile: Profile, rng: random.Random) -> None:
        super().__init__(profile, rng)
        for zone in range(1, ZONES + 1):
            for kind in ("fire", "fault", "supervisory"):
                self.values[f"zone{zone}_{kind}"] = 0
        self.values.update(
            fire_alarm=0, panel_fault=0, supervisory=0, mains_fault=0, battery_fault=0,
            silenced=0, auto_linkage=1, linkage_active=0, fire_count=0, fault_count=0,
            panel_date=20240101, panel_time=0,
        )

    def step(self, dt: float, now: SimTime) -> None:
        local = now.local
        self.values["panel_date"] = local.year * 10_000 + local.month * 100 + local.day
        self.values["panel_time"] = local.hour * 100 + local.minute

    def set_fault(self, kind: str) -> None:
        super().set_fault(kind)
        self.values.update({f"zone{ALARM_ZONE}_fire": 1, "fire_alarm": 1, "fire_count": 1})
        self.values["linkage_active"] = self.values["auto_linkage"]

    def clear(self) -> None:
        """The panel is reset after the alarm is dealt with."""
        for zone in range(1, ZONES + 1):
            self.values[f"zone{zone}_fire"] = 0
        self.values.update(fire_alarm=0, fire_count=0, linkage_active=0, silenced=0)
        super().clear()
