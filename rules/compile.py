"""Rules from the configuration, compiled once: every expression checked against the
points it may read, each profile rule instantiated for every device of its profile.

The loader calls `compile_rules` with a `locate` function so every problem is a config
issue at its file, line and column; the engine calls it again on the validated config
to get the rules it runs (compiling is cheap and keeps the config models plain data).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from gateway.config.energy_loader import (
    group_meters,
    profile_counters,
    site_meters,
    water_night_threshold,
)
from gateway.config.errors import ConfigIssue, KeyPath, display_path
from gateway.config.models import Device, Profile, SiteConfig
from gateway.config.rule_models import AlarmSpec, MaintenanceTask, Rule, TicketSpec
from gateway.energy.points import MANUAL_POINT, group_points, meter_points
from rules.alarms.message import check_template
from rules.expression import Expression, ExpressionError, Source, compile_expression

# Where a value was written: (file, key path) -> Source (file, line, col, path) of its
# first character, or None.
Locate = Callable[[str | Path | None, KeyPath], Source | None]
# Where a character of a text value was written: (file, key path, line, col inside the
# value) -> Source, or None. Exact also on a later line of a multi-line value.
Place = Callable[[str | Path | None, KeyPath, int, int], Source | None]


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """One rule running for one device.

    `id` is `<device>.<rule id>`: the alarm's id, or the derived point's full name.
    `scope` is the device bare point names mean (profile rules), None for site rules,
    whose expressions name `device.point`. `inputs` are full `device.point` names.
    """

    id: str
    rule: Rule
    device: str
    scope: str | None
    when: Expression | None
    clear: Expression | None
    derive: Expression | None
    inputs: frozenset[str]
    windows: dict[str, float]
    timed: bool
    template_points: frozenset[str] = frozenset()
    origin: str = ""  # "profiles/booster_pump.yaml rules[0]", for logs

    @property
    def name(self) -> str:
        return self.rule.name or self.rule.id

    @property
    def expressions(self) -> list[Expression]:
        return [e for e in (self.when, self.clear, self.derive) if e is not None]


@dataclass(frozen=True, slots=True)
class PlannedTask:
    """One maintenance task for one device or asset (calendar or usage)."""

    device: str  # a device id, or an asset id for things the gateway does not poll
    task: MaintenanceTask
    origin: str = ""


@dataclass(slots=True)
class CompiledSite:
    rules: list[CompiledRule] = field(default_factory=list)
    plans: list[PlannedTask] = field(default_factory=list)
    issues: list[ConfigIssue] = field(default_factory=list)
    # Generated energy rules left out because a written rule has their id on that device
    # (the written one runs instead): "water_b1_main.night_leak: ..." for logs.
    replaced: list[str] = field(default_factory=list)

    def derived_points(self) -> dict[str, list[CompiledRule]]:
        """device → its derive rules, in the order they are written."""
        out: dict[str, list[CompiledRule]] = {}
        for rule in self.rules:
            if rule.derive is not None:
                out.setdefault(rule.device, []).append(rule)
        return out


def energy_point_names(profile: Profile) -> set[str]:
    """The points the energy stage adds to each device of a profile: rollups, their
    estimated flags and (water) the night flow of every counter point."""
    return {name for counter, commodity in profile_counters(profile).items()
            for name in meter_points(counter, commodity)}


def profile_point_names(profile: Profile) -> set[str]:
    """What a profile rule may read: the profile's points, its derived points and the
    energy stage's points of its counters."""
    return (set(profile.points) | {r.id for r in profile.rules if r.derive is not None}
            | energy_point_names(profile))


