"""The names of the points the energy stage produces, in one place.

Rollups and night flow are readings of the meter (or of the group, a device of its own
in InfluxDB and upstream), so rules can read them like any point: a profile rule on a
water meter may say `total_volume_night_flow > 0.05`, a site rule
`b1_water.loss_rate_day > 0.08`.
"""

from __future__ import annotations

PERIODS = ("hour", "day", "month")
MANUAL_POINT = "reading"  # a manual meter's counter


def rollup_point(counter: str, period: str) -> str:
    """`energy_import` → `energy_import_day`: the consumption in that period."""
    return f"{counter}_{period}"


def estimated_point(counter: str, period: str) -> str:
    """1 when part of the period's consumption was interpolated across a gap, else 0."""
    return f"{counter}_{period}_estimated"


def night_flow_point(counter: str) -> str:
    """The night's minimum flow (per hour) from a water counter: the leak indicator."""
    return f"{counter}_night_flow"


def group_point(field: str, period: str) -> str:
    """`loss_rate_day`, `consumption_month`, ... of a group."""
    return f"{field}_{period}"


def meter_points(counter: str, commodity: str) -> list[str]:
    """Every point the energy stage adds to a meter for one counter."""
    names = [n for p in PERIODS for n in (rollup_point(counter, p), estimated_point(counter, p))]
    if commodity == "water":
        names.append(night_flow_point(counter))
    return names


def group_points(has_master: bool, has_members: bool) -> list[str]:
    """Every point of a group device: `consumption` is the master's (else the members'
    sum); with both, the members' sum, the loss and the loss rate too; `estimated` is 1
    when a meter was missing or estimated for the period."""
    fields = ["consumption"]
    if has_master and has_members:
        fields += ["members", "loss", "loss_rate"]
    fields.append("estimated")
    return [group_point(f, p) for f in fields for p in PERIODS]
