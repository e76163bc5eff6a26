"""What a reload changes, worked out before anything running is touched.

`plan_reload` compares the running configuration with the new one: which devices'
drivers stop and start (their entry or profile changed in something a driver reads, or
the line they share was rebuilt), which lines are rebuilt (a serial port's settings, the
gateway's BACnet presence), and which settings only a restart applies. A device whose
driver does not restart keeps polling through the reload, its statistics included.

`carry_rule_state` hands the rule engine's memory (point history for windows, when each
rule last ran, the alarm-flood window) from the engine a reload replaces to the new one,
for every device that did not restart. Alarms, tickets, SLA clocks, counters and
maintenance modes are on disk and come back by themselves when the new engine opens.
`HeldBatches` keeps the readings of the devices that poll on while the stages swap.
`ReloadRecord` is what status and metrics show of reloads: the applied hash, counts and
the last failure's located errors.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import structlog

from gateway.batch import Batch, Event
from gateway.config.models import Device, Profile, SiteConfig
from gateway.lines import LineKey, line_name, line_of, line_settings
from gateway.pipeline import Pipeline
from rules.compile import CompiledRule
from rules.engine.engine import RuleEngine
from rules.stage import RulesStage

log = structlog.get_logger(__name__)

# Bound when the gateway starts: the sinks, the outbox and the upstream link run on,
# untouched by a reload. Every other top-level setting is applied by the reload.
STARTUP_ONLY = ("site", "data_dir", "outbox", "logging", "sinks", "upstream")

# What no driver reads: a change to these alone restarts no driver (the rules, the energy
# stage and the sinks' catalog still take it).
_DEVICE_UNDRIVEN = {"name": None, "location": None, "asset": None, "meter": None, "source": None}
_PROFILE_UNDRIVEN = {"name": "", "system": "", "vendor": None, "model": None, "description": None,
                     "rules": [], "maintenance": [], "source": None}


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    """Device ids (sorted) and lines a reload acts on."""

    added: list[str]  # entries in the new configuration only
    removed: list[str]  # entries in the old configuration only
    changed: list[str]  # entries whose device entry or profile differ in anything
    restarted: list[str]  # running before and after, whose drivers stop and start again
    stop: list[str]  # drivers that stop: removed, disabled or restarted
    start: list[str]  # drivers that start: added, enabled or restarted
    rebuild: list[LineKey]  # lines opened again with new settings
    unused: list[LineKey]  # lines no running device is on any more
    restart_needed: list[str]  # top-level settings only a restart applies
    live_changed: bool  # something the reload applies differs (else it has nothing to do)

    def summary(self, devices: int) -> dict[str, object]:
        """The reply to a reload command and the log line: what was done."""
        return {
            "devices": devices,
            "added": self.added,
            "removed": self.removed,
            "changed": self.changed,
            "restarted": self.restarted,
            "lines_rebuilt": [line_name(key) for key in self.rebuild],
            "restart_needed": self.restart_needed,
        }


def plan_reload(old: SiteConfig, new: SiteConfig) -> ReloadPlan:
    """What applying `new` over the running `old` stops, starts and rebuilds."""
    before = {d.id: d for d in old.devices}
    after = {d.id: d for d in new.devices}
    both = before.keys() & after.keys()
    changed = sorted(
        i for i in both
        if _plain(before[i]) != _plain(after[i])
        or _plain(old.profiles.get(before[i].profile)) != _plain(new.profiles.get(after[i].profile))
    )
    running_before = {i: d for i, d in before.items() if d.enabled}
    running_after = {i: d for i, d in after.items() if d.enabled}
    lines_before = _lines(running_before.values(), old)
    lines_after = _lines(running_after.values(), new)
    rebuild = sorted((k for k in lines_before.keys() & lines_after.keys()
                      if lines_before[k] != lines_after[k]), key=line_name)
    restarted = sorted(
        i for i in running_before.keys() & running_after.keys()
        if _driven(before[i], old) != _driven(after[i], new) or line_of(after[i]) in rebuild
    )
    stopped = running_before.keys() - running_after.keys()
    started = running_after.keys() - running_before.keys()
    live = [name for name in SiteConfig.model_fields if name not in STARTUP_ONLY]
    return ReloadPlan(
        added=sorted(after.keys() - before.keys()),
        removed=sorted(before.keys() - after.keys()),
        changed=changed,
        restarted=restarted,
        stop=sorted(stopped | set(restarted)),
        start=sorted(started | set(restarted)),
        rebuild=rebuild,
        unused=sorted(lines_before.keys() - lines_after.keys(), key=line_name),
        restart_needed=[name for name in STARTUP_ONLY if getattr(old, name) != getattr(new, name)],
        live_changed=any(getattr(old, name) != getattr(new, name) for name in live),
    )


def applied_config(running: SiteConfig, new: SiteConfig) -> SiteConfig:
    """What runs after the reload: `new`, but the startup-only settings as they run now."""
    return new.model_copy(update={name: getattr(running, name) for name in STARTUP_ONLY})


def _plain(model: Device | Profile | None) -> object:
    """The model without where it was written: moving a device between files changes nothing."""
    return model.model_copy(update={"source": None}) if model is not None else None


def _driven(device: Device, config: SiteConfig) -> tuple[object, object]:
    """The parts of a device and its profile its driver reads."""
    profile = config.profiles.get(device.profile)
    return (
        device.model_copy(update=_DEVICE_UNDRIVEN),
        profile.model_copy(update=_PROFILE_UNDRIVEN) if profile is not None else None,
    )


def _lines(devices: Iterable[Device], config: SiteConfig) -> dict[LineKey, frozenset[object]]:
    """Each line the devices are on, with the settings they open it with."""
    lines: dict[LineKey, set[object]] = {}
    for device in devices:
        lines.setdefault(line_of(device), set()).add(line_settings(device, config.bacnet))
    return {key: frozenset(settings) for key, settings in lines.items()}


def _logic(rule: CompiledRule) -> tuple[object, ...]:
    """What a rule computes, without what it is called or what its alarm says."""
    r = rule.rule
    return (rule.device, rule.scope, r.when, r.clear, r.derive, r.accumulate)


def carry_rule_state(old: RuleEngine, new: RuleEngine, restarted: Iterable[str]) -> int:
    """Give `new` what `old` remembered of every device not in `restarted` (nor removed).

    Point history (windows, `changed`, `stale`, the values messages name), when each rule
    last ran, evaluation counts, and the alarm-flood window. A rule whose expressions
    changed starts afresh, and so does its derived point's history: its old values meant
    something else (a new name or message changes nothing). Call it after `old`
    has seen its last batch and before `new` sees its first. Returns the series carried.
    """
    dropped = set(restarted)
    old_rules = {rule.id: rule for rule in old.index.order}
    new_rules = {rule.id: rule for rule in new.index.order}
    fresh = {i for i, rule in new_rules.items()
             if i not in old_rules or _logic(old_rules[i]) != _logic(rule) or rule.device in dropped}
    names: set[str] = set()
    for rule in new.index.order:
        names.update(rule.windows)
        names.update(f"{rule.device}.{point}" for point in rule.template_points)
    carried = 0
    for name in sorted(names):
        series = old.history.get(name)
        if (series is None or name in fresh or name.split(".", 1)[0] in dropped
                or new.history.get(name) is not None):
            continue
        samples = list(series.samples)
        last_good = series.last_good
        if last_good is not None and (not samples or last_good.ts < samples[0].ts):
            new.history.record(name, last_good.ts, last_good.value, last_good.quality)
        for sample in samples:
            new.history.record(name, sample.ts, sample.value, sample.quality)
        carried += 1
    for rule_id, ts in old.evaluator.previous.items():
        if rule_id in new_rules and rule_id not in fresh:
            new.evaluator.previous[rule_id] = ts
    new.evaluator.evaluations += old.evaluator.evaluations  # counts since the process started
    new.evaluator.errors += old.evaluator.errors
    if (old.flood.window, old.flood.threshold) == (new.flood.window, new.flood.threshold):
        new.flood = old.flood  # the raises in the window, and whether a flood is on
    else:
        new.flood.in_flood = old.flood.in_flood  # its end is still announced
    return carried


@dataclass(slots=True)
class ReloadRecord:
    """The applied configuration's hash and how reloads went, for status and metrics."""

    config_hash: str | None = None
    applied_at: float | None = None  # when the running configuration was started or applied
    applied: int = 0  # reloads applied since the gateway started
    failed: int = 0  # reloads refused (invalid files) or that could not run
    failed_at: float | None = None  # the last failure, while no reload has worked since
    errors: list[str] = field(default_factory=list)  # the last failure's, located

    def ok(self, config_hash: str, now: float) -> None:
        self.config_hash, self.applied_at = config_hash, now
        self.applied += 1
        self.failed_at, self.errors = None, []

    def failure(self, errors: list[str], now: float) -> None:
        self.failed += 1
        self.failed_at, self.errors = now, list(errors)

    def snapshot(self) -> dict[str, object]:
        return {"config_hash": self.config_hash, "applied_at": self.applied_at,
                "applied": self.applied, "failed": self.failed, "failed_at": self.failed_at,
                "errors": self.errors}


class HeldBatches:
    """The rules stage while a reload swaps the stages: batches wait, unevaluated (the
    pipeline has stored them), for the new stages."""

    def __init__(self) -> None:
        self.items: list[tuple[str, list[Batch | Event]]] = []

    def process(self, batch: Batch) -> list[Batch | Event]:
        self.items.append(("process", [batch]))
        return []

    def evaluate(self, items: list[Batch | Event]) -> list[Batch | Event]:
        self.items.append(("evaluate", list(items)))
        return list(items)  # stored now; what they cause comes once the stages are open

    def release(self, pipeline: Pipeline, stages: RulesStage) -> None:
        """Hand the pipeline to `stages` and let them evaluate what waited, in order."""
        pipeline.rules = stages
        for call, items in self.items:
            try:
                if call == "process":
                    pipeline.emit_all(stages.process(items[0]))
                else:
                    out = stages.evaluate(items)
                    pipeline.emit_all([x for x in out if not any(x is i for i in items)])
            except Exception as exc:
                pipeline.stage_errors += 1
                log.error("a batch held over a reload could not be evaluated", error=repr(exc))
        self.items.clear()
