"""What the status page shows, as JSON built from the running gateway at each request.

Nothing here keeps state of its own: live values are the pipeline's latest batches,
online state the devices' health, alarms and tickets the rule engine's views (the
retained upstream shapes), the outbox and sinks `Gateway.status()`. Devices are grouped
by building (their `location.building`) and system (their profile's `system`), the way
the site's engineers walk it.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any, Protocol

from gateway.batch import Quality
from gateway.catalog import Catalog
from gateway.config.models import SiteConfig
from gateway.health import DeviceHealth

NO_BUILDING = ""  # devices without location.building: listed last, under "site-wide"
SEVERITY_ORDER = {"critical": 0, "major": 1, "minor": 2, "warning": 3}
ACKNOWLEDGEABLE = ("active_unacknowledged", "returned_unacknowledged")
DELIVERY_KEYS = ("outbox", "sinks", "health", "disk")


class StatusSource(Protocol):
    """What the page reads: the running gateway (gateway/daemon.py)."""

    config: SiteConfig
    catalog: Catalog
    health: dict[str, DeviceHealth]
    pipeline: Any  # .current(): device -> point -> (value, quality, ts)
    rules: Any  # .alarms(active_only=), .tickets(open_only=), .maintenance_modes(), .clock()

    def status(self) -> dict[str, object]: ...


def page_state(gw: StatusSource, now: float | None = None) -> dict[str, Any]:
    """Everything the page draws, in one answer (it polls this every 2 s)."""
    now = time.time() if now is None else now
    status = gw.status()
    return {
        "site": {"id": gw.config.site.id, "name": gw.config.site.name},
        "ts": now,
        "buildings": devices_view(gw, now),
        "alarms": alarms_view(gw),
        "tickets": tickets_view(gw),
        **{key: status.get(key) for key in DELIVERY_KEYS},
    }


def devices_view(gw: StatusSource, now: float) -> list[dict[str, Any]]:
    """[{building, systems: [{system, devices: [...]}]}], buildings and systems by name,
    devices in the order the device files list them; disabled devices are left out."""
    current = gw.pipeline.current()
    maintenance = gw.rules.maintenance_modes()
    buildings: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for device in gw.config.devices:
        if not device.enabled:
            continue
        info = gw.catalog.device(device.id)
        profile = gw.config.profiles.get(device.profile)
        order = list(profile.points) if profile is not None else []
        health = gw.health.get(device.id)
        view = {
            "id": device.id,
            "name": device.name or device.id,
            "floor": device.location.floor,
            "room": device.location.room,
            "online": health.online if health is not None else None,
            "last_good": health.last_good if health is not None else None,
            "last_error": health.last_error if health is not None else None,
            "maintenance_until": maintenance.get(device.id),
            "points": points_view(current.get(device.id, {}), info, order, now),
        }
        building = device.location.building or NO_BUILDING
        buildings.setdefault(building, {}).setdefault(info.system, []).append(view)
    return [
        {"building": building,
         "systems": [{"system": system, "devices": devices}
                     for system, devices in sorted(systems.items())]}
        for building, systems in sorted(buildings.items(), key=lambda kv: (kv[0] == NO_BUILDING, kv[0]))
    ]


def points_view(points: dict[str, tuple[object, str, float]], info: Any, order: list[str],
                now: float) -> list[dict[str, Any]]:
    """Each point's latest value: the raw `value` (null unless good), the `text` to show
    (with the enum's meaning), unit, display name, quality and age in seconds; in the
    profile's order, derived points after."""
    rank = {name: i for i, name in enumerate(order)}
    rows = []
    for point in sorted(points, key=lambda p: (rank.get(p, len(rank)), p)):
        value, quality, ts = points[point]
        good = quality == Quality.GOOD
        text = format_value(value) if good else ""
        if good and point in info.enums and isinstance(value, int | float):
            meaning = info.enums[point].get(int(value))
            text = f"{text} {meaning}" if meaning else text
        rows.append({
            "point": point,
            "name": info.point_names.get(point) or point,
            "value": value if good else None,
            "text": text,
            "unit": info.units.get(point, ""),
            "quality": str(quality),
            "age": round(max(0.0, now - ts), 1),
        })
    return rows


def format_value(value: object) -> str:
    """A reading as people read it: floats to at most 3 decimals, no trailing zeros."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".") or "0"
    return str(value)


def alarms_view(gw: StatusSource) -> list[dict[str, Any]]:
    """Alarms that are not normal, the most severe first, then the newest; each with
    whether it can be acknowledged and its device's name and building."""
    devices = {d.id: d for d in gw.config.devices}
    alarms = []
    for alarm in gw.rules.alarms(active_only=True):
        device = devices.get(alarm.get("device"))
        alarms.append({
            **alarm,
            "device_name": (device.name or device.id) if device is not None else alarm.get("device"),
            "building": device.location.building if device is not None else None,
            "can_ack": alarm.get("state") in ACKNOWLEDGEABLE,
        })
    alarms.sort(key=lambda a: a.get("raised_at") or a.get("last_change") or "", reverse=True)
    alarms.sort(key=lambda a: SEVERITY_ORDER.get(str(a.get("severity")), len(SEVERITY_ORDER)))
    return alarms


def tickets_view(gw: StatusSource) -> list[dict[str, Any]]:
    """Tickets still being worked on, the nearest deadline first; each SLA clock with the
    seconds left on the rule engine's clock (negative: overdue) while its step is not done."""
    now = gw.rules.clock()
    devices = {d.id: d for d in gw.config.devices}
    tickets = []
    for ticket in gw.rules.tickets(open_only=True):
        clocks = []
        for name, clock in (ticket.get("sla") or {}).items():
            deadline = _epoch(clock.get("deadline"))
            running = clock.get("done") is None and clock.get("state") != "stopped"
            clocks.append({
                "clock": name, "state": clock.get("state"), "deadline": clock.get("deadline"),
                "seconds_left": round(deadline - now, 1) if running and deadline is not None else None,
            })
        due = _epoch(ticket.get("due"))
        device = devices.get(ticket.get("device"))
        tickets.append({
            **{k: v for k, v in ticket.items() if k not in ("sla", "history")},
            "device_name": (device.name or device.id) if device is not None else ticket.get("device"),
            "clocks": clocks,
            "due_in": round(due - now, 1) if due is not None else None,
        })
    tickets.sort(key=lambda t: (t["due_in"] is None, t["due_in"] or 0.0))
    return tickets


def _epoch(iso: object) -> float | None:
    if not isinstance(iso, str):
        return None
    try:
        return datetime.fromisoformat(iso).timestamp()
    except ValueError:
        return None