def compile_rules(config: SiteConfig, locate: Locate | None = None, *,
                  place: Place | None = None) -> CompiledSite:
    """Every rule and maintenance task of the site; problems in `issues`, never raised.

    Rules are checked for every device, enabled or not (a disabled device is still a
    device of the site), but run, and plans are made, only for enabled devices: a device
    that is not polled has no values to watch. `place`, when given, locates an error
    inside an expression or message at its exact character, also on a later line of a
    multi-line value.
    """
    site = CompiledSite()
    where = _Where(locate, place)
    points = _PointMap.of(config)
    for profile in config.profiles.values():
        _profile(site, profile, [d for d in config.devices if d.profile == profile.id], where)
    site_rules = [(rule_file.source, index, rule) for rule_file in config.rule_files
                  for index, rule in enumerate(rule_file.rules)]
    names = _Names.of(config, points)  # before site derived points join the map
    points.add_site_derived(site_rules)
    for file, index, rule in site_rules:
        _site_rule(site, rule, index, file, points, names, where)
    for rule, device, scope in energy_rules(config):  # after the written ones: they yield
        _generated(site, rule, device, scope, points, names)
    planned = {(p.device, p.task.task) for p in site.plans}
    for rule_file in config.rule_files:
        for index, task in enumerate(rule_file.maintenance):
            _site_task(site, task, index, rule_file.source, config, points, planned, where)
    return site


class _Where:
    """Where problems go: each a ConfigIssue at the value, or at the exact character."""

    def __init__(self, locate: Locate | None, place: Place | None) -> None:
        self.locate = locate
        self.place = place

    def source(self, file: str | Path | None, path: KeyPath) -> Source | None:
        return self.locate(file, path) if self.locate is not None else None

    def issue(self, site: CompiledSite, file: str | Path | None, path: KeyPath, message: str) -> None:
        """An issue at the value `path` leads to (its first character for text)."""
        found = self.source(file, path)
        if found is None:
            site.issues.append(ConfigIssue(file, None, None, path, message))
        else:
            site.issues.append(ConfigIssue(found.file, found.line, found.col, path, message))

    def issue_in_text(self, site: CompiledSite, file: str | Path | None, path: KeyPath,
                      line: int, col: int, message: str) -> None:
        """An issue at the character (line, col) of the text value at `path`."""
        found = self.place(file, path, line, col) if self.place is not None else None
        if found is None:
            self.issue(site, file, path, message)
        else:
            site.issues.append(ConfigIssue(found.file, found.line, found.col, path, message))

    def expression_issue(self, site: CompiledSite, file: str | Path | None, path: KeyPath,
                         error: ExpressionError) -> None:
        """An expression's error at its character; without `place`, as the error locates
        itself (exact on the expression's first line)."""
        found = self.place(file, path, error.line, error.col) if self.place is not None else None
        if found is not None:
            site.issues.append(ConfigIssue(found.file, found.line, found.col, path, error.message))
            return
        issue = error.to_issue()
        if issue.file is None:
            issue = ConfigIssue(file, None, None, path, issue.message)
        site.issues.append(issue)


