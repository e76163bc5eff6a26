"""The words of the alarm life cycle: states, severities, event types, definitions, events.

Names follow ISA-18.2 / IEC 62682 and are spelled as the upstream contract spells them
(`docs/asyncapi.yaml`), so an enum value can go into a published message unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from rules.alarms.message import check_template


class AlarmError(ValueError):
    """An operation the alarm's current state does not allow (ack a normal alarm, ...).

    The commands layer turns it into a refusal; the text is written for the operator.
    """


class AlarmState(StrEnum):
    """What the monitoring centre sees: the ISA-18.2 state of one alarm."""

    NORMAL = "normal"
    ACTIVE_UNACKNOWLEDGED = "active_unacknowledged"
    ACTIVE_ACKNOWLEDGED = "active_acknowledged"
    RETURNED_UNACKNOWLEDGED = "returned_unacknowledged"
    SHELVED = "shelved"
    SUPPRESSED = "suppressed"
    OUT_OF_SERVICE = "out_of_service"


class Severity(StrEnum):
    CRITICAL = "critical"
    MAJOR = "major"
    MINOR = "minor"
    WARNING = "warning"


class EventType(StrEnum):
    """One transition; every one becomes an `alarm_event` in the outbox.

    `returned`: the condition went away while the alarm is unacknowledged (state
    returned_unacknowledged). `cleared`: the condition went away from an acknowledged
    alarm, which is now normal (closed).
    """

    RAISED = "raised"
    RETURNED = "returned"
    CLEARED = "cleared"
    ACKNOWLEDGED = "acknowledged"
    SHELVED = "shelved"
    UNSHELVED = "unshelved"
    SUPPRESSED = "suppressed"
    UNSUPPRESSED = "unsuppressed"
    OUT_OF_SERVICE = "out_of_service"
    IN_SERVICE = "in_service"
    CHATTERING = "chattering"


@dataclass(frozen=True, slots=True)
class AlarmDefinition:
    """One alarm of one device, as the engine builds it from a rule.

    `message` is a template over point values (`出水压力低 {outlet_pressure:.2f} MPa`),
    checked here so a bad template is a configuration error, not a runtime surprise.
    Chattering: more than `chatter_limit` activations within `chatter_window` seconds
    flag the alarm; `chatter_limit=None` turns detection off.
    """

    id: str
    device: str
    severity: Severity
    message: str
    on_delay: float = 0.0
    off_delay: float = 0.0
    chatter_limit: int | None = 3
    chatter_window: float = 60.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "severity", Severity(self.severity))
        if self.on_delay < 0 or self.off_delay < 0:
            raise AlarmError(f"alarm {self.id}: on_delay and off_delay cannot be negative")
        if self.chatter_limit is not None and self.chatter_limit < 1:
            raise AlarmError(f"alarm {self.id}: chatter_limit must be at least 1")
        if self.chatter_window <= 0:
            raise AlarmError(f"alarm {self.id}: chatter_window must be positive")
        try:
            check_template(self.message)
        except ValueError as exc:
            raise AlarmError(f"alarm {self.id}: {exc}") from None


@dataclass(frozen=True, slots=True)
class AlarmEvent:
    """One transition of one alarm, with the state it left the alarm in.

    `state` is what the monitoring centre sees after the event; `details` holds what only
    some events carry (`count` for chattering, `until` for shelved, `expired` when a
    shelve ran out by itself).
    """

    alarm: str
    device: str
    type: EventType
    state: AlarmState
    severity: Severity
    message: str
    ts: float
    by: str | None = None
    comment: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The body of the `alarm_event` for the outbox (JSON-serialisable)."""
        body: dict[str, Any] = {
            "alarm": self.alarm, "device": self.device, "transition": str(self.type),
            "state": str(self.state), "severity": str(self.severity),
            "message": self.message, "ts": self.ts,
        }
        if self.by is not None:
            body["by"] = self.by
        if self.comment is not None:
            body["comment"] = self.comment
        body.update(self.details)
        return body
