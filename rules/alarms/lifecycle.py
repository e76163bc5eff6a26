"""The life cycle of one alarm (ISA-18.2 / IEC 62682), as a state machine driven by the engine.

The engine evaluates the rule's condition and calls `update(now, active, values)`;
commands and the CLI call `acknowledge`, `shelve`, `unshelve`, `out_of_service`; the
maintenance mode calls `suppress`; a timer calls `tick(now)`. Every call returns the
events it caused, for the outbox. Time is always passed in, so the machine is pure logic
and a test can walk it second by second.

Two layers, kept apart on purpose:

- the **process state** (normal, active unacknowledged, active acknowledged, returned
  unacknowledged) follows the debounced condition and the operator's acknowledgements;
- the **modes** (shelved, suppressed by design, out of service) hide the alarm. While
  hidden, the condition is still tracked but raises and returns are not announced; when
  the alarm is visible again it lands in the state the condition implies (active →
  active unacknowledged, so an operator sees a fault that outlived the maintenance).

Every operation first runs the timers (delays, shelve expiry, end of chattering) up to
`now`, so a command sees the same alarm a `tick` would have left.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rules.alarms.message import render_message
from rules.alarms.model import AlarmDefinition, AlarmError, AlarmEvent, AlarmState, EventType

_HIDDEN = (AlarmState.OUT_OF_SERVICE, AlarmState.SHELVED, AlarmState.SUPPRESSED)
_SNAPSHOT_VERSION = 1


class Alarm:
    """One alarm of one device: its state, timers and history of activations."""

    def __init__(self, definition: AlarmDefinition) -> None:
        self.definition = definition
        self.condition = False  # the debounced condition (after on/off delays)
        self._pending: bool | None = None  # the condition a running delay leads to
        self._pending_since = 0.0
        self._base = AlarmState.NORMAL  # the process state, under any mode
        self.shelved_until: float | None = None
        self._shelved_by: str | None = None
        self.suppressed = False
        self.in_service = True
        self.chattering = False
        self._activations: list[float] = []  # when the condition became active, within the window
        self.values: dict[str, Any] = {}
        self.message = render_message(definition.message, {})
        self.raised_at: float | None = None
        self.acknowledged_at: float | None = None
        self.acknowledged_by: str | None = None
        self.last_change: float | None = None

    @property
    def id(self) -> str:
        return self.definition.id

    @property
    def state(self) -> AlarmState:
        """What the monitoring centre sees: a mode if one hides the alarm, else the process state."""
        if not self.in_service:
            return AlarmState.OUT_OF_SERVICE
        if self.shelved_until is not None:
            return AlarmState.SHELVED
        if self.suppressed:
            return AlarmState.SUPPRESSED
        return self._base

    @property
    def pending(self) -> tuple[bool | None, float]:
        """The condition a running delay leads to (None: no delay runs) and since when.

        With `last_change` it tells the engine whether a call changed anything worth
        saving: a delay that starts changes no state but must survive a restart.
        """
        return (self._pending, self._pending_since if self._pending is not None else 0.0)

    # --- what the engine and the operators call ---------------------------------------

    def update(
        self, now: float, active: bool | None, values: Mapping[str, Any] | None = None
    ) -> list[AlarmEvent]:
        """A new evaluation of the condition; `None` (unknown) keeps the state.

        A change starts the on- or off-delay; the condition going back before the delay
        is over cancels it, so a blip shorter than `on_delay` raises nothing.
        """
        if values:
            self.values.update(values)
        events = self._run_timers(now)
        if active is not None:
            if active == self.condition:
                self._pending = None
            elif self._pending != active:
                self._pending, self._pending_since = active, now
            events += self._run_timers(now)  # a zero delay takes effect at once
        return events

    def tick(self, now: float) -> list[AlarmEvent]:
        """Let time pass without a new value: delays, shelve expiry, end of chattering."""
        return self._run_timers(now)

    def acknowledge(self, now: float, by: str, comment: str | None = None) -> list[AlarmEvent]:
        """The operator has seen it: active → active acknowledged, returned → normal.

        Never dated before the alarm's last change: a wall clock set back must not make
        the time to acknowledge negative."""
        now = max(now, self.last_change or now)
        events = self._run_timers(now)
        state = self.state
        if state in _HIDDEN:
            raise AlarmError(f"alarm {self.id} is {state}: there is nothing to acknowledge")
        if state == AlarmState.NORMAL:
            raise AlarmError(f"alarm {self.id} is normal: there is nothing to acknowledge")
        if state == AlarmState.ACTIVE_ACKNOWLEDGED:
            raise AlarmError(f"alarm {self.id} is already acknowledged (by {self.acknowledged_by})")
        self._base = (
            AlarmState.ACTIVE_ACKNOWLEDGED
            if state == AlarmState.ACTIVE_UNACKNOWLEDGED
            else AlarmState.NORMAL
        )
        self.acknowledged_at, self.acknowledged_by = now, by
        events.append(self._event(now, EventType.ACKNOWLEDGED, by=by, comment=comment))
        return events

    def shelve(
        self, now: float, until: float, by: str, reason: str | None = None
    ) -> list[AlarmEvent]:
        """Hide the alarm until `until` (shelving a shelved alarm moves its expiry)."""
        events = self._run_timers(now)
        if not self.in_service:
            raise AlarmError(f"alarm {self.id} is out of service: it cannot be shelved")
        if until <= now:
            raise AlarmError(f"alarm {self.id}: shelve until a time in the future")
        self.shelved_until, self._shelved_by = until, by
        events.append(
            self._event(now, EventType.SHELVED, by=by, comment=reason, details={"until": until})
        )
        return events

    def unshelve(self, now: float, by: str) -> list[AlarmEvent]:
        """End the shelving early; the alarm takes the state its condition implies."""
        events = self._run_timers(now)
        if self.shelved_until is None:
            raise AlarmError(f"alarm {self.id} is not shelved")
        events.append(self._unshelve(now, by=by, expired=False))
        return events

    def suppress(self, now: float, on: bool) -> list[AlarmEvent]:
        """Suppressed by design (the device is in maintenance); repeating a setting is a no-op.

        Idempotent because the engine sets it from the device's mode, not an operator.
        """
        events = self._run_timers(now)
        if on == self.suppressed:
            return events
        self.suppressed = on
        if not on:
            self._reveal(now)
        events.append(self._event(now, EventType.SUPPRESSED if on else EventType.UNSUPPRESSED))
        return events

    def out_of_service(
        self, now: float, on: bool, by: str, comment: str | None = None
    ) -> list[AlarmEvent]:
        """Take the alarm out of service (ends any shelving) or put it back."""
        events = self._run_timers(now)
        if on != self.in_service:
            raise AlarmError(
                f"alarm {self.id} is already {'out of service' if on else 'in service'}"
            )
        self.in_service = not on
        if on:
            self.shelved_until = self._shelved_by = None
        else:
            self._reveal(now)
        kind = EventType.OUT_OF_SERVICE if on else EventType.IN_SERVICE
        events.append(self._event(now, kind, by=by, comment=comment))
        return events

    # --- upstream and persistence ------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The retained `alarms/<id>` message body: the alarm as the monitoring centre sees it."""
        return {
            "id": self.id,
            "device": self.definition.device,
            "state": str(self.state),
            "severity": str(self.definition.severity),
            "message": self.message,
            "active": self.condition,
            "raised_at": self.raised_at,
            "acknowledged_at": self.acknowledged_at,
            "acknowledged_by": self.acknowledged_by,
            "shelved_until": self.shelved_until,
            "chattering": self.chattering,
            "last_change": self.last_change,
        }

    def snapshot(self) -> dict[str, Any]:
        """Everything needed to carry on after a restart, running timers included (JSON-ready)."""
        return {
            "version": _SNAPSHOT_VERSION,
            "condition": self.condition,
            "pending": self._pending,
            "pending_since": self._pending_since,
            "base": str(self._base),
            "shelved_until": self.shelved_until,
            "shelved_by": self._shelved_by,
            "suppressed": self.suppressed,
            "in_service": self.in_service,
            "chattering": self.chattering,
            "activations": list(self._activations),
            "values": dict(self.values),
            "message": self.message,
            "raised_at": self.raised_at,
            "acknowledged_at": self.acknowledged_at,
            "acknowledged_by": self.acknowledged_by,
            "last_change": self.last_change,
        }

    @classmethod
    def restore(cls, definition: AlarmDefinition, snapshot: Mapping[str, Any]) -> Alarm:
        """The alarm as `snapshot()` left it, under the (possibly edited) definition.

        Timers are not replayed here: a delay or a shelve that ran out during the downtime
        takes effect at the first `tick` or `update`, with that call's time.
        """
        if snapshot.get("version") != _SNAPSHOT_VERSION:
            raise AlarmError(f"alarm {definition.id}: unknown saved state version {snapshot.get('version')!r}")
        alarm = cls(definition)
        alarm.condition = bool(snapshot["condition"])
        alarm._pending = snapshot["pending"]
        alarm._pending_since = float(snapshot["pending_since"])
        alarm._base = AlarmState(snapshot["base"])
        alarm.shelved_until = snapshot["shelved_until"]
        alarm._shelved_by = snapshot["shelved_by"]
        alarm.suppressed = bool(snapshot["suppressed"])
        alarm.in_service = bool(snapshot["in_service"])
        alarm.chattering = bool(snapshot["chattering"])
        alarm._activations = [float(t) for t in snapshot["activations"]]
        alarm.values = dict(snapshot["values"])
        alarm.message = snapshot["message"]
        alarm.raised_at = snapshot["raised_at"]
        alarm.acknowledged_at = snapshot["acknowledged_at"]
        alarm.acknowledged_by = snapshot["acknowledged_by"]
        alarm.last_change = snapshot["last_change"]
        return alarm

    # --- inside the machine -------------------------------------------------------------

    def _run_timers(self, now: float) -> list[AlarmEvent]:
        events: list[AlarmEvent] = []
        if self._pending is not None:
            d = self.definition
            delay = d.on_delay if self._pending else d.off_delay
            if now - self._pending_since >= delay:
                events += self._set_condition(now, self._pending)
        if self.shelved_until is not None and now >= self.shelved_until:
            events.append(self._unshelve(now, by=None, expired=True))
        if self.chattering:
            self._forget_activations(now)
            if not self._activations:
                self.chattering = False
                calm = {"chattering": False, "count": 0}
                events += self._announce(self._event(now, EventType.CHATTERING, details=calm))
        return events

    def _set_condition(self, now: float, active: bool) -> list[AlarmEvent]:
        """The debounced condition changed: move the process state and say so (unless hidden)."""
        self.condition, self._pending = active, None
        if not active:
            if self._base == AlarmState.ACTIVE_UNACKNOWLEDGED:
                self._base, kind = AlarmState.RETURNED_UNACKNOWLEDGED, EventType.RETURNED
            elif self._base == AlarmState.ACTIVE_ACKNOWLEDGED:
                self._base, kind = AlarmState.NORMAL, EventType.CLEARED
            else:
                return []
            return self._announce(self._event(now, kind), quiet_when_chattering=True)

        self._base = AlarmState.ACTIVE_UNACKNOWLEDGED
        self.raised_at, self.acknowledged_at, self.acknowledged_by = now, None, None
        self._activations.append(now)
        self._forget_activations(now)
        limit = self.definition.chatter_limit
        if not self.chattering and limit is not None and len(self._activations) > limit:
            # One chattering flag stands in for this raise and the ones that follow.
            self.chattering = True
            flag = {"chattering": True, "count": len(self._activations)}
            return self._announce(self._event(now, EventType.CHATTERING, details=flag))
        return self._announce(self._event(now, EventType.RAISED), quiet_when_chattering=True)

    def _unshelve(self, now: float, *, by: str | None, expired: bool) -> AlarmEvent:
        self.shelved_until = self._shelved_by = None
        self._reveal(now)
        details = {"expired": True} if expired else {}
        return self._event(now, EventType.UNSHELVED, by=by, details=details)

    def _reveal(self, now: float) -> None:
        """Leaving a mode: if visible again, take the state the condition implies."""
        if self.state in _HIDDEN:
            return
        if self.condition:
            self._base = AlarmState.ACTIVE_UNACKNOWLEDGED
            self.raised_at, self.acknowledged_at, self.acknowledged_by = now, None, None
        else:
            self._base = AlarmState.NORMAL

    def _forget_activations(self, now: float) -> None:
        horizon = now - self.definition.chatter_window
        self._activations = [t for t in self._activations if t > horizon]

    def _announce(self, event: AlarmEvent, *, quiet_when_chattering: bool = False) -> list[AlarmEvent]:
        """Condition-driven events are not announced while hidden (or chattering, for raises)."""
        if self.state in _HIDDEN or (quiet_when_chattering and self.chattering):
            return []
        return [event]

    def _event(
        self, now: float, kind: EventType, *, by: str | None = None,
        comment: str | None = None, details: dict[str, Any] | None = None,
    ) -> AlarmEvent:
        self.message = render_message(self.definition.message, self.values)
        self.last_change = now
        d = self.definition
        return AlarmEvent(
            d.id, d.device, kind, self.state, d.severity, self.message, now,
            by=by, comment=comment, details=details or {},
        )