@dataclass(slots=True)
class _PointMap:
    """Every point a site rule may read, `device.point` → its device.

    Ids may contain dots, so the device of a full name is looked up, never split off.
    `virtual` are the energy stage's devices that are not polled: meter groups (their
    consumption and loss points) and manual meters (`reading` and its rollups). Site
    rules may name them like devices; maintenance plans may not (nothing to maintain).
    """

    devices: dict[str, Device]
    owner: dict[str, str] = field(default_factory=dict)
    virtual: dict[str, str] = field(default_factory=dict)  # id → "meter group", "manual meter"

    @classmethod
    def of(cls, config: SiteConfig) -> _PointMap:
        points = cls({d.id: d for d in config.devices})
        for device in config.devices:
            profile = config.profiles.get(device.profile)
            for point in profile_point_names(profile) if profile is not None else ():
                points.owner[f"{device.id}.{point}"] = device.id
        energy = getattr(config, "energy", None)
        for manual in energy.manual_meters if energy is not None else ():
            if manual.id in points.devices or manual.id in points.virtual:
                continue  # the loader reports the clash
            points.virtual[manual.id] = "manual meter"
            for point in (MANUAL_POINT, *meter_points(MANUAL_POINT, manual.commodity)):
                points.owner[f"{manual.id}.{point}"] = manual.id
        for group in energy.groups if energy is not None else ():
            if group.id in points.devices or group.id in points.virtual:
                continue
            points.virtual[group.id] = "meter group"
            for point in group_points(group.master is not None, bool(group.members)):
                points.owner[f"{group.id}.{point}"] = group.id
        return points

    def known(self, device: str) -> bool:
        """Whether site rules may name `device`: a device of the site, a group or a manual meter."""
        return device in self.devices or device in self.virtual

    def enabled(self, device: str) -> bool:
        """Whether `device` has values: polled, or (groups, manual meters) always."""
        return device in self.virtual or (device in self.devices and self.devices[device].enabled)

    def device_of(self, name: str) -> str | None:
        """The device a full point name belongs to; for a name not (yet) known, the
        longest device id it starts with."""
        if name in self.owner:
            return self.owner[name]
        candidates = [d for d in (*self.devices, *self.virtual) if name.startswith(d + ".")]
        return max(candidates, key=len) if candidates else None

    def of_device(self, device: str) -> set[str]:
        """A device's point names as its messages write them (without the device)."""
        return {name[len(device) + 1:] for name, owner in self.owner.items() if owner == device}

    def add_site_derived(self, rules: list[tuple[str | None, int, Rule]]) -> None:
        """Points the site rule files derive, so any site rule may read them.

        A derived point clashing with a point is reported where its rule is compiled.
        """
        for _file, _index, rule in rules:
            if rule.derive is None:
                continue
            device = rule.device or self.first_device(rule)
            if device is not None and self.known(device):
                self.owner.setdefault(f"{device}.{rule.id}", device)

    def first_device(self, rule: Rule,
                     compiled: tuple[Expression | None, ...] | None = None) -> str | None:
        """The first device a rule's expressions name, in the order they are written."""
        if compiled is None:
            try:
                compiled = tuple(compile_expression(text) for text in (rule.when, rule.clear, rule.derive)
                                 if text is not None)
            except ExpressionError:
                return None
        for expression in compiled:
            for name in expression.windows if expression is not None else ():
                device = self.device_of(name)
                if device is not None:
                    return device
        return None


@dataclass(slots=True)
class _Names:
    """What site rules may not reuse on a device: its rules' ids (a profile's, or an
    earlier site rule's; an alarm id or derived point would be ambiguous) and, for a
    derived point, its read points."""

    rules: dict[str, str] = field(default_factory=dict)  # `device.rule` → where it is written
    points: set[str] = field(default_factory=set)  # `device.point` read from the device

    @classmethod
    def of(cls, config: SiteConfig, points: _PointMap) -> _Names:
        names = cls()
        # a group's or manual meter's points are the energy stage's: not to be derived
        names.points |= {name for name, owner in points.owner.items() if owner in points.virtual}
        for device in config.devices:
            profile = config.profiles.get(device.profile)
            if profile is None:
                continue
            names.points |= {f"{device.id}.{point}"
                             for point in (*profile.points, *energy_point_names(profile))}
            for index, rule in enumerate(profile.rules):
                names.rules.setdefault(f"{device.id}.{rule.id}",
                                       f"rules[{index}] of profile {profile.id}")
        return names

    def clash(self, rule: Rule, device: str) -> str | None:
        """Why `rule` cannot be `device.<rule id>`, or None when it can."""
        name = f"{device}.{rule.id}"
        if name in self.rules:
            return (f"device {device} already has a rule '{rule.id}' ({self.rules[name]}); "
                    "give this one another id")
        if rule.derive is not None and name in self.points:
            return f"'{rule.id}' is already a point of {device}; a derived point needs its own name"
        return None


