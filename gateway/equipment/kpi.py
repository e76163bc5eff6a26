"""Equipment KPIs from timelines: availability with the periods out and why, failures,
MTBF, MTTR, intact rates, the devices that fail most. The formulas (docs/equipment.md):

- observed = period − unknown; down = maintenance + fault + offline (each moment counted
  once, under the first reason that applies); up = observed − down;
- availability = up / observed (None when nothing was observed);
- failures = failures that began in the period;
- MTBF = up / failures (None without a failure);
- MTTR = mean duration of the failures that began in the period and have ended (each
  whole, even when it ended after the period); None when none has ended;
- a set of devices (a system, a building, the site, an intact-rate group) pools its
  members: availability = Σ up / Σ observed, MTBF = Σ up / Σ failures, MTTR the mean over
  all their ended failures. For an intact-rate group this pooled availability is the
  intact rate: the time-average of (devices working / devices observed).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from gateway.equipment.timeline import (
    DOWN_OFFLINE,
    DOWN_STATES,
    FAULT,
    MAINTENANCE,
    UNKNOWN,
    UP,
    Failure,
    Segment,
    Timeline,
)


@dataclass(slots=True)
class Outage:
    """A span out of service: consecutive down segments, with every reason and alarm seen."""

    device: str
    start: float
    end: float
    reasons: list[str]
    alarms: list[str]

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(slots=True)
class Kpi:
    """One device (or a pooled set of devices) over one period; times in seconds."""

    name: str
    start: float
    end: float
    devices: int = 1
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys((UP, *DOWN_STATES, UNKNOWN), 0.0))
    failures: list[Failure] = field(default_factory=list)
    outages: list[Outage] = field(default_factory=list)

    @property
    def period(self) -> float:
        return sum(self.seconds.values())

    @property
    def observed(self) -> float:
        return self.period - self.seconds[UNKNOWN]

    @property
    def up(self) -> float:
        return self.seconds[UP]

    @property
    def down(self) -> float:
        return sum(self.seconds[s] for s in DOWN_STATES)

    @property
    def availability(self) -> float | None:
        return self.up / self.observed if self.observed > 0 else None

    @property
    def repaired(self) -> list[Failure]:
        return [f for f in self.failures if f.end is not None]

    @property
    def mtbf(self) -> float | None:
        return self.up / len(self.failures) if self.failures else None

    @property
    def mttr(self) -> float | None:
        done = self.repaired
        return sum(f.duration for f in done) / len(done) if done else None  # type: ignore[misc]

    def summary(self) -> dict[str, object]:
        """The figures as the kpi event and the report carry them (hours, rounded)."""
        return {
            "availability": _round(self.availability, 6),
            "observed_h": _hours(self.observed),
            "up_h": _hours(self.up),
            "down_h": {s: _hours(self.seconds[s]) for s in DOWN_STATES},
            "unknown_h": _hours(self.seconds[UNKNOWN]),
            "failures": len(self.failures),
            "mtbf_h": _hours(self.mtbf),
            "mttr_h": _hours(self.mttr),
        }


def _round(value: float | None, places: int) -> float | None:
    return None if value is None else round(value, places)


def _hours(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds / 3600.0, 4)


def device_kpi(timeline: Timeline, start: float | None = None, end: float | None = None) -> Kpi:
    """The KPIs of a timeline over [start, end) within it (default: the whole timeline)."""
    a = timeline.start if start is None else max(start, timeline.start)
    b = timeline.end if end is None else min(end, timeline.end)
    kpi = Kpi(timeline.device, a, b)
    clipped = [Segment(max(s.start, a), min(s.end, b), s.state, s.alarms)
               for s in timeline.segments if s.end > a and s.start < b]
    covered = 0.0
    for s in clipped:
        kpi.seconds[s.state] += s.end - s.start
        covered += s.end - s.start
    kpi.seconds[UNKNOWN] += max(0.0, (b - a) - covered)  # no segment: nothing known
    kpi.failures = [f for f in timeline.failures if a <= f.start < b]
    kpi.outages = outages(timeline.device, clipped)
    return kpi


def outages(device: str, segments: Sequence[Segment]) -> list[Outage]:
    """Consecutive down segments as one outage each, with their reasons in precedence order."""
    out: list[Outage] = []
    for s in segments:
        if s.state not in DOWN_STATES:
            continue
        if out and out[-1].end == s.start:
            o = out[-1]
            o.end = s.end
            if s.state not in o.reasons:
                o.reasons.append(s.state)
                o.reasons.sort(key=DOWN_STATES.index)
            o.alarms += [a for a in s.alarms if a not in o.alarms]
        else:
            out.append(Outage(device, s.start, s.end, [s.state], list(s.alarms)))
    return out


def pooled(name: str, kpis: Iterable[Kpi]) -> Kpi:
    """Several devices' KPIs as one set (see the module docstring)."""
    kpis = list(kpis)
    start = min((k.start for k in kpis), default=0.0)
    end = max((k.end for k in kpis), default=0.0)
    total = Kpi(name, start, end, devices=len(kpis))
    for k in kpis:
        for state, seconds in k.seconds.items():
            total.seconds[state] += seconds
        total.failures += k.failures
        total.outages += k.outages
    total.failures.sort(key=lambda f: f.start)
    total.outages.sort(key=lambda o: o.start)
    return total


def worst(kpis: Iterable[Kpi], n: int) -> list[Kpi]:
    """The devices that failed most: by failures, then time down for faults, then time down;
    devices without a failure or a fault are not named."""
    ranked = [k for k in kpis if k.failures or k.seconds[FAULT] > 0]
    ranked.sort(key=lambda k: (-len(k.failures), -k.seconds[FAULT], -k.down, k.name))
    return ranked[:n]


def live_intact(states: dict[str, str]) -> tuple[int, int, float | None]:
    """(working, observed, rate) of a group from its members' current states: devices
    the gateway has no state for yet are left out; None when none is observed."""
    observed = [s for s in states.values() if s != UNKNOWN]
    working = sum(1 for s in observed if s == UP)
    return working, len(observed), (working / len(observed) if observed else None)


__all__ = ["Kpi", "Outage", "device_kpi", "outages", "pooled", "worst", "live_intact",
           "UP", "FAULT", "MAINTENANCE", "DOWN_OFFLINE", "UNKNOWN"]
