"""The site's equipment KPIs over one period: per device, system, building, intact-rate
group and the whole site, from the ledger.

Devices are the configuration's enabled devices (a disabled one is out of service on
purpose: it counts nowhere). Systems are the profiles' `system:`, buildings the devices'
`location.building`. The same functions serve the daily KPIs the stage sends and the
monthly report, so both say the same thing about the same day.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.config.kpi_models import group_members
from gateway.equipment.kpi import Kpi, device_kpi, pooled, worst
from gateway.equipment.store import Entry, LedgerReader, Session
from gateway.equipment.timeline import Timeline, build


@dataclass(frozen=True, slots=True)
class Subject:
    """A device as the KPIs group it."""

    id: str
    name: str
    system: str
    building: str | None


@dataclass(frozen=True, slots=True)
class Group:
    """An intact-rate group, resolved: its members and its target."""

    id: str
    name: str
    members: tuple[str, ...]
    target: float
    alarm: bool
    severity: str
    delay: float


def subjects(config: Any) -> dict[str, Subject]:
    """The site's enabled devices, in file order."""
    out = {}
    for d in config.devices:
        if not d.enabled:
            continue
        profile = config.profiles.get(d.profile)
        out[d.id] = Subject(d.id, d.name or d.id, profile.system if profile else "",
                            d.location.building)
    return out


def groups(config: Any) -> list[Group]:
    """The configured intact-rate groups with their enabled members."""
    enabled = {d.id for d in config.devices if d.enabled}
    kpi = config.kpi
    return [Group(g.id, g.name or g.id,
                  tuple(m for m in group_members(g, config.devices, config.profiles) if m in enabled),
                  kpi.target_of(g), g.alarm, g.severity, g.delay)
            for g in kpi.groups]


def timelines(reader: LedgerReader, devices: Iterable[str], start: float, end: float,
              severities: Iterable[str], sessions: Sequence[Session] | None = None) -> dict[str, Timeline]:
    """Every device's timeline over [start, end); entries up to the newest are read so that
    failures beginning in the window are seen to their end."""
    sessions = reader.sessions() if sessions is None else sessions
    severities = tuple(severities)
    by_device: dict[str, list[Entry]] = {}
    for e in reader.state_before(start) + reader.entries(start=start):
        by_device.setdefault(e.device, []).append(e)
    return {d: build(d, by_device.get(d, []), sessions, start, end, severities) for d in devices}


@dataclass(slots=True)
class GroupKpi:
    group: Group
    kpi: Kpi

    @property
    def rate(self) -> float | None:
        return self.kpi.availability

    @property
    def below(self) -> bool:
        return self.rate is not None and self.rate < self.group.target


@dataclass(slots=True)
class SiteKpis:
    start: float
    end: float
    devices: dict[str, Kpi]
    systems: dict[str, Kpi]
    buildings: dict[str, Kpi]
    site: Kpi
    groups: list[GroupKpi]
    worst: list[Kpi] = field(default_factory=list)


def site_kpis(subjects_: dict[str, Subject], groups_: Sequence[Group],
              lines: dict[str, Timeline], start: float, end: float, worst_n: int = 5) -> SiteKpis:
    """Per device, system, building, group and site over [start, end) (within the timelines)."""
    devices = {d: device_kpi(lines[d], start, end) for d in subjects_ if d in lines}
    by_system: dict[str, list[Kpi]] = {}
    by_building: dict[str, list[Kpi]] = {}
    for d, k in devices.items():
        s = subjects_[d]
        by_system.setdefault(s.system or "-", []).append(k)
        if s.building:
            by_building.setdefault(s.building, []).append(k)
    return SiteKpis(
        start, end, devices,
        {name: pooled(name, ks) for name, ks in by_system.items()},
        {name: pooled(name, ks) for name, ks in by_building.items()},
        pooled("site", devices.values()),
        [GroupKpi(g, pooled(g.id, [devices[m] for m in g.members if m in devices])) for g in groups_],
        worst(devices.values(), worst_n),
    )
