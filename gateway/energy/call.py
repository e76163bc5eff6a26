"""What one energy stage call (a batch, a tick, an operator's entry) produced and writes:
outputs in the order they are sent, and the changes committed in one transaction."""

from __future__ import annotations

from gateway.batch import Batch, Event
from gateway.energy.groups import GroupRollup
from gateway.energy.periods import Calendar
from gateway.energy.store import Writes

Output = list[Batch | Event]


class Call:
    """What one stage call produced and writes."""

    def __init__(self, now: float, calendar: Calendar) -> None:
        self.now = now
        self.writes = Writes(calendar)
        self.readings: list[Batch] = []  # manual readings, sent like polled ones
        self.rollups: dict[tuple[str, str, float], Batch] = {}
        self.groups: list[GroupRollup] = []
        self.night: list[Batch] = []
        self.events: list[Event] = []

    def event(self, ts: float, device: str, body: dict) -> None:
        self.events.append(Event("meter_event", ts, device, body))
        self.writes.event(ts, device, body.get("point"), body["kind"], body)
