"""The energy configuration checked against the whole site, each problem at its place.

A group names meters by device id (`water_b1_main`), by `device.point` when a device
has more than one counter of the group's commodity (`meter_b1_main.energy_import`), or
by a manual meter's id. Whether such a name is a meter, whether a `counter:` mark sits
on a number, whether a device's `meter:` block has a counter to describe, can only be
known once every profile, device and site.yaml are read; the loader calls
`check_energy` then, and every mistake is a located config issue like any other.

`site_meters` and `resolve_meter` are the one reading of "what is a meter of this
site" that the loader, the rule compiler, the energy stage and the ledger share.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.config.energy_models import MeterGroup, commodity_of_unit
from gateway.config.errors import ConfigError, ConfigIssue, KeyPath
from gateway.config.explain import did_you_mean
from gateway.config.yaml_source import YamlDocument, load_yaml
from gateway.energy.points import MANUAL_POINT

# BACnet objects whose present value is a number (a counter may live in one).
_BACNET_NUMERIC = ("accumulator", "analog-input", "analog-output", "analog-value", "averaging",
                   "integer-value", "large-analog-value", "positive-integer-value",
                   "pulse-converter")


@dataclass(frozen=True, slots=True)
class SiteMeter:
    """One counter of the site: a device's `counter:` point, or a manual meter.

    `device` is the device id (a manual meter's own id), `point` the counter point
    (`reading` for a manual meter). `key` is `device.point`, unique across the site.
    """

    device: str
    point: str
    commodity: str
    unit: str | None
    name: str | None
    household: str | None
    manual: bool
    enabled: bool
    rollover: float | None
    max_rate: float | None
    night_flow_threshold: float | None

    @property
    def key(self) -> str:
        return f"{self.device}.{self.point}"


def counter_commodity(point: Any) -> str | None:
    """What a point marked `counter:` counts: the mark's commodity, else its unit's."""
    spec = getattr(point, "counter", None)
    if spec is None:
        return None
    return spec.commodity or commodity_of_unit(getattr(point, "unit", None))


def profile_counters(profile: Any) -> dict[str, str]:
    """The counter points of a profile → their commodity (those whose commodity is known)."""
    out: dict[str, str] = {}
    for name, point in profile.points.items():
        commodity = counter_commodity(point)
        if commodity is not None:
            out[name] = commodity
    return out


def site_meters(config: Any) -> list[SiteMeter]:
    """Every counter of the site, devices first (in file order), then manual meters.

    Disabled devices are included (`enabled` False): they are meters of the site, a
    group may name them, their past readings are still in the ledger.
    """
    meters: list[SiteMeter] = []
    for device in config.devices:
        profile = config.profiles.get(device.profile)
        if profile is None:
            continue
        meter = device.meter
        for name, commodity in profile_counters(profile).items():
            point = profile.points[name]
            spec = point.counter
            meters.append(SiteMeter(
                device=device.id, point=name, commodity=commodity, unit=point.unit,
                name=device.name, household=meter.household if meter else None, manual=False,
                enabled=device.enabled, rollover=spec.rollover,
                max_rate=(meter.max_rate if meter and meter.max_rate else spec.max_rate),
                night_flow_threshold=meter.night_flow_threshold if meter else None,
            ))
    for manual in config.energy.manual_meters:
        meters.append(SiteMeter(
            device=manual.id, point=MANUAL_POINT, commodity=manual.commodity, unit=manual.unit,
            name=manual.name, household=manual.household, manual=True, enabled=True,
            rollover=manual.rollover, max_rate=None, night_flow_threshold=None,
        ))
    return meters


def resolve_meter(name: str, commodity: str | None, meters: Iterable[SiteMeter]) -> SiteMeter | str:
    """The meter `name` means (for a group of `commodity`, None: any), or why it means none.

    `device` alone means the device's one counter of that commodity; `device.point`
    names the counter. Device ids may contain dots, so the longest device id the name
    starts with wins.
    """
    meters = list(meters)
    by_device: dict[str, list[SiteMeter]] = {}
    for meter in meters:
        by_device.setdefault(meter.device, []).append(meter)
    if name in by_device:
        device, point = name, None
    else:
        owners = [d for d in by_device if name.startswith(d + ".")]
        if not owners:
            known = sorted({*by_device, *(m.key for m in meters)})
            return f"'{name}' is not a meter of the site{did_you_mean(name, known)}"
        device = max(owners, key=len)
        point = name[len(device) + 1:]
    counters = by_device[device]
    if point is not None:
        found = next((m for m in counters if m.point == point), None)
        if found is None:
            listed = ", ".join(m.point for m in counters)
            return (f"'{point}' is not a counter of {device} (its counters: {listed})"
                    f"{did_you_mean(point, [m.point for m in counters])}")
        if commodity is not None and found.commodity != commodity:
            return f"{name} counts {found.commodity}, not {commodity}"
        return found
    fitting = [m for m in counters if commodity is None or m.commodity == commodity]
    if len(fitting) == 1:
        return fitting[0]
    if not fitting:
        what = ", ".join(f"{m.point} ({m.commodity})" for m in counters)
        return f"{device} has no {commodity} counter (its counters: {what})"
    choices = " or ".join(m.key for m in fitting)
    return f"{device} has {len(fitting)} {commodity or ''} counters; write {choices}".replace("  ", " ")


def group_meters(group: MeterGroup, meters: Iterable[SiteMeter]) -> tuple[SiteMeter | None, list[SiteMeter]]:
    """A valid group's master and members as meters (names that do not resolve are left out:
    the loader has reported them)."""
    meters = list(meters)
    master = resolve_meter(group.master, group.commodity, meters) if group.master else None
    members = [resolve_meter(m, group.commodity, meters) for m in group.members]
    return (master if isinstance(master, SiteMeter) else None,
            [m for m in members if isinstance(m, SiteMeter)])


def water_night_threshold(meter: SiteMeter, config: Any) -> float:
    """The night minimum flow (m³/h) above which a water meter is suspected of a leak."""
    if meter.night_flow_threshold is not None:
        return meter.night_flow_threshold
    return float(config.energy.night_flow_threshold)


# --- checks -----------------------------------------------------------------------------


class _Documents:
    """Device files read again to locate a device's `meter:` (the loader keeps profile
    and site documents, not device files; they are small)."""

    def __init__(self) -> None:
        self._cache: dict[str, YamlDocument | None] = {}

    def get(self, file: str | Path | None) -> YamlDocument | None:
        if file is None:
            return None
        key = str(file)
        if key not in self._cache:
            try:
                self._cache[key] = load_yaml(key)
            except (ConfigError, OSError):
                self._cache[key] = None
        return self._cache[key]


def _issue(document: YamlDocument | None, file: str | Path | None, path: KeyPath, message: str,
           *, key: bool = False) -> ConfigIssue:
    if document is None:
        return ConfigIssue(file, None, None, path, message)
    line, col = document.locate(path, key=key)
    return ConfigIssue(document.path, line, col, path, message)


def check_energy(site: Any, site_doc: YamlDocument, profiles: dict[str, Any], devices: list[Any],
                 profile_docs: dict[str, YamlDocument], *, incomplete: bool = False) -> list[ConfigIssue]:
    """Every problem in the site's counters, meters, groups and manual meters.

    `incomplete`: a profile or device was left out by its own mistake; group members
    are then not checked, lest a meter that exists be reported as unknown.
    """
    issues: list[ConfigIssue] = []
    for profile in profiles.values():
        issues += _check_counters(profile, profile_docs.get(profile.id))
    documents = _Documents()
    for device in devices:
        if device.meter is not None:
            issues += _check_meter_block(device, profiles.get(device.profile), documents)
    energy = site.energy
    config = site.model_copy(update={"profiles": profiles, "devices": devices})
    meters = site_meters(config)
    device_ids = {d.id for d in devices}
    issues += _check_manual(energy, site_doc, device_ids)
    issues += _check_groups(energy, site_doc, device_ids, meters, incomplete)
    return issues


def _check_counters(profile: Any, document: YamlDocument | None) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    for name, point in profile.points.items():
        spec = getattr(point, "counter", None)
        if spec is None:
            continue
        at: KeyPath = ("points", name, "counter")
        why = _not_numeric(point)
        if why is not None:
            issues.append(_issue(document, profile.source, at, f"counter: marks a cumulative "
                                 f"number (kWh, m³); {name} {why}", key=True))
            continue
        if counter_commodity(point) is None:
            unit = f"its unit {point.unit!r} does not say" if point.unit else "it has no unit:"
            issues.append(_issue(document, profile.source, at, f"what does {name} count? {unit}; "
                                 "write counter: {commodity: water} (electricity, water, gas "
                                 "or heat), or give it unit: kWh or m³", key=True))
    return issues


def _not_numeric(point: Any) -> str | None:
    """Why a point cannot be a counter, or None when it is a number."""
    if getattr(point, "enum", None):
        return "has enum: (codes with meanings, not a quantity)"
    if hasattr(point, "object"):  # BACnet
        kind = str(point.object).replace(":", ",").split(",")[0].strip()
        return None if kind in _BACNET_NUMERIC else f"is a {kind} object, not a number"
    kind = getattr(point, "type", None)
    if hasattr(point, "topic"):  # MQTT
        return None if kind in ("number", "integer") else f"is of type {kind}, not a number"
    return None if kind not in ("bool", "string") else f"is of type {kind}, not a number"


def _check_meter_block(device: Any, profile: Any, documents: _Documents) -> list[ConfigIssue]:
    if profile is None:
        return []
    document = documents.get(device.source)
    prefix = _device_path(document, device.id)
    counters = profile_counters(profile)
    issues: list[ConfigIssue] = []
    if not counters:
        issues.append(_issue(document, device.source, (*prefix, "meter"), f"{device.id} has no "
                             f"counter: its profile {profile.id} marks no point with counter:, so "
                             "there is no reading to describe; mark the cumulative point (kWh, m³) "
                             "with counter: in the profile, or remove meter:", key=True))
        return issues
    meter = device.meter
    if meter.household is not None and not meter.household.strip():
        issues.append(_issue(document, device.source, (*prefix, "meter", "household"),
                             "household is empty; write the unit it serves, e.g. 3-2-1201"))
    if meter.night_flow_threshold is not None and "water" not in counters.values():
        issues.append(_issue(document, device.source, (*prefix, "meter", "night_flow_threshold"),
                             f"night_flow_threshold is for water meters; {device.id}'s counters "
                             f"count {', '.join(sorted(set(counters.values())))}", key=True))
    return issues


def _device_path(document: YamlDocument | None, device_id: str) -> KeyPath:
    """("devices", index) of a device in its file, or ("devices",) when not found."""
    entries = document.data.get("devices") if document and isinstance(document.data, dict) else None
    for index, entry in enumerate(entries if isinstance(entries, list) else []):
        if isinstance(entry, dict) and entry.get("id") == device_id:
            return ("devices", index)
    return ("devices",)


def _check_manual(energy: Any, document: YamlDocument, device_ids: set[str]) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    seen: dict[str, int] = {}
    for index, manual in enumerate(energy.manual_meters):
        path: KeyPath = ("energy", "manual_meters", index)
        if manual.id in device_ids:
            issues.append(_issue(document, document.path, (*path, "id"), f"'{manual.id}' is already "
                                 "a device id; a manual meter needs an id of its own"))
        elif manual.id in seen:
            issues.append(_issue(document, document.path, (*path, "id"), f"manual meter "
                                 f"'{manual.id}' is already manual_meters[{seen[manual.id]}]; "
                                 "manual meter ids must be unique"))
        else:
            seen[manual.id] = index
        if manual.household is not None and not manual.household.strip():
            issues.append(_issue(document, document.path, (*path, "household"),
                                 "household is empty; write the unit it serves, e.g. 3-2-1201"))
    return issues


def _check_groups(energy: Any, document: YamlDocument, device_ids: set[str],
                  meters: list[SiteMeter], incomplete: bool) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    manual_ids = {m.id for m in energy.manual_meters}
    seen: dict[str, int] = {}
    for index, group in enumerate(energy.groups):
        path: KeyPath = ("energy", "groups", index)
        if group.id in device_ids or group.id in manual_ids:
            what = "device" if group.id in device_ids else "manual meter"
            issues.append(_issue(document, document.path, (*path, "id"), f"'{group.id}' is already "
                                 f"a {what} id; a group is a device of its own in readings and "
                                 "rules, so it needs its own id (e.g. b1_water)"))
        elif group.id in seen:
            issues.append(_issue(document, document.path, (*path, "id"), f"group '{group.id}' is "
                                 f"already groups[{seen[group.id]}]; group ids must be unique"))
        else:
            seen[group.id] = index
        if incomplete:
            continue
        issues += _check_group_meters(group, path, document, meters)
    return issues


def _check_group_meters(group: MeterGroup, path: KeyPath, document: YamlDocument,
                        meters: list[SiteMeter]) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    named: list[tuple[KeyPath, str]] = []
    if group.master is not None:
        named.append(((*path, "master"), group.master))
    named += [((*path, "members", i), name) for i, name in enumerate(group.members)]
    used: dict[str, tuple[KeyPath, str]] = {}
    for at, name in named:
        found = resolve_meter(name, group.commodity, meters)
        if isinstance(found, str):
            issues.append(_issue(document, document.path, at, f"{found}; a group's master and "
                                 f"members are {group.commodity} meters: a device with a "
                                 "counter: point, device.point, or a manual meter"))
            continue
        if found.key in used:
            first_at, first_name = used[found.key]
            where = "the master" if first_at[-1] == "master" else f"members[{first_at[-1]}]"
            also = "" if first_name == name else f" ({first_name})"
            issues.append(_issue(document, document.path, at, f"{name} is already {where}{also} "
                                 "of this group; a meter counts once in a group"))
            continue
        used[found.key] = (at, name)
    return issues
