"""SLA clocks: the service levels of ../shared/domain.md as deadlines that warn and escalate.

A clock starts when its step becomes due (arrival when the ticket opens, follow-up when
it is resolved), is met when the step happens by its deadline and breached otherwise.
Advancing a clock is idempotent in time: each warning, breach and escalation level is
emitted once, however often or however late (after a restart) the clock is advanced.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

from gateway.config.models import parse_duration

MINUTE = 60.0
HOUR = 3600.0
DAY = 86400.0


@dataclass(frozen=True, slots=True)
class SlaPolicy:
    """Deadlines and escalation, with the domain's numbers as defaults.

    Where the source documents disagree the first one is the default and the other a
    setting: trapped passengers 30 minutes in a city, 1 hour elsewhere (`trapped_area`).
    Repair deadlines in days are calendar days (stricter than the working days some
    documents say), keyed by ticket category.
    """

    arrival_urgent: float = 15 * MINUTE  # water, power, gas
    arrival_normal: float = 30 * MINUTE
    trapped_area: str = "city"  # "city" or "rural"
    trapped_arrival: Mapping[str, float] = field(
        default_factory=lambda: {"city": 30 * MINUTE, "rural": 1 * HOUR}
    )
    follow_up_within: float = 48 * HOUR  # 回访, counted from resolution
    progress_every: float = 4 * HOUR  # a task with no deadline reports this often
    repair_within: Mapping[str, float] = field(
        default_factory=lambda: {"lighting": 2 * DAY, "doors": 2 * DAY}
    )
    urgent_categories: frozenset[str] = frozenset({"water", "power", "gas"})
    warn_at: float = 0.8  # fraction of a clock's time after which its owner is warned
    # Who is told when a clock runs out, level by level: "owner" and "backup" are the
    # ticket's; any other name is looked up in `contacts` (a role to a person), else used as is.
    escalation_chain: tuple[str, ...] = ("backup", "supervisor")
    # Time between escalation levels; None: the clock's own length (a step that takes
    # twice its threshold goes one level up).
    escalation_step: float | None = None
    contacts: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.trapped_area not in self.trapped_arrival:
            raise ValueError(
                f"trapped_area {self.trapped_area!r} has no entry in trapped_arrival"
                f" ({', '.join(self.trapped_arrival)})"
            )
        if not 0 < self.warn_at < 1:
            raise ValueError(f"warn_at must be between 0 and 1, not {self.warn_at}")

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> SlaPolicy:
        """A policy from a site file's `sla:` block; durations as '15m', '48h', '2d' or seconds."""
        known = {f.name for f in fields(cls)}
        unknown = set(config) - known
        if unknown:
            raise ValueError(f"unknown sla settings: {', '.join(sorted(unknown))}")
        values: dict[str, Any] = {}
        for name, value in config.items():
            if name in ("arrival_urgent", "arrival_normal", "follow_up_within", "progress_every"):
                values[name] = parse_duration(value)
            elif name == "escalation_step":
                values[name] = None if value is None else parse_duration(value)
            elif name in ("trapped_arrival", "repair_within"):
                values[name] = {k: parse_duration(v) for k, v in value.items()}
            elif name == "urgent_categories":
                values[name] = frozenset(value)
            elif name == "escalation_chain":
                values[name] = tuple(value)
            elif name == "warn_at":
                values[name] = float(value)
            else:
                values[name] = value
        return cls(**values)

    def arrival_within(self, urgent: bool, trapped: bool) -> float:
        if trapped:
            return self.trapped_arrival[self.trapped_area]
        return self.arrival_urgent if urgent else self.arrival_normal


@dataclass(slots=True)
class Clock:
    """One deadline of one ticket and what it has already said about it."""

    name: str  # arrival, repair, progress, follow_up
    started: float
    deadline: float
    done_at: float | None = None  # when its step happened
    stopped: bool = False  # the ticket was cancelled: the clock says nothing more
    warned: bool = False
    breached: bool = False
    escalations: int = 0  # levels of the escalation chain already told

    @property
    def running(self) -> bool:
        return self.done_at is None and not self.stopped

    @property
    def state(self) -> str:
        if self.done_at is not None:
            return "met" if self.done_at <= self.deadline else "breached"
        if self.breached:
            return "breached"
        return "stopped" if self.stopped else "running"

    def finish(self, at: float) -> None:
        if self.running:
            self.done_at = at

    def advance(
        self, now: float, policy: SlaPolicy, recipient: Callable[[str], str | None]
    ) -> list[tuple[str, dict[str, Any]]]:
        """Warnings, breach and escalations due by `now`, each once, as (event type, body).

        A warning whose moment passed unseen (the gateway was down) is skipped once the
        deadline has gone: the breach says more than a late warning would.
        """
        if not self.running:
            return []
        out: list[tuple[str, dict[str, Any]]] = []
        length = self.deadline - self.started
        body = {"clock": self.name, "deadline": self.deadline}
        if not self.warned and now >= self.started + policy.warn_at * length:
            self.warned = True
            if now < self.deadline:
                out.append(("sla_warning", {**body, "to": recipient("owner"), "left": self.deadline - now}))
        if now < self.deadline:
            return out
        if not self.breached:
            self.breached = True
            out.append(("sla_breached", {**body, "late": now - self.deadline}))
        step = policy.escalation_step if policy.escalation_step is not None else length
        chain = policy.escalation_chain
        while self.escalations < len(chain) and now >= self.deadline + self.escalations * step:
            role = chain[self.escalations]
            self.escalations += 1
            out.append(("escalated", {**body, "level": self.escalations, "role": role, "to": recipient(role)}))
        return out

    def to_state(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "deadline": iso(self.deadline),
            "done": iso(self.done_at) if self.done_at is not None else None,
            "escalations": self.escalations,
        }

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Clock:
        return cls(**d)


def iso(ts: float) -> str:
    """UTC ISO 8601 with milliseconds, as the upstream schema writes timestamps."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