def _profile(site: CompiledSite, profile: Profile, devices: list[Device], where: _Where) -> None:
    names = profile_point_names(profile)
    file = profile.source
    enabled = [d for d in devices if d.enabled]
    seen: dict[str, int] = {}
    for index, rule in enumerate(profile.rules):
        path: KeyPath = ("rules", index)
        if rule.id in seen:
            where.issue(site, file, (*path, "id"), f"rule id '{rule.id}' is already used by "
                        f"rules[{seen[rule.id]}]; rule ids are unique within a profile")
            continue
        seen[rule.id] = index
        if rule.derive is not None and rule.id in profile.points:
            where.issue(site, file, (*path, "id"), f"'{rule.id}' is already a point of this "
                        "profile; a derived point needs its own name")
            continue
        if rule.derive is not None and rule.id in energy_point_names(profile):
            where.issue(site, file, (*path, "id"), f"'{rule.id}' is a point the energy stage "
                        "adds to this profile's meters; a derived point needs its own name")
            continue
        if rule.device is not None:
            where.issue(site, file, (*path, "device"), "a profile rule runs for every device "
                        "of the profile; device: belongs in site rule files")
            continue
        compiled = _expressions(site, rule, path, file, names, where)
        templates = _template(site, rule, path, file, names, where)
        if compiled is None or templates is None or not rule.enabled:
            continue
        for device in enabled:
            site.rules.append(_instance(rule, device.id, device.id, compiled, templates,
                                        f"{file} rules[{index}]"))
    _profile_tasks(site, profile, enabled, names, where)


def _profile_tasks(site: CompiledSite, profile: Profile, devices: list[Device], names: set[str],
                   where: _Where) -> None:
    file = profile.source
    seen: dict[str, int] = {}
    for index, task in enumerate(profile.maintenance):
        path: KeyPath = ("maintenance", index)
        if task.task in seen:
            where.issue(site, file, (*path, "task"), f"task '{task.task}' is already used by "
                        f"maintenance[{seen[task.task]}]; task names are unique within a profile")
            continue
        seen[task.task] = index
        if task.device is not None or task.asset is not None:
            where.issue(site, file, (*path, "device" if task.device else "asset"),
                        "a profile's maintenance plan is each device's; device: and asset: "
                        "belong in site rule files")
            continue
        if task.counter is not None and task.counter not in names:
            where.issue(site, file, (*path, "counter"), f"'{task.counter}' is not a point of "
                        f"this profile{_suggest(task.counter, names)}")
            continue
        for device in devices:
            site.plans.append(PlannedTask(device.id, task, f"{file} maintenance[{index}]"))


def _site_rule(site: CompiledSite, rule: Rule, index: int, file: str | None, points: _PointMap,
               names: _Names, where: _Where) -> None:
    path: KeyPath = ("rules", index)
    compiled = _expressions(site, rule, path, file, set(points.owner), where)
    if compiled is None:
        return
    device = rule.device or points.first_device(rule, compiled=compiled)
    if device is None:
        where.issue(site, file, path, "a site rule names device.point in its condition, or "
                    "says which device its alarm belongs to with device:")
        return
    if not points.known(device):
        where.issue(site, file, (*path, "device"), f"'{device}' is not a known device"
                    f"{_suggest(device, [*points.devices, *points.virtual])}")
        return
    clash = names.clash(rule, device)
    if clash is not None:
        where.issue(site, file, (*path, "id"), clash)
        return
    names.rules[f"{device}.{rule.id}"] = f"{display_path(file)} rules[{index}]"
    templates = _template(site, rule, path, file, points.of_device(device), where)
    inputs = {points.device_of(p) for e in compiled if e is not None for p in e.points}
    if templates is None or not rule.enabled or not _all_enabled(points, {device, *inputs}):
        return
    site.rules.append(_instance(rule, device, None, compiled, templates, f"{file} rules[{index}]"))


# --- generated energy rules ---------------------------------------------------------------

