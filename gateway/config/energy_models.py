"""Typed configuration for energy and water: counters, meters, groups and the ledger.

A profile marks a cumulative point (kWh, m³) with `counter:`; a device that is a meter
may say which household it serves and how fast it can plausibly count; site.yaml's
`energy:` groups meters (a building's master meter and its sub-meters, tenants, the
common area) for rollups, loss analysis and the monthly ledger (docs/energy.md).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, model_validator

from gateway.config.types import Duration, Identifier, Model, Text

Commodity = Literal["electricity", "water", "gas", "heat"]
_UNIT_COMMODITY = {"kwh": "electricity", "mwh": "electricity", "wh": "electricity",
                   "m³": "water", "m3": "water", "t": "water", "gj": "heat"}
_CLOCK = re.compile(r"^\s*([01]?\d|2[0-3]):([0-5]\d)\s*-\s*([01]?\d|2[0-3]):([0-5]\d)\s*$")


def commodity_of_unit(unit: str | None) -> str | None:
    """What a counter counts, from its unit, when the profile does not say."""
    return _UNIT_COMMODITY.get((unit or "").strip().lower())


def _counter(value: Any) -> Any:
    """`counter: true` is a counter with every default."""
    return {} if value is True else value


class CounterSpec(Model):
    """On a profile point: the point is a cumulative counter.

    `rollover`: the reading after which the register wraps to 0 (default: the register
    type's range times its scale). `max_rate`: units per hour above which a step is
    implausible (a meter swap, a corrupted read), flagged instead of counted.
    """

    commodity: Commodity | None = None  # default from the unit: kWh electricity, m³ water
    rollover: float | None = Field(default=None, gt=0)
    max_rate: float | None = Field(default=None, gt=0)


CounterMark = Annotated[CounterSpec | None, BeforeValidator(_counter)]


class MeterConfig(Model):
    """On a device: it is a meter. All keys optional."""

    household: Text | None = None  # the unit it serves, e.g. 3-2-1201: handover snapshots
    max_rate: float | None = Field(default=None, gt=0)  # overrides the profile's, units/hour
    night_flow_threshold: float | None = Field(default=None, ge=0)  # water: m³/h, leak above


class MeterGroup(Model):
    """Meters analysed together: a master meter against the sum of its sub-meters.

    Members and the master are device ids (their counter point of the group's commodity)
    or `device.point` where a meter has more than one such counter.
    """

    id: Identifier
    name: str | None = None
    commodity: Commodity
    kind: Literal["building", "tenant", "common_area", "other"] = "building"
    master: str | None = None  # without a master the group is a sum (a tenant's meters)
    members: list[str] = []
    loss_threshold: float = Field(default=0.08, ge=0, le=1)  # a fraction of the master's
    loss_days: int = Field(default=3, ge=1, le=90)  # days above the threshold before an alarm
    # False: the loss is computed and in the ledger, but raises no alarm; for a master
    # whose sub-meters cover only part of its load (the rest is unmetered, not lost).
    loss_alarm: bool = True

    @model_validator(mode="after")
    def _has_meters(self) -> MeterGroup:
        if self.master is None and not self.members:
            raise ValueError("a group needs a master:, members:, or both")
        if self.master is not None and self.master in self.members:
            raise ValueError(f"{self.master} is the master; it cannot be a member too")
        return self


def _clock_window(value: Any) -> Any:
    if isinstance(value, str) and _CLOCK.match(value):
        return value.strip()
    raise ValueError(f"{value!r} is not a time window; write it as \"02:00-04:00\"")


ClockWindow = Annotated[str, BeforeValidator(_clock_window)]


def window_minutes(window: str) -> tuple[int, int]:
    """Minutes after midnight of a window's start and end ("02:00-04:00" → (120, 240))."""
    match = _CLOCK.match(window)
    assert match is not None
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    return h1 * 60 + m1, h2 * 60 + m2


class ManualMeter(Model):
    """A meter with no network: read by hand (`gateway meters read`), in the ledger like
    the others. Its counter is its id's only point, `reading`."""

    id: Identifier
    name: str | None = None
    commodity: Commodity
    unit: str | None = None  # kWh, m³
    household: Text | None = None
    rollover: float | None = Field(default=None, gt=0)


class EnergyConfig(Model):
    """site.yaml `energy:`."""

    groups: list[MeterGroup] = []
    manual_meters: list[ManualMeter] = []
    night_window: ClockWindow = "02:00-04:00"  # local time; night minimum flow is measured here
    night_flow_threshold: float = Field(default=0.05, ge=0)  # m³/h, the site default for water
    gap_estimate_after: Duration = 900.0  # 15m: a longer gap between readings is estimated
    keep_days: int = Field(default=800, ge=40)  # raw counter readings kept for the ledger
