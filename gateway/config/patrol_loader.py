"""The patrol configuration checked against the whole site, each problem at its place.

A checkpoint names a device and one of its profile's points; a plan names checkpoints
and guards; its windows must not overlap. Whether those exist can only be known once
every profile and device is read, so the loader calls `check_patrols` then, and every
mistake is a located config issue like any other, with what would be right.
"""

from __future__ import annotations

from typing import Any

from gateway.config.errors import ConfigIssue, KeyPath
from gateway.config.explain import did_you_mean
from gateway.config.patrol_models import DAY_MINUTES, Checkpoint, PatrolPlan, PatrolsConfig
from gateway.config.yaml_source import YamlDocument


def check_patrols(site: Any, document: YamlDocument, profiles: dict[str, Any], devices: list[Any],
                  *, incomplete: bool = False) -> list[ConfigIssue]:
    """Every problem in site.yaml's `patrols:`.

    `incomplete`: a profile or device was left out by its own mistake; devices and points
    are then not checked, lest one that exists be reported as unknown.
    """
    patrols: PatrolsConfig = site.patrols
    at = _Locator(document)
    issues: list[ConfigIssue] = []
    if not incomplete:
        by_id = {d.id: d for d in devices}
        for index, checkpoint in enumerate(patrols.checkpoints):
            issues += _check_device(at, index, checkpoint, by_id, profiles)
    issues += _check_unique(at, patrols)
    guards = {g.id for g in patrols.guards}
    checkpoints = {c.id: c for c in patrols.checkpoints}
    for index, plan in enumerate(patrols.plans):
        issues += _check_plan(at, index, plan, checkpoints, guards)
    return issues


class _Locator:
    def __init__(self, document: YamlDocument) -> None:
        self.document = document

    def __call__(self, path: KeyPath, message: str, *, key: bool = False) -> ConfigIssue:
        full = ("patrols", *path)
        line, col = self.document.locate(full, key=key)
        return ConfigIssue(self.document.path, line, col, full, message)


def _check_device(at: _Locator, index: int, checkpoint: Checkpoint, devices: dict[str, Any],
                  profiles: dict[str, Any]) -> list[ConfigIssue]:
    path: KeyPath = ("checkpoints", index)
    device = devices.get(checkpoint.device)
    if device is None:
        return [at((*path, "device"), f"'{checkpoint.device}' is not a device of the site"
                   f"{did_you_mean(checkpoint.device, sorted(devices))}; a checkpoint is read "
                   "from a device's points: a card reader, a patrol hub or an IO module")]
    profile = profiles.get(device.profile)
    if profile is None:
        return []
    issues: list[ConfigIssue] = []
    named = [("point", checkpoint.point)]
    if checkpoint.card is not None:
        named.append(("card", checkpoint.card))
    for key, point in named:
        if point not in profile.points:
            issues.append(at((*path, key), f"'{point}' is not a point of {device.id} (profile "
                             f"{profile.id}){did_you_mean(point, list(profile.points))}; its "
                             f"points: {', '.join(profile.points)}"))
    point = profile.points.get(checkpoint.point)
    if checkpoint.rises and point is not None and getattr(point, "type", None) in ("text", "string"):
        issues.append(at((*path, "rises"), f"{checkpoint.point} is text; rises: true needs an "
                         "input that reads 0 and 1 (a digital input, a bool); for a reader that "
                         "reports text, write equals: or leave both out", key=True))
    return issues


