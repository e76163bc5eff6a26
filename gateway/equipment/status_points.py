"""Equipment status and alarm counts as readings, so a time-series store that takes
readings only (InfluxDB) can chart what the events say: which device was online, in
service or faulted when, and how many alarms stood open.

Per device (its own telemetry, so it carries the device's tags):
- `online`: 1 or 0, on every `device_status` event that knows (one a minute, and at once
  on a change), stamped at the event;
- `equipment_state`: the state the KPIs count (docs/equipment.md), as a code ordered from
  good to bad, so the worst of an interval is its max: up 0, maintenance 1, offline 2,
  fault 3. Sent when it changes, stamped at the event that changed it, and again every
  `heartbeat` unchanged, so a chart of the last hours has a value to start from. A device
  with no status yet (unknown) is not sent.

For the site (device = the site id, like the site's KPI readings), one batch per change:
`alarms_active_<severity>` (active_unacknowledged or active_acknowledged),
`alarms_active` (their sum), `alarms_unacknowledged` (active or returned, awaiting an
acknowledgement), `alarms_hidden` (shelved, suppressed, out of service) and
`alarms_raised` (raises since the batch before), resent every `heartbeat` unchanged.
Counts cover every alarm the monitoring centre sees, SLA and intact-rate alarms too.

The stage feeds it from its pipeline listener and its tick (`take`), which hands the
batches on: a listener cannot emit. After a start the counts come from the rule engine's
alarms (`seed`), since no event repeats the alarms open before the stop.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from gateway.batch import Batch, Event
from gateway.equipment.timeline import DOWN_OFFLINE, FAULT, MAINTENANCE, UP

ONLINE = "online"
STATE = "equipment_state"
STATE_CODES = {UP: 0, MAINTENANCE: 1, DOWN_OFFLINE: 2, FAULT: 3}
DEVICE_POINTS = (ONLINE, STATE)

SEVERITIES = ("critical", "major", "minor", "warning")
ACTIVE = ("active_unacknowledged", "active_acknowledged")
UNACKNOWLEDGED = ("active_unacknowledged", "returned_unacknowledged")
HIDDEN = ("shelved", "suppressed", "out_of_service")
RAISED = "alarms_raised"
ALARM_POINTS = (*(f"alarms_active_{s}" for s in SEVERITIES), "alarms_active",
                "alarms_unacknowledged", "alarms_hidden", RAISED)
HEARTBEAT = 900.0  # seconds: as report by exception's default max_interval upstream

Counts = tuple[int, ...]  # the values of ALARM_POINTS but alarms_raised


def alarm_views(engine: Any) -> list[dict[str, Any]]:
    """The rule engine's open alarms (`RuleEngine.alarms`), or none without an engine."""
    views = getattr(engine, "alarms", None)
    return list(views(active_only=True)) if callable(views) else []


class StatusPoints:
    """What the events said about devices and alarms, waiting to go out as batches."""

    def __init__(self, site_id: str, heartbeat: float = HEARTBEAT) -> None:
        self.site_id = site_id
        self.heartbeat = heartbeat
        self._alarms: dict[str, tuple[str, str]] = {}  # alarm → (severity, state), not normal
        self._pending: list[Batch] = []  # device batches not yet taken
        self._counts: list[tuple[float, Counts, int]] = []  # (ts, counts, raised) not yet taken
        self._last: tuple[float, Counts] | None = None  # the counts sent (or pending) last
        self._states: dict[str, tuple[str, float]] = {}  # device → (state, ts) sent last

    # -- in -------------------------------------------------------------------------------

    def seed(self, alarms: Iterable[Mapping[str, Any]], states: Mapping[str, str], now: float) -> None:
        """Start from the engine's open alarms and the devices' states now; both go out
        with the next `take`, so each start of the gateway begins every series."""
        self._alarms = {}
        for view in alarms:
            self._alarm(view)
        self._last = None
        self._changed(now)
        self._states.clear()
        self.states(states, now)

    def observe(self, event: Event) -> None:
        """One event the pipeline stored: a status, an alarm's state, a raise."""
        if event.type == "device_status":
            online = event.body.get("online")
            if isinstance(online, bool) and event.device:
                self._pending.append(Batch(event.device, event.ts, (ONLINE,), [int(online)]))
        elif event.type == "alarm_state":
            if self._alarm(event.body):
                self._changed(event.ts)
        elif event.type == "alarm_event" and event.body.get("transition") == "raised":
            self._changed(event.ts, raised=1)

    def states(self, states: Mapping[str, str], ts: float) -> None:
        """The devices' states after an event at `ts`: those that changed are sent."""
        for device, state in states.items():
            code = STATE_CODES.get(state)
            if code is None:  # unknown: the gateway has no status for it yet
                continue
            sent = self._states.get(device)
            if sent is None or sent[0] != state:
                self._states[device] = (state, ts)
                self._pending.append(Batch(device, ts, (STATE,), [code]))

    # -- out ------------------------------------------------------------------------------

    def take(self, now: float) -> list[Batch]:
        """The batches waiting, with the heartbeats due at `now`."""
        for device, (state, ts) in self._states.items():
            if not 0 <= now - ts < self.heartbeat:
                self._states[device] = (state, now)
                self._pending.append(Batch(device, now, (STATE,), [STATE_CODES[state]]))
        if not self._counts and self._last is not None and not 0 <= now - self._last[0] < self.heartbeat:
            self._changed(now, again=True)
        # a device's reading goes out with its polls: stamped when it is handed on (the
        # latest of each point), never before a poll already stored, or the device's
        # telemetry would arrive out of order; the events keep every change's own time
        latest = {(b.device, b.points): b for b in self._pending}
        out = [b if b.ts >= now else Batch(b.device, now, b.points, b.values)
               for b in latest.values()]
        self._pending = []
        out += [Batch(self.site_id, ts, ALARM_POINTS, [*counts, raised])
                for ts, counts, raised in self._counts]
        self._counts = []
        return out

    # -- helpers --------------------------------------------------------------------------

    def _alarm(self, body: Mapping[str, Any]) -> bool:
        """Keep one alarm's state; True when what is counted changed."""
        alarm = body.get("alarm")
        if not isinstance(alarm, str):
            return False
        before = self._alarms.get(alarm)
        state = body.get("state")
        if body.get("closed") is True or not isinstance(state, str) or state == "normal":
            self._alarms.pop(alarm, None)
        else:
            self._alarms[alarm] = (str(body.get("severity", "")), state)
        return self._alarms.get(alarm) != before

    def _count(self) -> Counts:
        active = [severity for severity, state in self._alarms.values() if state in ACTIVE]
        by_severity = tuple(active.count(s) for s in SEVERITIES)
        return (*by_severity, len(active),
                sum(1 for _, state in self._alarms.values() if state in UNACKNOWLEDGED),
                sum(1 for _, state in self._alarms.values() if state in HIDDEN))

    def _changed(self, ts: float, raised: int = 0, *, again: bool = False) -> None:
        """Counts as they are after an event at `ts` (`again`: unchanged, a heartbeat); one
        batch per moment, never stamped before the one already made, so the series reads
        in the order things happened."""
        counts = self._count()
        if self._last is not None:
            if counts == self._last[1] and not raised and not again:
                return
            ts = max(ts, self._last[0])
        if self._counts and self._counts[-1][0] == ts:
            raised += self._counts[-1][2]
            self._counts[-1] = (ts, counts, raised)
        else:
            self._counts.append((ts, counts, raised))
        self._last = (ts, counts)
