"""The site's counters, from its configuration: each with its tracker, periods and night.

A device is a meter when a point of its profile is marked `counter:` (its `meter:` key
is optional: household, max_rate, night threshold); a manual meter (`energy.manual_meters`)
is a meter with one counter, `reading`, read by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.config.energy_models import commodity_of_unit
from gateway.config.models import SiteConfig
from gateway.energy.counters import CounterTracker, default_rollover
from gateway.energy.night import NightFlow, NightWindow
from gateway.energy.periods import Calendar
from gateway.energy.points import MANUAL_POINT
from gateway.energy.rollup import Rollups

Key = tuple[str, str]


@dataclass(slots=True)
class Counter:
    """One counter of one meter and everything the stage keeps about it."""

    device: str
    point: str
    commodity: str | None
    unit: str | None
    household: str | None
    poll_interval: float
    manual: bool
    tracker: CounterTracker
    rollups: Rollups
    night: NightFlow | None  # water counters only
    kept_ts: float | None = None  # the last kept (stored) reading
    last_kept: bool = True  # whether the tracker's last reading is stored
    last_flag: str | None = None  # the last reset, jump, replaced or resumed
    last_flag_ts: float | None = None

    @property
    def key(self) -> Key:
        return self.device, self.point

    def snapshot(self) -> dict[str, Any]:
        return {"tracker": self.tracker.snapshot(), "periods": self.rollups.snapshot(),
                "night": self.night.snapshot() if self.night else None,
                "kept_ts": self.kept_ts, "last_flag": self.last_flag,
                "last_flag_ts": self.last_flag_ts}

    def restore(self, body: dict[str, Any]) -> None:
        self.tracker.restore(body.get("tracker") or {})
        self.rollups.restore(body.get("periods") or {})
        if self.night is not None and body.get("night"):
            self.night.restore(body["night"])
        self.kept_ts = body.get("kept_ts")
        self.last_flag = body.get("last_flag")
        self.last_flag_ts = body.get("last_flag_ts")

    def describe(self) -> dict[str, Any]:
        """For `meters()` and the CLI."""
        t = self.tracker
        return {"device": self.device, "point": self.point, "commodity": self.commodity,
                "unit": self.unit, "household": self.household, "manual": self.manual,
                "raw": t.last_raw, "total": t.total, "ts": t.last_ts,
                "rollover": t.rollover, "max_rate": t.max_rate,
                "flag": self.last_flag, "flag_ts": self.last_flag_ts,
                "unexplained": t.unexplained is not None}


def build_counters(config: SiteConfig, calendar: Calendar) -> dict[str, dict[str, Counter]]:
    """device → point → Counter, for every enabled device with counter points and every
    manual meter."""
    energy = config.energy
    gap = energy.gap_estimate_after
    window = NightWindow(energy.night_window, calendar)
    out: dict[str, dict[str, Counter]] = {}
    for device in config.devices:
        profile = config.profiles.get(device.profile)
        if not device.enabled or profile is None:
            continue
        meter = device.meter
        for name, point in profile.points.items():
            spec = getattr(point, "counter", None)
            if spec is None:
                continue
            unit = getattr(point, "unit", None)
            commodity = spec.commodity or commodity_of_unit(unit)
            rollover = spec.rollover if spec.rollover is not None else default_rollover(point)
            max_rate = meter.max_rate if meter and meter.max_rate else spec.max_rate
            group = getattr(point, "poll_group", None)
            interval = device.poll_groups.get(group, device.poll_interval) if group \
                else device.poll_interval
            out.setdefault(device.id, {})[name] = Counter(
                device.id, name, commodity, unit, meter.household if meter else None,
                interval, False,
                CounterTracker(device.id, name, rollover=rollover, max_rate=max_rate),
                Rollups(calendar, gap, rollover),
                NightFlow(window) if commodity == "water" else None)
    for manual in energy.manual_meters:
        out[manual.id] = {MANUAL_POINT: Counter(
            manual.id, MANUAL_POINT, manual.commodity, manual.unit, manual.household, 0.0, True,
            CounterTracker(manual.id, MANUAL_POINT, rollover=manual.rollover),
            Rollups(calendar, gap, manual.rollover), None)}
    return out