def _check_unique(at: _Locator, patrols: PatrolsConfig) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    for kind, items in (("checkpoints", patrols.checkpoints), ("guards", patrols.guards),
                        ("plans", patrols.plans)):
        seen: dict[str, int] = {}
        for index, item in enumerate(items):
            if item.id in seen:
                issues.append(at((kind, index, "id"), f"'{item.id}' is already {kind}"
                                 f"[{seen[item.id]}]; {kind[:-1]} ids must be unique"))
            else:
                seen[item.id] = index
    reads: dict[tuple[str, str, str], int] = {}
    for index, checkpoint in enumerate(patrols.checkpoints):
        how = "rises" if checkpoint.rises else repr(checkpoint.equals)
        key = (checkpoint.device, checkpoint.point, how)
        if key in reads:
            other = patrols.checkpoints[reads[key]].id
            issues.append(at(("checkpoints", index, "point"), f"checkpoint {other} already "
                             f"reads visits from {checkpoint.device}.{checkpoint.point} this way; "
                             "one visit would count for both (a hub: give each equals:)"))
        else:
            reads[key] = index
    cards: dict[str, str] = {}
    for g_index, guard in enumerate(patrols.guards):
        for c_index, card in enumerate(guard.cards):
            owner = cards.setdefault(card, guard.id)
            if owner != guard.id or guard.cards.index(card) != c_index:
                issues.append(at(("guards", g_index, "cards", c_index), f"card {_masked(card)} "
                                 f"is already {owner}'s; a card belongs to one guard"))
    return issues


def _check_plan(at: _Locator, index: int, plan: PatrolPlan, checkpoints: dict[str, Checkpoint],
                guards: set[str]) -> list[ConfigIssue]:
    path: KeyPath = ("plans", index)
    issues: list[ConfigIssue] = []
    seen: set[str] = set()
    for c_index, name in enumerate(plan.checkpoints):
        if name not in checkpoints:
            issues.append(at((*path, "checkpoints", c_index), f"'{name}' is not a checkpoint"
                             f"{did_you_mean(name, sorted(checkpoints))}; checkpoints are "
                             "declared under patrols.checkpoints"))
        elif name in seen:
            issues.append(at((*path, "checkpoints", c_index), f"{name} is already in this plan; "
                             "a checkpoint is visited once a round"))
        seen.add(name)
    for g_index, name in enumerate(plan.guards):
        if name not in guards:
            issues.append(at((*path, "guards", g_index), f"'{name}' is not a guard"
                             f"{did_you_mean(name, sorted(guards))}; guards are declared under "
                             "patrols.guards with their cards"))
    if plan.guards:
        for c_index, name in enumerate(plan.checkpoints):
            checkpoint = checkpoints.get(name)
            if checkpoint is not None and checkpoint.card_point is None:
                issues.append(at((*path, "checkpoints", c_index), f"{name} cannot tell who "
                                 "visited (no card point), so this plan's guards: cannot be "
                                 f"checked there; give {name} card: or remove guards:"))
    issues += _check_windows(at, path, plan)
    return issues


def _check_windows(at: _Locator, path: KeyPath, plan: PatrolPlan) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    ids: dict[str, int] = {}
    for w_index, window in enumerate(plan.windows):
        where = (*path, "windows", w_index)
        if window.id in ids:
            issues.append(at((*where, "id"), f"'{window.id}' is already windows[{ids[window.id]}]; "
                             "window ids must be unique in a plan"))
            continue
        ids[window.id] = w_index
        for other in plan.windows[:w_index]:
            if _overlap(window.minutes(), other.minutes()):
                issues.append(at((*where, "hours"), f"{window.hours} overlaps window {other.id} "
                                 f"({other.hours}); a moment belongs to one round of a plan, so "
                                 "its windows must not overlap (08:00-20:00 and 20:00-08:00 do not)"))
                break
    return issues


def _overlap(a: tuple[int, int], b: tuple[int, int]) -> bool:
    """Whether two daily windows (minutes, end past start) share a moment on some day."""
    return any(a[0] < b[1] + shift and b[0] + shift < a[1]
               for shift in (-DAY_MINUTES, 0, DAY_MINUTES))


def _masked(card: str) -> str:
    """A card number as logs show it: its last four characters."""
    return "…" + card[-4:] if len(card) > 4 else card
