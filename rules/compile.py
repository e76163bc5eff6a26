"""Rules from the configuration, compiled once: every expression checked against the
points it may read, each profile rule instantiated for every device of its profile.

The loader calls `compile_rules` with a `locate` function so every problem is a config
issue at its file, line and column; the engine calls it again on the validated config
to get the rules it runs (compiling is cheap and keeps the config models plain data).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from gateway.config.errors import ConfigIssue, KeyPath
from gateway.config.models import Device, Profile, SiteConfig
from gateway.config.rule_models import MaintenanceTask, Rule
from rules.alarms.message import check_template
from rules.expression import Expression, ExpressionError, Source, compile_expression

# Where a value was written: (file, key path) -> Source (file, line, col, path), or None.
Locate = Callable[[str | Path | None, KeyPath], Source | None]


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

    def derived_points(self) -> dict[str, list[CompiledRule]]:
        """device → its derive rules, in the order they are written."""
        out: dict[str, list[CompiledRule]] = {}
        for rule in self.rules:
            if rule.derive is not None:
                out.setdefault(rule.device, []).append(rule)
        return out


def profile_point_names(profile: Profile) -> set[str]:
    """What a profile rule may read: the profile's points and its derived points."""
    return set(profile.points) | {r.id for r in profile.rules if r.derive is not None}


def compile_rules(config: SiteConfig, locate: Locate | None = None) -> CompiledSite:
    """Every rule and maintenance task of the site; problems in `issues`, never raised."""
    site = CompiledSite()
    devices = [d for d in config.devices if d.enabled]
    for profile in config.profiles.values():
        _profile(site, profile, [d for d in devices if d.profile == profile.id], locate)
    known = {
        f"{d.id}.{p}" for d in devices if d.profile in config.profiles
        for p in profile_point_names(config.profiles[d.profile])
    }
    device_ids = {d.id for d in config.devices}
    for rule_file in config.rule_files:
        for index, rule in enumerate(rule_file.rules):
            _site_rule(site, rule, index, rule_file.source, known, device_ids, locate)
        for index, task in enumerate(rule_file.maintenance):
            _site_task(site, task, index, rule_file.source, config, locate)
    return site


def _profile(site: CompiledSite, profile: Profile, devices: list[Device], locate: Locate | None) -> None:
    names = profile_point_names(profile)
    file = profile.source
    seen: dict[str, int] = {}
    for index, rule in enumerate(profile.rules):
        path: KeyPath = ("rules", index)
        if rule.id in seen:
            _issue(site, locate, file, (*path, "id"),
                   f"rule id '{rule.id}' is already used by rules[{seen[rule.id]}]; "
                   "rule ids are unique within a profile")
            continue
        seen[rule.id] = index
        if rule.derive is not None and rule.id in profile.points:
            _issue(site, locate, file, (*path, "id"),
                   f"'{rule.id}' is already a point of this profile; a derived point needs its own name")
            continue
        if rule.device is not None:
            _issue(site, locate, file, (*path, "device"),
                   "a profile rule runs for every device of the profile; device: belongs in "
                   "site rule files")
            continue
        compiled = _expressions(site, rule, path, file, names, locate)
        templates = _template(site, rule, path, file, names, locate)
        if compiled is None or templates is None or not rule.enabled:
            continue
        for device in devices:
            site.rules.append(_instance(rule, device.id, device.id, compiled, templates,
                                        f"{file} rules[{index}]"))
    for index, task in enumerate(profile.maintenance):
        path = ("maintenance", index)
        if task.device is not None or task.asset is not None:
            _issue(site, locate, file, (*path, "device" if task.device else "asset"),
                   "a profile's maintenance plan is each device's; device: and asset: belong "
                   "in site rule files")
            continue
        if task.counter is not None and task.counter not in names:
            _issue(site, locate, file, (*path, "counter"),
                   f"'{task.counter}' is not a point of this profile{_suggest(task.counter, names)}")
            continue
        for device in devices:
            site.plans.append(PlannedTask(device.id, task, f"{file} maintenance[{index}]"))


