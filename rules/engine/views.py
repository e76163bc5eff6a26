"""What the engine shows: alarms, tickets, maintenance modes, derived points, statistics.

Plain JSON-ready dicts in the same shape as the retained upstream messages, so the CLI,
`gateway status` and the platform read one format.
"""

from __future__ import annotations

from collections import Counter as Tally
from typing import TYPE_CHECKING, Any

from rules.alarms import Alarm, AlarmState
from rules.engine import events
from rules.engine.errors import unknown

if TYPE_CHECKING:
    from rules.engine.engine import RuleEngine


class Views:
    """The view methods of `RuleEngine`."""

    def alarms(self: RuleEngine, *, active_only: bool = False) -> list[dict[str, Any]]:
        """Every alarm's state (the `alarm_state` body, plus the rule it comes from);
        `active_only`: those not normal (active, awaiting acknowledgement, or hidden)."""
        now = self.clock()
        return [self._alarm_view(alarm, now) for _, alarm in sorted(self.alarm_set.alarms.items())
                if not active_only or alarm.state is not AlarmState.NORMAL]

    def alarm(self: RuleEngine, alarm_id: str) -> dict[str, Any]:
        alarm = self.alarm_set.alarms.get(alarm_id)
        if alarm is None:
            raise unknown("alarm", alarm_id, self.alarm_set.alarms)
        return self._alarm_view(alarm, self.clock())

    def tickets(self: RuleEngine, *, open_only: bool = False) -> list[dict[str, Any]]:
        """Tickets not yet closed or cancelled (closed ones are in the store's ledger);
        `open_only`: those still being worked on (open, dispatched, on site)."""
        return [t.to_state() for t in sorted(self.book.tickets(), key=lambda t: t.id)
                if not open_only or t.active]

    def maintenance_modes(self: RuleEngine) -> dict[str, float]:
        """Devices in maintenance mode and until when."""
        return self.maintenance.until()

    def derived_points(self: RuleEngine) -> dict[str, list[str]]:
        """Each device's derived point names, for the catalog and the points views."""
        return {device: [r.rule.id for r in rules] for device, rules in self.derived.items()}

    def stats(self: RuleEngine) -> dict[str, Any]:
        now = self.clock()
        return {
            "rules": len(self.index.order),
            "evaluations": self.evaluator.evaluations,
            "evaluation_errors": self.evaluator.errors,
            "alarms": dict(Tally(str(a.state) for a in self.alarm_set.alarms.values())),
            "open_tickets": sum(1 for t in self.book.tickets() if t.active),
            "raises_in_window": self.flood.count(now),
            "flood_window": self.flood.window,
            "flood": self.flood.in_flood,
        }

    def _alarm_view(self: RuleEngine, alarm: Alarm, now: float) -> dict[str, Any]:
        body = events.alarm_state(alarm, self.alarm_set.names[alarm.id], now).body
        rule = self.alarm_set.rules.get(alarm.id)
        if rule is not None:
            body["rule"] = rule.rule.id
        elif alarm.id in self.alarm_set.external:  # raised by another stage: patrols, KPIs
            body["rule"] = self.alarm_set.external[alarm.id].owner
        else:
            body["rule"] = "sla"
        return body