ENERGY_ORIGIN = "energy"
_CATEGORIES = {"water": "water", "electricity": "power", "gas": "gas", "heat": "hvac"}
_WHAT = {"water": "水", "electricity": "电", "gas": "气", "heat": "热"}
DAY = 86400.0
LATE_GRACE = 3600.0  # seconds a day's value may arrive late without being anticipated


def loss_on_delay(days: int) -> float:
    """The on-delay that makes `loss_rate_day > threshold` mean "for `days` days in a row".

    The energy stage sends a day's loss rate once, when the day has ended, stamped at
    the day's start (gateway/energy/stage.py): the condition holds from the first bad
    day's start, and stays true while each next day's value is above the threshold. The
    `days`-th bad day's value arrives `days` days after that start, just after its
    midnight; the delay is that plus an hour's grace, so the alarm waits for the value
    (a slow first poll, a restart around midnight) instead of anticipating it. A value
    below the threshold arriving within the grace ends the delay: no alarm.
    """
    return days * DAY + LATE_GRACE


def _template_text(text: str) -> str:
    """Configured text (a group's name) put into a message template as itself."""
    return text.replace("{", "{{").replace("}", "}}")


def _quoted(name: str) -> str:
    """A point name as an expression writes it whatever characters the id has."""
    return f"`{name}`"


def energy_rules(config: SiteConfig) -> list[tuple[Rule, str, str | None]]:
    """The rules the energy configuration implies, as (rule, device, scope).

    Per group with a master and members: its daily loss rate above `loss_threshold` for
    `loss_days` days raises `<group>.loss_rate` and a ticket. Per water meter (a device
    whose profile has a water counter): the night's minimum flow above its threshold
    raises `<meter>.night_leak` and a ticket. Scope is the device for the meter rules
    (bare point names, as a profile rule), None for the group rules (full names).
    """
    energy = getattr(config, "energy", None)
    if energy is None:
        return []
    meters = site_meters(config)
    out: list[tuple[Rule, str, str | None]] = []
    for group in energy.groups:
        if group.master is None or not group.members or not group.loss_alarm:
            continue
        master, _members = group_meters(group, meters)
        unit = (master.unit if master is not None else None) or ""
        name = _template_text(group.name or group.id)
        what = _WHAT.get(group.commodity, "")
        days = f"连续 {group.loss_days} 天" if group.loss_days > 1 else "昨日"
        message = (f"{name} 损耗率 {{loss_rate_day:.1%}} 超过 {group.loss_threshold * 100:g}% ({days}): "
                   f"总表 {{consumption_day:.2f}} {unit}, 分表合计 {{members_day:.2f}} {unit}; "
                   f"排查漏{what}与偷{what} (跑冒滴漏)")
        out.append((Rule(
            id="loss_rate", name=f"{group.name or group.id} 损耗率超标 loss rate above threshold",
            device=group.id,
            when=f"{_quoted(group.id + '.loss_rate_day')} > {group.loss_threshold!r}",
            on_delay=loss_on_delay(group.loss_days),
            alarm=AlarmSpec(severity="minor", message=message),
            ticket=TicketSpec(category=_CATEGORIES.get(group.commodity, "general"),
                              priority="normal", fault="loss",
                              title=f"{group.name or group.id} 损耗率超标, 排查漏损"),
        ), group.id, None))
    water = [m for m in meters if not m.manual and m.commodity == "water" and m.enabled]
    per_device: dict[str, int] = {}
    for meter in water:
        per_device[meter.device] = per_device.get(meter.device, 0) + 1
    for meter in water:
        # `night_leak`; `<counter>_night_leak` on the rare device with two water counters
        rule_id = "night_leak" if per_device[meter.device] == 1 else f"{meter.point}_night_leak"
        threshold = water_night_threshold(meter, config)
        point = f"{meter.point}_night_flow"
        message = (f"夜间最小流量 {{{point}:.3f}} m³/h 超过 {threshold:g} m³/h, "
                   "疑似漏水 (跑冒滴漏), 请排查")
        out.append((Rule(
            id=rule_id, name="夜间最小流量偏高 night flow above threshold (leak)",
            when=f"{_quoted(point)} > {threshold!r}",
            alarm=AlarmSpec(severity="major", message=message),
            ticket=TicketSpec(category="water", priority="normal", fault=rule_id,
                              title="夜间最小流量偏高, 排查漏水"),
        ), meter.device, meter.device))
    return out