def _site_rule(site: CompiledSite, rule: Rule, index: int, file: str | None, known: set[str],
               device_ids: set[str], locate: Locate | None) -> None:
    path: KeyPath = ("rules", index)
    compiled = _expressions(site, rule, path, file, known, locate)
    if compiled is None:
        return
    named = sorted({p.split(".", 1)[0] for e in compiled if e is not None for p in e.points})
    device = rule.device or (named[0] if named else None)
    if device is None:
        _issue(site, locate, file, path, "a site rule names device.point in its condition, or "
               "says which device its alarm belongs to with device:")
        return
    if device not in device_ids:
        _issue(site, locate, file, (*path, "device"),
               f"'{device}' is not a known device{_suggest(device, device_ids)}")
        return
    if any(r.id == f"{device}.{rule.id}" for r in site.rules):
        _issue(site, locate, file, (*path, "id"),
               f"device {device} already has a rule '{rule.id}'; give this one another id")
        return
    device_points = {p.split(".", 1)[1] for p in known if p.startswith(device + ".")}
    templates = _template(site, rule, path, file, device_points, locate)
    if templates is None or not rule.enabled:
        return
    site.rules.append(_instance(rule, device, None, compiled, templates, f"{file} rules[{index}]"))


def _site_task(site: CompiledSite, task: MaintenanceTask, index: int, file: str | None,
               config: SiteConfig, locate: Locate | None) -> None:
    path: KeyPath = ("maintenance", index)
    if task.asset is not None:
        if task.counter is not None:
            _issue(site, locate, file, (*path, "counter"),
                   "an asset the gateway does not poll has no counters; use every_days: or every_months:")
            return
        site.plans.append(PlannedTask(task.asset, task, f"{file} maintenance[{index}]"))
        return
    if task.device is None:
        _issue(site, locate, file, path, "a site maintenance task names its device: (a device of "
               "the site) or asset: (equipment the gateway does not poll, e.g. septic_tank_1)")
        return
    device = next((d for d in config.devices if d.id == task.device), None)
    if device is None:
        ids = {d.id for d in config.devices}
        _issue(site, locate, file, (*path, "device"), f"'{task.device}' is not a known device"
               f"{_suggest(task.device, ids)}; for equipment the gateway does not poll write asset:")
        return
    if task.counter is not None:
        names = profile_point_names(config.profiles[device.profile]) if device.profile in config.profiles else set()
        if task.counter not in names:
            _issue(site, locate, file, (*path, "counter"),
                   f"'{task.counter}' is not a point of {device.id}{_suggest(task.counter, names)}")
            return
    site.plans.append(PlannedTask(device.id, task, f"{file} maintenance[{index}]"))


def _expressions(site: CompiledSite, rule: Rule, path: KeyPath, file: str | None,
                 known: set[str], locate: Locate | None) -> tuple[Expression | None, ...] | None:
    """(when, clear, derive) compiled, or None after recording the issues."""
    out: list[Expression | None] = []
    ok = True
    for key in ("when", "clear", "derive"):
        text = getattr(rule, key)
        if text is None:
            out.append(None)
            continue
        where = locate(file, (*path, key)) if locate is not None else None
        try:
            out.append(compile_expression(str(text), source=where, known_points=known))
        except ExpressionError as exc:
            issue = exc.to_issue()
            if issue.file is None:
                issue = ConfigIssue(file, None, None, (*path, key), issue.message)
            site.issues.append(issue)
            ok = False
    return tuple(out) if ok else None


def _template(site: CompiledSite, rule: Rule, path: KeyPath, file: str | None,
              names: Iterable[str], locate: Locate | None) -> frozenset[str] | None:
    if rule.alarm is None or rule.alarm.message is None:
        return frozenset()
    where: KeyPath = (*path, "alarm", "message")
    try:
        used = check_template(rule.alarm.message)
    except ValueError as exc:
        _issue(site, locate, file, where, str(exc))
        return None
    known = set(names)
    unknown = sorted(used - known)
    if unknown:
        _issue(site, locate, file, where, f"message names unknown point '{unknown[0]}'"
               f"{_suggest(unknown[0], known)}; a message uses its device's points")
        return None
    return frozenset(used)


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


def _issue(site: CompiledSite, locate: Locate | None, file: str | Path | None, path: KeyPath,
           message: str) -> None:
    where = locate(file, path) if locate is not None else None
    if where is None:
        site.issues.append(ConfigIssue(file, None, None, path, message))
    else:
        site.issues.append(ConfigIssue(where.file, where.line, where.col, path, message))


def _suggest(name: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, sorted(choices), n=1)
    return f"; did you mean {close[0]}?" if close else ""
