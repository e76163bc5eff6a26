"""Maintenance mode: a device being worked on raises no alarms until the work is done.

A technician who isolates a pump would otherwise raise every alarm the pump has. The
mode suppresses the device's alarms (ISA-18.2 "suppressed by design"), with an end time
so a mode nobody switched off cannot hide a real fault for ever: it ends by itself on
the first tick after `until`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(slots=True)
class Mode:
    """One device in maintenance: since when, until when, who and why."""

    since: float
    until: float
    by: str | None = None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> Mode:
        return cls(float(body["since"]), float(body["until"]), body.get("by"), body.get("reason"))


class MaintenanceModes:
    """Devices in maintenance mode, by device id."""

    def __init__(self) -> None:
        self.modes: dict[str, Mode] = {}

    def __contains__(self, device: object) -> bool:
        return device in self.modes

    def enter(self, device: str, now: float, until: float, by: str | None,
              reason: str | None) -> Mode:
        """Start (or extend: a second `on` moves the end) the mode of `device`."""
        current = self.modes.get(device)
        since = current.since if current is not None else now
        mode = self.modes[device] = Mode(since, until, by, reason)
        return mode

    def leave(self, device: str) -> Mode | None:
        return self.modes.pop(device, None)

    def expired(self, now: float) -> list[str]:
        """Devices whose mode has run out by `now`."""
        return sorted(d for d, mode in self.modes.items() if now >= mode.until)

    def until(self) -> dict[str, float]:
        return {device: mode.until for device, mode in sorted(self.modes.items())}

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return {device: mode.to_dict() for device, mode in self.modes.items()}

    def load(self, saved: dict[str, dict[str, Any]]) -> None:
        self.modes = {device: Mode.from_dict(body) for device, body in saved.items()}
