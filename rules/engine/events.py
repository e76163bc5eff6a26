"""What the engine puts in the outbox: alarm and ticket events, their current state,
maintenance mode. Bodies are already in the upstream contract's words (docs/upstream.md):
times as ISO-8601 UTC, `alarm` and `ticket` as the ids. The MQTT sink publishes
`alarm_state` retained on `…/alarms/<alarm>` and `ticket_state` on `…/tickets/<ticket>`,
and clears the retained message (an empty payload) when `closed` is true.
"""

from __future__ import annotations

from typing import Any

from gateway.batch import Event
from gateway.sinks.contract import iso_utc
from rules.alarms import Alarm, AlarmEvent, AlarmState
from rules.tickets import Status, Ticket, TicketEvent

ALARM_EVENT = "alarm_event"
ALARM_STATE = "alarm_state"
TICKET_EVENT = "ticket_event"
TICKET_STATE = "ticket_state"
MAINTENANCE = "maintenance"
ALARM_FLOOD = "alarm_flood"
# Every event type the engine produces; the outbox never drops these when it is full.
RULE_EVENTS = (ALARM_EVENT, ALARM_STATE, TICKET_EVENT, TICKET_STATE, MAINTENANCE, ALARM_FLOOD)

_ALARM_TIMES = ("raised_at", "acknowledged_at", "shelved_until", "last_change")


def _iso(ts: float | None) -> str | None:
    return None if ts is None else iso_utc(ts)


def alarm_event(event: AlarmEvent, name: str) -> Event:
    """One transition of one alarm (`…/events/alarm_event`)."""
    body = event.to_dict()
    body.pop("ts", None)  # the envelope's ts is the event's time
    body["name"] = name
    if "until" in body:
        body["until"] = _iso(body["until"])
    return Event(ALARM_EVENT, event.ts, event.device, body)


def alarm_state(alarm: Alarm, name: str, now: float) -> Event:
    """The alarm as the monitoring centre sees it now (retained `…/alarms/<alarm>`).

    `closed`: the alarm is normal and nothing is left to acknowledge, so the retained
    message is cleared.
    """
    state = alarm.state_dict()
    body: dict[str, Any] = {"alarm": state.pop("id"), "name": name}
    for key, value in state.items():
        body[key] = _iso(value) if key in _ALARM_TIMES else value
    body["closed"] = alarm.state == AlarmState.NORMAL
    return Event(ALARM_STATE, now, alarm.definition.device, body)


def alarm_removed(alarm_id: str, now: float) -> Event:
    """An alarm whose rule is gone from the configuration: its retained state is cleared
    (`closed`), or the platform would show it open for good with no way to act on it."""
    return Event(ALARM_STATE, now, None, {"alarm": alarm_id, "closed": True})


def ticket_event(event: TicketEvent) -> Event:
    """One step or clock event of one ticket (`…/events/ticket_event`)."""
    body = event.to_dict()
    body.pop("type", None)  # "ticket_event": the envelope's type says so
    body.pop("ts", None)
    if isinstance(body.get("deadline"), int | float):  # times are ISO throughout the contract
        body["deadline"] = iso_utc(body["deadline"])
    return Event(TICKET_EVENT, event.ts, event.device, body)


def ticket_state(ticket: Ticket, now: float) -> Event:
    """The ticket now (retained `…/tickets/<ticket>`); `closed` once closed or cancelled."""
    body = ticket.to_state()
    body.pop("type", None)
    body["closed"] = ticket.status in (Status.CLOSED, Status.CANCELLED)
    return Event(TICKET_STATE, now, ticket.device, body)


def maintenance(device: str, on: bool, until: float | None, now: float, *,
                by: str | None = None, reason: str | None = None,
                expired: bool = False) -> Event:
    """A device entered or left maintenance mode; its alarms are suppressed meanwhile.

    `expired`: the mode ended by itself at its `until`, nobody switched it off.
    """
    body: dict[str, Any] = {"maintenance": on, "until": _iso(until)}
    if by is not None:
        body["by"] = by
    if reason is not None:
        body["reason"] = reason
    if expired:
        body["expired"] = True
    return Event(MAINTENANCE, now, device, body)


def alarm_flood(now: float, flood: bool, raises: int, window: float) -> Event:
    """An alarm flood started (`flood` true) or ended: `raises` alarms within `window` s."""
    return Event(ALARM_FLOOD, now, None, {"flood": flood, "raises": raises, "window": window})