def _generated(site: CompiledSite, rule: Rule, device: str, scope: str | None,
               points: _PointMap, names: _Names) -> None:
    """One generated rule compiled and added, unless a written rule already has its id on
    that device: the site wrote its own (the example water meter profile's `night_leak`
    watches the 24-hour minimum flow), and two alarms for one fault help nobody.

    A generated rule's text is made here from validated numbers and ids, so a compile
    error would be a bug: it goes to the issues like any other, never unnoticed.
    """
    owner = points.virtual.get(device) if scope is None else ("device" if device in points.devices else None)
    if owner not in ("meter group", "device") or not points.enabled(device):
        return  # a group id that clashes with a device's (the loader says so), a disabled meter
    name = f"{device}.{rule.id}"
    if name in names.rules:
        why = f"{name}: the written rule ({names.rules[name]}) runs instead of the generated one"
        site.replaced.append(why)
        return
    known = set(points.owner) if scope is None else points.of_device(device)
    try:
        compiled = tuple(compile_expression(text, known_points=known) if text is not None else None
                         for text in (rule.when, rule.clear, rule.derive))
        used = check_template(rule.alarm.message) if rule.alarm and rule.alarm.message else set()
    except (ExpressionError, ValueError) as exc:
        site.issues.append(ConfigIssue(None, None, None, (), f"generated rule {name}: {exc}"))
        return
    names.rules[name] = "generated from the energy configuration"
    site.rules.append(_instance(rule, device, scope, compiled, frozenset(used), ENERGY_ORIGIN))


def _all_enabled(points: _PointMap, devices: set[str | None]) -> bool:
    """Whether every device a site rule reads or belongs to is polled."""
    return all(d is not None and points.enabled(d) for d in devices)


def _site_task(site: CompiledSite, task: MaintenanceTask, index: int, file: str | None,
               config: SiteConfig, points: _PointMap, planned: set[tuple[str, str]],
               where: _Where) -> None:
    path: KeyPath = ("maintenance", index)
    if task.asset is not None:
        owner = _site_asset(site, task, path, file, points, where)
    else:
        owner = _site_device(site, task, path, file, points, where)
    if owner is None:
        return
    if (owner, task.task) in planned:
        where.issue(site, file, (*path, "task"), f"{owner} already has a maintenance task "
                    f"'{task.task}'; give this one another name")
        return
    planned.add((owner, task.task))
    if task.asset is not None or points.devices[owner].enabled:
        site.plans.append(PlannedTask(owner, task, f"{file} maintenance[{index}]"))


def _site_asset(site: CompiledSite, task: MaintenanceTask, path: KeyPath, file: str | None,
                points: _PointMap, where: _Where) -> str | None:
    """The asset a site task is for, or None after recording why it cannot be planned."""
    assert task.asset is not None
    if task.asset in points.devices:
        where.issue(site, file, (*path, "asset"), f"{task.asset} is a device of the site; "
                    "write device: for it (asset: is for equipment the gateway does not poll)")
        return None
    if task.counter is not None:
        where.issue(site, file, (*path, "counter"), "an asset the gateway does not poll has no "
                    "counters; use every_days: or every_months:")
        return None
    return task.asset


