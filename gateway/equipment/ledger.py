"""What happens to a device, as ledger entries: the events the gateway already makes,
read as a device's history.

Every event passes `Recorder.entries_for` after it is stored (a pipeline listener); most
say nothing new and give no entry. What gives one:

| event | entry |
| --- | --- |
| `device_status` whose `online` differs from the last one this session | `online` / `offline`; the first `online` ever is also `commissioned` (the first good read) |
| `alarm_state` whose condition (`active`) changed | `alarm_raised` / `alarm_cleared` (SLA alarms are about tickets, not devices: left out) |
| `maintenance` | `maintenance_on` / `maintenance_off` |
| `ticket_event` of a step, an escalation or a breach | `ticket_opened`, `ticket_dispatched`, `ticket_arrived`, `ticket_resolved`, `ticket_followed_up`, `ticket_closed`, `ticket_cancelled`, `ticket_recurred`, `ticket_escalated`, `ticket_sla_breached` |
| `ticket_state` of a preventive ticket that is closed | `maintenance_done` (once per ticket) |
| `meter_event` | `meter_replaced`, `meter_reset`, `meter_jump` |

The recorder keeps what it needs to tell a change from a repeat (which alarms are
active, who is in maintenance, who was ever commissioned); `restore` rebuilds that from
the stored entries after a restart. Whether a device is online is not carried across a
restart: the first status of a session is always written, the gap before it is unknown.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from gateway.batch import Event
from gateway.equipment.store import Entry

COMMISSIONED = "commissioned"
ONLINE, OFFLINE = "online", "offline"
ALARM_RAISED, ALARM_CLEARED = "alarm_raised", "alarm_cleared"
MAINTENANCE_ON, MAINTENANCE_OFF = "maintenance_on", "maintenance_off"
MAINTENANCE_DONE = "maintenance_done"
WARRANTY_ENDING, WARRANTY_ENDED = "warranty_ending", "warranty_ended"
TICKET_STEPS = ("opened", "dispatched", "arrived", "resolved", "followed_up", "closed",
                "cancelled", "recurred", "escalated", "sla_breached")
METER_KINDS = ("replaced", "reset", "jump")
STATUS_KINDS = (ONLINE, OFFLINE)
ALARM_KINDS = (ALARM_RAISED, ALARM_CLEARED)
MAINTENANCE_KINDS = (MAINTENANCE_ON, MAINTENANCE_OFF)
# every kind an entry can have, in the order the docs list them
KINDS = (COMMISSIONED, ONLINE, OFFLINE, ALARM_RAISED, ALARM_CLEARED, MAINTENANCE_ON,
         MAINTENANCE_OFF, *(f"ticket_{s}" for s in TICKET_STEPS), MAINTENANCE_DONE,
         *(f"meter_{k}" for k in METER_KINDS), WARRANTY_ENDING, WARRANTY_ENDED)

# the step fields worth keeping from a ticket event (the rest is in tickets.db)
_TICKET_FIELDS = ("by", "note", "owner", "backup", "count", "clock", "level", "role", "to", "late")
_METER_FIELDS = ("kind", "raw", "previous", "total", "unit", "old_final", "new_initial", "by",
                 "message")


def is_sla_alarm(alarm_id: str) -> bool:
    """An SLA alarm (`<device>.sla_<fault>`, rules/engine/alarm_set.py) is a ticket running
    late, not the device failing."""
    return alarm_id.partition(".")[2].startswith("sla_")


class Recorder:
    """Events in, entries out; pure logic (the stage stores what it returns)."""

    def __init__(self, ignore_types: Iterable[str] = ()) -> None:
        self.ignore = set(ignore_types)
        self.online: dict[str, bool] = {}  # this session's last status per device
        self.commissioned: set[str] = set()
        self.active: dict[str, tuple[str, str, str]] = {}  # alarm → (device, severity, name)
        self.maintenance: set[str] = set()
        self.done: set[str] = set()  # preventive tickets already in as maintenance_done
        self.titles: dict[str, dict[str, Any]] = {}  # ticket → what its opening said

    def restore(self, entries: Iterable[Entry]) -> None:
        """Rebuild from stored entries, oldest first (`online` is not restored)."""
        for e in entries:
            if e.kind == COMMISSIONED:
                self.commissioned.add(e.device)
            elif e.kind == ALARM_RAISED and e.ref:
                self.active[e.ref] = (e.device, e.body.get("severity", ""), e.body.get("name", e.ref))
            elif e.kind == ALARM_CLEARED and e.ref:
                self.active.pop(e.ref, None)
            elif e.kind == MAINTENANCE_ON:
                self.maintenance.add(e.device)
            elif e.kind == MAINTENANCE_OFF:
                self.maintenance.discard(e.device)
            elif e.kind == MAINTENANCE_DONE and e.ref:
                self.done.add(e.ref)

    def new_session(self) -> None:
        self.online.clear()

    def entries_for(self, event: Event) -> list[Entry]:
        """The entries one event makes (most make none)."""
        if event.type in self.ignore:
            return []
        handler = _HANDLERS.get(event.type)
        return handler(self, event) if handler is not None else []

    # -- one handler per event type ----------------------------------------------------------

    def _status(self, event: Event) -> list[Entry]:
        online = event.body.get("online")
        device = event.device
        if not isinstance(online, bool) or not device or self.online.get(device) is online:
            return []
        self.online[device] = online
        out = []
        if online and device not in self.commissioned:
            self.commissioned.add(device)
            out.append(Entry(event.ts, device, COMMISSIONED, None, {"first_good_read": True}))
        body = {} if online else {"last_error": event.body.get("last_error")}
        out.append(Entry(event.ts, device, ONLINE if online else OFFLINE, None, body))
        return out

    def _alarm(self, event: Event) -> list[Entry]:
        body = event.body
        alarm = body.get("alarm")
        if not isinstance(alarm, str) or not alarm or is_sla_alarm(alarm):
            return []
        active = body.get("active")
        was = self.active.get(alarm)
        if active is None and body.get("closed") is True and was is not None:
            active = False  # the rule is gone from the configuration: so is its condition
        if not isinstance(active, bool) or active == (was is not None):
            return []
        if active:
            device = event.device or body.get("device")
            if not device:
                return []
            severity, name = str(body.get("severity", "")), str(body.get("name") or alarm)
            self.active[alarm] = (device, severity, name)
            return [Entry(event.ts, device, ALARM_RAISED, alarm,
                          {"name": name, "severity": severity, "message": body.get("message")})]
        assert was is not None
        self.active.pop(alarm)
        device, severity, name = was
        return [Entry(event.ts, device, ALARM_CLEARED, alarm,
                      {"name": name, "severity": severity, "message": body.get("message")})]

    def _maintenance(self, event: Event) -> list[Entry]:
        device = event.device
        on = event.body.get("maintenance")
        if not device or not isinstance(on, bool):
            return []
        details = {k: event.body[k] for k in ("until", "by", "reason", "expired") if k in event.body}
        if on:
            if device in self.maintenance:
                details["extended"] = True
            self.maintenance.add(device)
            return [Entry(event.ts, device, MAINTENANCE_ON, None, details)]
        if device not in self.maintenance:
            return []
        self.maintenance.discard(device)
        return [Entry(event.ts, device, MAINTENANCE_OFF, None, details)]

    def _ticket_event(self, event: Event) -> list[Entry]:
        body = event.body
        step, ticket = body.get("event"), body.get("ticket")
        if step not in TICKET_STEPS or not isinstance(ticket, str) or not event.device:
            return []
        details: dict[str, Any] = {k: body[k] for k in _TICKET_FIELDS if body.get(k) not in (None, "")}
        if step == "opened":
            state = body.get("state") or {}
            opening = {k: state.get(k) for k in ("kind", "fault", "title", "priority", "category",
                                                 "grade") if state.get(k) is not None}
            self.titles[ticket] = opening
            details.update(opening)
        else:
            details.update({k: v for k, v in self.titles.get(ticket, {}).items()
                            if k in ("kind", "fault", "title")})
        return [Entry(event.ts, event.device, f"ticket_{step}", ticket, details)]

    def _ticket_state(self, event: Event) -> list[Entry]:
        body = event.body
        ticket = body.get("ticket")
        if (body.get("kind") != "preventive" or body.get("state") != "closed"
                or not isinstance(ticket, str) or ticket in self.done or not event.device):
            return []
        self.done.add(ticket)
        steps = {s.get("step"): s for s in body.get("history") or [] if isinstance(s, dict)}
        resolved = steps.get("resolve") or {}
        details = {"task": body.get("fault"), "title": body.get("title"),
                   "opened": body.get("opened"), "resolved": resolved.get("at"),
                   "by": resolved.get("by"), "note": resolved.get("note") or None}
        return [Entry(event.ts, event.device, MAINTENANCE_DONE, ticket,
                      {k: v for k, v in details.items() if v is not None})]

    def _meter(self, event: Event) -> list[Entry]:
        body = event.body
        kind = body.get("kind")
        if kind not in METER_KINDS or not event.device:
            return []
        details = {k: body[k] for k in _METER_FIELDS if k in body and k != "kind"}
        return [Entry(event.ts, event.device, f"meter_{kind}", body.get("point"), details)]


_HANDLERS = {
    "device_status": Recorder._status,
    "alarm_state": Recorder._alarm,
    "maintenance": Recorder._maintenance,
    "ticket_event": Recorder._ticket_event,
    "ticket_state": Recorder._ticket_state,
    "meter_event": Recorder._meter,
}
