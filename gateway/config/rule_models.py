"""Typed configuration for rules, derived points, maintenance plans and SLA settings.

Rules are written in profiles (`rules:`, one per device of the profile) and in site
rule files (`include.rules`, across devices). Expressions are kept as text here; the
loader compiles them (rules/expression) with their file positions, so a mistake is a
located config error and the engine never sees an expression that does not compile.
docs/rules.md is the reference for what may be written.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, model_validator
from pydantic_core import PydanticCustomError

from gateway.config.types import Duration, Identifier, Model, Pause, parse_duration

# The error type of keys that do not go together; its context names the key to point at.
KEY_CONFLICT = "key_conflict"

Severity = Literal["critical", "major", "minor", "warning"]
Category = Annotated[str, Field(min_length=1, max_length=32)]


def _conflict(message: str, key: str | None = None) -> PydanticCustomError:
    """An error about keys that do not go together, to be shown at `key` (None: the whole entry).

    A plain ValueError from a model validator is located at the entry; naming the key
    lets the config error point at the line to change.
    """
    return PydanticCustomError(KEY_CONFLICT, message, {"key": key} if key else None)


def _chatter(value: Any) -> Any:
    """`chatter: off` turns detection off; otherwise a mapping."""
    if value is False or value in ("off", "none", None):
        return {"limit": None}
    return value


class ChatterSpec(Model):
    """More than `limit` activations within `window` flag the alarm as chattering."""

    limit: int | None = Field(default=3, ge=1)
    window: Duration = 60.0


class AlarmSpec(Model):
    """The alarm a rule raises while its condition holds (after `for:`)."""

    severity: Severity
    # A template over the device's point values (Python format spec): 出水压力低 {outlet_pressure:.2f} MPa
    message: str | None = None  # default: the rule's name, else its id
    chatter: Annotated[ChatterSpec, BeforeValidator(_chatter)] = ChatterSpec()


class TicketSpec(Model):
    """The ticket a rule opens when its alarm is raised (or its condition starts to hold)."""

    category: Category = "general"  # water, power, gas, elevator, hvac, fire, doors, lighting, ...
    kind: Literal["corrective", "preventive"] = "corrective"
    priority: Literal["urgent", "normal"] | None = None  # None: urgent for water, power and gas
    grade: Literal["general", "major"] = "general"  # major starts the emergency plan
    fault: Identifier | None = None  # with the device, the ticket's key; default: the rule id
    title: str | None = None  # default: the device's name and the rule's name
    trapped: bool = False  # passengers trapped: the rescue arrival clock applies
    complete_within: Duration | None = None  # a repair deadline, if the rule sets one


class Accumulate(Model):
    """A counter kept across restarts: run hours from `running == 1`, starts from its rises."""

    of: Literal["hours", "rises"]  # hours the expression held; times it went false → true


class Rule(Model):
    """One rule. Exactly one of `when` (an alarm and/or ticket condition) or `derive`
    (a new point) is written.

    `when` with `clear` is a deadband: the alarm is raised when `when` holds and
    returns when `clear` holds; between them it keeps its state. `for` is the on-delay,
    `off_delay` the time `when` must stay false (or `clear` true) before it returns.
    """

    id: Identifier
    name: str | None = None  # for people: 出水压力低, used in messages and ticket titles
    description: str | None = None
    # Site rules: the device the alarm and ticket belong to (default: the first device the
    # condition names). Profile rules: not written, the rule runs for each device.
    device: Identifier | None = None
    when: str | None = None
    clear: str | None = None
    on_delay: Pause = Field(default=0.0, alias="for")
    off_delay: Pause = 0.0
    alarm: AlarmSpec | None = None
    ticket: TicketSpec | None = None
    # Derived points: the rule's id is the point's name on its device.
    derive: str | None = None
    accumulate: Literal["hours", "rises"] | None = None  # derive a persistent counter
    unit: str | None = None
    every: Duration | None = None  # also evaluate on a timer (a derived point over windows)
    enabled: bool = True

    model_config = Model.model_config | {"populate_by_name": True}

    @model_validator(mode="after")
    def _one_kind(self) -> Rule:
        if self.when is not None and self.derive is not None:
            raise _conflict("a rule has either when: (a condition that raises an alarm or opens a "
                            "ticket) or derive: (an expression that defines a new point), not both",
                            "derive")
        if self.when is None and self.derive is None:
            raise _conflict("a rule needs when: (a condition that raises an alarm or opens a "
                            "ticket) or derive: (an expression that defines a new point)")
        if self.when is not None:
            self._check_when_rule()
        else:
            self._check_derive_rule()
        return self

    def _check_when_rule(self) -> None:
        if self.alarm is None and self.ticket is None:
            raise _conflict("a when: rule needs alarm: or ticket: (or both); otherwise it "
                            "would do nothing")
        for key in ("accumulate", "unit", "every"):
            if getattr(self, key) is not None:
                raise _conflict(f"{key}: belongs to derive: rules, not when: rules", key)

    def _check_derive_rule(self) -> None:
        for key in ("clear", "alarm", "ticket"):
            if getattr(self, key) is not None:
                raise _conflict(f"{key}: belongs to when: rules; a derive: rule defines a point", key)
        for key, value in (("for", self.on_delay), ("off_delay", self.off_delay)):
            if value:
                raise _conflict(f"{key}: belongs to when: rules; a derive: rule has no delays", key)


class MaintenanceTask(Model):
    """One task of a maintenance plan: preventive tickets by the calendar or by usage.

    Exactly one of `every_days`, `every_months` (calendar) or `counter` with `every`
    (usage: a point of the device, read or derived, such as run_hours or starts).
    """

    task: Identifier
    title: str | None = None
    category: Category = "general"
    every_days: float | None = Field(default=None, gt=0)
    every_months: int | None = Field(default=None, ge=1, le=120)
    counter: Identifier | None = None
    every: float | None = Field(default=None, gt=0)
    start: date | None = None  # the first due date; default one cycle after first seen
    complete_within: Duration | None = None
    # Site rule files: the device, or an `asset` the gateway does not poll (a septic tank,
    # the lightning protection). Profiles: not written, the plan is each device's.
    device: Identifier | None = None
    asset: Identifier | None = None

    @model_validator(mode="after")
    def _one_cycle(self) -> MaintenanceTask:
        cycles = [key for key in ("every_days", "every_months", "counter") if getattr(self, key) is not None]
        if len(cycles) != 1:
            raise _conflict("a maintenance task has exactly one of every_days:, every_months:, "
                            "or counter: with every:", cycles[1] if cycles else None)
        if self.counter is not None and self.every is None:
            raise _conflict("counter: needs every: (counter: run_hours with every: 500 is due "
                            "every 500 run hours)", "counter")
        if self.counter is None and self.every is not None:
            raise _conflict("every: goes with counter: (every 500 run_hours); a calendar task "
                            "has every_days: or every_months: alone", "every")
        if self.device is not None and self.asset is not None:
            raise _conflict("write device: or asset:, not both", "asset")
        return self


class RuleFile(Model):
    """A site rule file: rules across devices and maintenance plans for the site."""

    rules: list[Rule] = []
    maintenance: list[MaintenanceTask] = []
    source: str | None = Field(default=None, exclude=True)


def _durations(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: parse_duration(v) for k, v in value.items()}
    return value


DurationMap = Annotated[dict[str, float], BeforeValidator(_durations)]


class SlaConfig(Model):
    """site.yaml `sla:`: the service levels tickets are held to (domain.md defaults)."""

    arrival_urgent: Duration = 15 * 60.0
    arrival_normal: Duration = 30 * 60.0
    trapped_area: Literal["city", "rural"] = "city"
    trapped_arrival: DurationMap = {"city": 30 * 60.0, "rural": 3600.0}
    follow_up_within: Duration = 48 * 3600.0
    progress_every: Duration = 4 * 3600.0
    repair_within: DurationMap = {"lighting": 2 * 86400.0, "doors": 2 * 86400.0}
    urgent_categories: list[Category] = ["water", "power", "gas"]
    warn_at: float = Field(default=0.8, gt=0, lt=1)
    escalation_chain: list[str] = ["backup", "supervisor"]
    escalation_step: Duration | None = None
    contacts: dict[str, str] = {}


class RulesConfig(Model):
    """site.yaml `rules:`: how the engine runs."""

    tick: Duration = 1.0  # how often timers (delays, stale data, SLA clocks) are checked
    maintenance_default: Duration = 4 * 3600.0  # maintenance mode without a duration
    flood_window: Duration = 600.0  # alarm flood statistics: raises per this window
    flood_threshold: int = Field(default=10, ge=1)  # ISA-18.2: over 10 per 10 min is a flood
