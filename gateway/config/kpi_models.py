"""Typed configuration for equipment KPIs: site.yaml `kpi:` (docs/equipment.md).

Intact-rate groups (完好率) put devices together by system, building or an explicit list
(the stairwell lamps, the booster pumps) and hold them to a target: 95 % by the company's
standard, 90 % by another one, so the target is a setting with 0.95 as the default. A
group below its target raises an alarm. Which alarm severities count as a device's
failure (for availability, MTBF and MTTR) is a setting too.

Whether a group names devices that exist can only be known once every device file is
read: `check_kpi` does that, each mistake a located config issue.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from gateway.config.errors import ConfigIssue, KeyPath
from gateway.config.types import Duration, Identifier, Model, Pause, Text

SeverityName = Literal["critical", "major", "minor", "warning"]


class IntactGroup(Model):
    """Devices whose working share is held to a target.

    Members are the devices listed in `devices:` plus every device matching `system:`
    and `building:` (both, when both are given). A group needs at least one of the three.
    """

    id: Identifier
    name: str | None = None
    system: str | None = None  # a profile's system: elevator, water_supply, lighting, ...
    building: Text | None = None  # a device's location.building
    devices: list[Identifier] = []
    target: float | None = Field(default=None, gt=0, le=1)  # None: kpi.intact_target
    alarm: bool = True  # raise <group>.intact_rate when the working share falls below target
    severity: SeverityName = "minor"
    delay: Pause = 0.0  # below target this long before the alarm is raised

    @model_validator(mode="after")
    def _selects(self) -> IntactGroup:
        if self.system is None and self.building is None and not self.devices:
            raise ValueError("a group needs devices:, system:, building:, or a combination")
        return self


class KpiConfig(Model):
    """site.yaml `kpi:`."""

    # alarms of these severities on a device are failures: it is out while one is active
    fault_severities: list[SeverityName] = ["critical", "major"]
    intact_target: float = Field(default=0.95, gt=0, le=1)  # 95 % working; another standard: 0.90
    warranty_notice: Duration = 30 * 86400.0  # a notice this long before a warranty ends
    worst_devices: int = Field(default=5, ge=1, le=100)  # how many the report names
    groups: list[IntactGroup] = []

    def target_of(self, group: IntactGroup) -> float:
        return group.target if group.target is not None else self.intact_target


def group_members(group: IntactGroup, devices: list[Any], profiles: dict[str, Any]) -> list[str]:
    """The device ids of `group`, in device-file order (listed ones first)."""
    chosen = list(dict.fromkeys(group.devices))
    if group.system is not None or group.building is not None:
        for device in devices:
            profile = profiles.get(device.profile)
            if group.system is not None and (profile is None or profile.system != group.system):
                continue
            if group.building is not None and device.location.building != group.building:
                continue
            if device.id not in chosen:
                chosen.append(device.id)
    return chosen


def check_kpi(site: Any, site_doc: Any, devices: list[Any], profiles: dict[str, Any], *,
              incomplete: bool = False) -> list[ConfigIssue]:
    """Every problem of `kpi.groups` against the whole site: unknown devices, ids taken by
    a device or an energy group (a group is a device of its own in readings), groups that
    select nothing. `incomplete`: a device or profile file was left out by its own
    mistake; what groups select is then not checked, lest a device that exists be reported
    unknown."""
    from gateway.config.explain import did_you_mean

    issues: list[ConfigIssue] = []
    device_ids = [d.id for d in devices]
    taken = {d: "device" for d in device_ids}
    taken.update({g.id: "energy group" for g in site.energy.groups})
    seen: dict[str, int] = {}
    systems = sorted({p.system for p in profiles.values()})
    buildings = sorted({d.location.building for d in devices if d.location.building})

    def issue(path: KeyPath, message: str) -> None:
        line = col = None
        if site_doc is not None:
            line, col = site_doc.locate(path)
        issues.append(ConfigIssue(getattr(site_doc, "path", None), line, col, path, message))

    for index, group in enumerate(site.kpi.groups):
        path: KeyPath = ("kpi", "groups", index)
        if group.id in taken:
            issue((*path, "id"), f"'{group.id}' is already a {taken[group.id]} id; an intact-rate "
                                 "group is a device of its own in readings, give it its own id")
        elif group.id in seen:
            issue((*path, "id"), f"group '{group.id}' is already groups[{seen[group.id]}]; "
                                 "group ids must be unique")
        else:
            seen[group.id] = index
        if incomplete:
            continue
        for i, device in enumerate(group.devices):
            if device not in device_ids:
                issue((*path, "devices", i), f"no device '{device}'{did_you_mean(device, device_ids)}")
        if group.system is not None and group.system not in systems:
            issue((*path, "system"), f"no profile has system '{group.system}'"
                                     f"{did_you_mean(group.system, systems)} (systems: {', '.join(systems)})")
        if group.building is not None and group.building not in buildings:
            issue((*path, "building"), f"no device is in building '{group.building}'"
                                       f"{did_you_mean(group.building, buildings)}")
        if not group_members(group, devices, profiles) and not any(
                i.path[:3] == path for i in issues):
            issue(path, "this group selects no device: with both system: and building:, a "
                        "device must match both")
    return issues
