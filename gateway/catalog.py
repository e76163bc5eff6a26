"""What sinks need to know about devices and points: tags, units, display names.

Built once from the configuration so sinks never reach into config models.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.config.models import ReportPolicy, SiteConfig
from gateway.config.rule_models import Rule
from rules.compile import compile_rules


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    id: str
    name: str | None
    profile: str
    system: str
    tags: dict[str, str]  # site, building, floor, room, system, device (empty ones left out)
    units: dict[str, str] = field(default_factory=dict)  # point -> unit, where it has one
    point_names: dict[str, str] = field(default_factory=dict)  # point -> display name
    enums: dict[str, dict[int, str]] = field(default_factory=dict)  # point -> code -> text
    # point -> its own upstream report-by-exception policy; others use the site default
    reports: dict[str, ReportPolicy] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Catalog:
    site_id: str
    site_name: str
    devices: dict[str, DeviceInfo]

    def device(self, device_id: str) -> DeviceInfo:
        """Info for a device; one the config no longer knows gets site tags only."""
        info = self.devices.get(device_id)
        if info is None:
            info = DeviceInfo(device_id, None, "", "", {"site": self.site_id, "device": device_id})
        return info

    @classmethod
    def from_config(cls, config: SiteConfig) -> Catalog:
        devices: dict[str, DeviceInfo] = {}

        # derived points (rules with derive:), wherever they were written, by device
        derived_by_device = compile_rules(config).derived_points()

        def derived(device_id: str) -> list[Rule]:
            return [compiled.rule for compiled in derived_by_device.get(device_id, [])]

        # units, names, enums and report policies are the profile's: one set of dicts per
        # profile, shared by its devices (a thousand meters, not a thousand copies), and
        # copied only for a device whose rules derive points of its own
        per_profile: dict[str, tuple[dict, dict, dict, dict]] = {}
        for device in config.devices:
            profile = config.profiles[device.profile]
            if profile.id not in per_profile:
                per_profile[profile.id] = (
                    {p: pt.unit for p, pt in profile.points.items() if pt.unit},
                    {p: pt.name for p, pt in profile.points.items() if pt.name},
                    {p: pt.enum for p, pt in profile.points.items() if pt.enum},
                    {p: pt.report for p, pt in profile.points.items() if pt.report},
                )
            units, names, enums, reports = per_profile[profile.id]
            own = derived(device.id)
            if own:
                units = {**units, **{r.id: r.unit for r in own if r.unit}}
                names = {**names, **{r.id: r.name for r in own if r.name}}
            tags = {
                "site": config.site.id,
                "building": device.location.building,
                "floor": device.location.floor,
                "room": device.location.room,
                "system": profile.system,
                "device": device.id,
            }
            devices[device.id] = DeviceInfo(
                id=device.id,
                name=device.name,
                profile=profile.id,
                system=profile.system,
                tags={k: v for k, v in tags.items() if v},
                units=units,
                point_names=names,
                enums=enums,
                reports=reports,
            )
        return cls(config.site.id, config.site.name, devices)
