"""What one engine call (a batch, a tick, a command) produced and changed.

Alarm states are published once per alarm per call, after all its events, and the
stores are written once per call, so a batch that moves an alarm twice costs one
retained message and one transaction.
"""

from __future__ import annotations

from gateway.batch import Event
from rules.alarms import Alarm
from rules.engine.derived import DerivedBatches


class Call:
    """The outputs and the changes of one call, at one time."""

    def __init__(self, now: float) -> None:
        self.now = now
        self.events: list[Event] = []
        self.derived = DerivedBatches()
        self.alarms: dict[str, Alarm] = {}  # visible alarms that changed: their state is published
        self.debouncers: dict[str, Alarm] = {}  # hidden ones: saved, never published
        self.sla = False  # an SLA alarm started watching a ticket
        self.maintenance = False  # a device entered or left maintenance mode
        self.save_counters = False

    def changed(self, alarm: Alarm, *, hidden: bool) -> None:
        (self.debouncers if hidden else self.alarms)[alarm.id] = alarm
