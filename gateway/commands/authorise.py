"""Whether a write may go to a device at all: checked against the profile before any driver
is asked, so a refused write never touches the field bus. And the checks of rule commands
that need the clock (a shelve's end), made before the rule engine is asked.

The drivers check again (defence in depth: a driver is also used by tools), but the
gateway's answer to the platform must not depend on a driver remembering to.
"""

from __future__ import annotations

import math

from drivers.base import Driver
from gateway.commands.models import SHELVE_MAX, ShelveAlarmCommand, WriteCommand
from gateway.config.models import BacnetPoint, SiteConfig
from gateway.sinks.contract import iso_utc


class Refused(Exception):
    """The command is not run; the message tells the platform why."""


# BACnet command priorities a remote operator must never take over (ASHRAE 135, 19.2.1.1):
# writing there would outrank fire and smoke control or equipment protection.
RESERVED_PRIORITIES = {
    1: "manual life safety", 2: "automatic life safety",
    5: "critical equipment control", 6: "minimum on/off",
}


def writable_driver(config: SiteConfig, drivers: list[Driver], command: WriteCommand) -> Driver:
    """The running driver that may take this write; Refused when the device is unknown or
    disabled, the point unknown or not marked writable, the value of the wrong kind or
    outside the point's min/max, or a priority given for a point without priorities."""
    device = next((d for d in config.devices if d.id == command.device), None)
    if device is None:
        raise Refused(f"unknown device {command.device!r}{known(d.id for d in config.devices)}")
    driver = next((d for d in drivers if d.device.id == command.device), None)
    if driver is None:
        raise Refused(f"device {command.device} is disabled in the configuration")
    profile = config.profiles[device.profile]
    point = profile.points.get(command.point)
    if point is None:
        raise Refused(
            f"device {command.device} has no point {command.point!r}"
            f"{known(profile.points)} (profile {profile.id})"
        )
    if not point.writable:
        raise Refused(
            f"point {command.point} of {command.device} is not writable "
            f"(profile {profile.id} does not mark it writable: true)"
        )
    if command.priority is not None and not isinstance(point, BacnetPoint):
        raise Refused("priority applies to BACnet points only")
    if command.priority in RESERVED_PRIORITIES:
        raise Refused(
            f"BACnet priority {command.priority} is reserved for "
            f"{RESERVED_PRIORITIES[command.priority]}; the platform may write at 3, 4 or 7-16 "
            "(the point's own priority when none is given)"
        )
    check_range(command.value, point.min, point.max, f"{command.point} of {command.device}")
    return driver


def check_range(value: object, low: float | None, high: float | None, what: str) -> None:
    """Refused unless a bounded point gets a finite number within [low, high]."""
    if low is None and high is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Refused(f"{what} takes a number, not {value!r}")
    if not math.isfinite(value):
        raise Refused(f"{what} takes a finite number, not {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise Refused(f"{value!r} is outside the allowed range of {what}: {_range(low, high)}")


def _range(low: float | None, high: float | None) -> str:
    if low is None:
        return f"at most {high:g}"
    if high is None:
        return f"at least {low:g}"
    return f"{low:g} to {high:g}"


def known(names: object, limit: int = 20) -> str:
    """"; known: a, b, c" to append to an error, at most `limit` names."""
    listed = sorted(names)  # type: ignore[call-overload]
    more = f" and {len(listed) - limit} more" if len(listed) > limit else ""
    return f"; known: {', '.join(listed[:limit])}{more}" if listed else ""


def shelve_until(command: ShelveAlarmCommand, now: float) -> float:
    """When the shelve ends (seconds since the epoch), from its `for` or its `until`.

    Refused when `until` is not in the future or lies more than SHELVE_MAX ahead: the
    parser capped `for`, but an `until` can only be judged against the clock.
    """
    if command.for_ is not None:
        return now + command.for_
    until = command.until
    assert until is not None  # the model requires one of the two
    if until <= now:
        raise Refused(
            f"until {iso_utc(until)} is not in the future (the gateway's time is {iso_utc(now)})"
        )
    if until - now > SHELVE_MAX:
        raise Refused(
            f"until {iso_utc(until)} is {(until - now) / 86400:.1f} days away; a shelve lasts at "
            f"most {SHELVE_MAX / 86400:g} days: take the alarm out of service (alarm_service) "
            "for longer"
        )
    return until