def _site_device(site: CompiledSite, task: MaintenanceTask, path: KeyPath, file: str | None,
                 points: _PointMap, where: _Where) -> str | None:
    """The device a site task is for, or None after recording why it cannot be planned."""
    if task.device is None:
        where.issue(site, file, path, "a site maintenance task names its device: (a device of "
                    "the site) or asset: (equipment the gateway does not poll, e.g. septic_tank_1)")
        return None
    if task.device in points.virtual:
        where.issue(site, file, (*path, "device"), f"{task.device} is a "
                    f"{points.virtual[task.device]}, not equipment: it has nothing to maintain"
                    + ("; write asset: for the meter itself"
                       if points.virtual[task.device] == "manual meter" else ""))
        return None
    if task.device not in points.devices:
        where.issue(site, file, (*path, "device"), f"'{task.device}' is not a known device"
                    f"{_suggest(task.device, points.devices)}; for equipment the gateway does "
                    "not poll write asset:")
        return None
    if task.counter is not None:
        names = points.of_device(task.device)
        if task.counter not in names:
            where.issue(site, file, (*path, "counter"), f"'{task.counter}' is not a point of "
                        f"{task.device}{_suggest(task.counter, names)}")
            return None
    return task.device


def _expressions(site: CompiledSite, rule: Rule, path: KeyPath, file: str | None,
                 known: set[str], where: _Where) -> tuple[Expression | None, ...] | None:
    """(when, clear, derive) compiled, or None after recording the issues."""
    out: list[Expression | None] = []
    ok = True
    for key in ("when", "clear", "derive"):
        text = getattr(rule, key)
        if text is None:
            out.append(None)
            continue
        at: KeyPath = (*path, key)
        try:
            out.append(compile_expression(str(text), source=where.source(file, at), known_points=known))
        except ExpressionError as exc:
            where.expression_issue(site, file, at, exc)
            ok = False
    return tuple(out) if ok else None


def _template(site: CompiledSite, rule: Rule, path: KeyPath, file: str | None,
              names: Iterable[str], where: _Where) -> frozenset[str] | None:
    if rule.alarm is None or rule.alarm.message is None:
        return frozenset()
    at: KeyPath = (*path, "alarm", "message")
    template = rule.alarm.message
    try:
        used = check_template(template)
    except ValueError as exc:
        where.issue(site, file, at, str(exc))
        return None
    known = set(names)
    unknown = sorted(used - known, key=lambda name: _field_offset(template, name))
    if unknown:
        line, col = _line_col(template, _field_offset(template, unknown[0]))
        where.issue_in_text(site, file, at, line, col, f"message names unknown point "
                            f"'{unknown[0]}'; a message uses its device's points"
                            f"{_suggest(unknown[0], known)}")
        return None
    return frozenset(used)


def _field_offset(template: str, name: str) -> int:
    """Where `{name}` (or `{name:spec}`, `{name!r}`) starts in a template; 0 if not found."""
    match = re.search(r"(?<!\{)(?:\{\{)*\{" + re.escape(name) + r"[:!}]", template)
    return match.end() - len(name) - 1 if match else 0


def _line_col(text: str, offset: int) -> tuple[int, int]:
    """The 1-based (line, col) of an index into a text value."""
    before = text[:offset]
    return before.count("\n") + 1, offset - (before.rfind("\n") + 1) + 1


def _instance(rule: Rule, device: str, scope: str | None, compiled: tuple[Expression | None, ...],
              templates: frozenset[str], origin: str) -> CompiledRule:
    when, clear, derive = compiled
    expressions = [e for e in compiled if e is not None]

    def full(point: str) -> str:
        return point if scope is None else f"{scope}.{point}"

    windows: dict[str, float] = {}
    for expression in expressions:
        for point, seconds in expression.windows.items():
            name = full(point)
            windows[name] = max(seconds, windows.get(name, 0.0))
    return CompiledRule(
        id=f"{device}.{rule.id}", rule=rule, device=device, scope=scope, when=when,
        clear=clear, derive=derive, inputs=frozenset(windows), windows=windows,
        timed=any(e.timed for e in expressions) or rule.every is not None,
        template_points=templates, origin=origin,
    )


def _suggest(name: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, sorted(choices), n=1)
    return f"; did you mean {close[0]}?" if close else ""
