"""Intact-rate groups watched live: a group whose working share falls below its target
raises `<group>.intact_rate`, and clears it when the share is back.

The alarm lives in the rule engine (`RuleEngine.raise_external`, owner "kpi"), so the
monitoring centre acknowledges and shelves it like any other and it survives a
restart. A device's current state is the one the timeline would give it now
(maintenance, fault, offline, up; unknown until the gateway has its status), and the
working share is up / (members not unknown). A group's `delay` must pass below target
before the alarm is raised (the wait restarts with the gateway).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import structlog

from gateway.batch import Event
from gateway.equipment.kpi import live_intact
from gateway.equipment.site_kpis import Group

log = structlog.get_logger(__name__)

OWNER = "kpi"
ALARM_SUFFIX = "intact_rate"


class ExternalAlarms(Protocol):
    """What the rule engine offers stages that judge alarms of their own."""

    def raise_external(self, alarm_id: str, device: str, severity: str, message: str, *,
                       owner: str, name: str | None = None,
                       context: dict[str, Any] | None = None,
                       now: float | None = None) -> list[Event]: ...

    def clear_external(self, alarm_id: str, *, now: float | None = None) -> list[Event]: ...

    def forget_external(self, alarm_id: str, *, now: float | None = None) -> list[Event]: ...

    def external_alarms(self, owner: str) -> dict[str, dict[str, Any]]: ...


def alarm_id(group: Group) -> str:
    return f"{group.id}.{ALARM_SUFFIX}"


def message(group: Group, working: int, observed: int, rate: float, down: Sequence[str]) -> str:
    text = (f"{group.name} 完好率 {rate:.1%} 低于目标 {group.target:.0%}: "
            f"{working}/{observed} 台正常")
    if down:
        text += f"; 停用: {', '.join(down)}"
    return text


class IntactWatch:
    """The groups with an alarm, their time below target, and the engine to raise in."""

    def __init__(self, groups: Sequence[Group], names: Mapping[str, str],
                 alarms: Callable[[], ExternalAlarms | None] | None) -> None:
        self.groups = [g for g in groups if g.alarm and g.members]
        self.names = names
        self._alarms = alarms or (lambda: None)
        self.below_since: dict[str, float] = {}
        self.live: dict[str, dict[str, Any]] = {}  # group → working, observed, rate (status)
        self._tidied = False
        self._warned = False

    def api(self) -> ExternalAlarms | None:
        engine = self._alarms()
        if engine is None or not hasattr(engine, "raise_external"):
            if not self._warned and self.groups:
                self._warned = True
                log.warning("intact-rate alarms need the rule engine's external alarms; "
                            "rates are computed but raise nothing", groups=[g.id for g in self.groups])
            return None
        return engine

    def step(self, states: Mapping[str, str], now: float, changed: float | None = None) -> list[Event]:
        """Raise or clear each group's alarm from its members' states now; `changed` is when
        a member's state last changed (a group's delay counts from there)."""
        api = self.api()
        out: list[Event] = []
        if api is None:
            return out
        if not self._tidied:  # groups taken out of the configuration, or their alarm off
            self._tidied = True
            keep = {alarm_id(g) for g in self.groups}
            for known in api.external_alarms(OWNER):
                if known not in keep:
                    out += api.forget_external(known, now=now)
        held = api.external_alarms(OWNER)
        for g in self.groups:
            members = {m: states.get(m, "unknown") for m in g.members}
            working, observed, rate = live_intact(members)
            self.live[g.id] = {"working": working, "observed": observed, "rate": rate,
                               "target": g.target}
            aid = alarm_id(g)
            active = bool(held.get(aid, {}).get("active"))
            if rate is not None and rate < g.target:
                since = self.below_since.setdefault(g.id, min(now, changed or now))
                if now - since < g.delay:
                    continue
                down = [self.names.get(m, m) for m, s in members.items() if s not in ("up", "unknown")]
                text = message(g, working, observed, rate, down)
                if not active or held.get(aid, {}).get("message") != text:
                    out += api.raise_external(
                        aid, g.id, g.severity, text, owner=OWNER,
                        name=f"{g.name} 完好率低 intact rate below target",
                        context={"rate": round(rate, 6), "target": g.target,
                                 "working": working, "observed": observed}, now=now)
                    if not active:
                        log.warning("intact rate below target", group=g.id, rate=round(rate, 4),
                                    target=g.target, working=working, observed=observed)
            else:
                self.below_since.pop(g.id, None)
                if active and rate is not None:
                    out += api.clear_external(aid, now=now)
                    log.info("intact rate back at target", group=g.id, rate=round(rate, 4),
                             target=g.target)
        return out
