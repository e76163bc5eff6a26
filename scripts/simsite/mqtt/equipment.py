"""What every simulated MQTT device shares: messages on a real-time schedule, and the
ways a device misbehaves on the wire (falls silent, sends bad JSON, floods).

MQTT equipment runs on the wall clock, not the site's simulated clock: the gateway judges
a device's silence and message rate in real seconds, and the timestamps in a payload come
from the device's own (NTP-set) clock. `step` is therefore a no-op; `due(now)` is where
time passes.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

from gateway.config.models import Profile
from simsite.models.base import Model, SimTime

# Faults of the device's firmware or radio rather than its equipment; every device has them.
TRANSPORT_FAULTS = ("device_silent", "malformed", "flood")
# A status loop stuck in firmware: five times the gateway's default max_rate of 20/s.
FLOOD_RATE = 100.0
SPOIL_EVERY = 3  # while `malformed` plays, one message in three is corrupt
# Corrupt payloads seen from real devices: cut off by a full buffer, Python's repr instead
# of JSON, a GBK string in a UTF-8 field, an empty payload (on a retained topic, a delete).
_SPOILERS: tuple[Callable[[bytes], bytes], ...] = (
    lambda good: good[: max(1, len(good) // 2)],
    lambda good: good.replace(b'"', b"'"),
    lambda good: b'{"msg": "' + "设备故障".encode("gbk") + b'"}',
    lambda good: b"",
)

Body = tuple[str, dict[str, Any]]  # (topic below the base topic, JSON object)


@dataclass(frozen=True, slots=True)
class Message:
    """One publish: the topic below the device's base topic ("" is the base itself)."""

    topic: str
    payload: bytes
    retain: bool = False


class MqttEquipment(Model):
    """A device that speaks when it has something to say, and at least every `heartbeat`.

    Subclasses say what happens (`react`), what a heartbeat carries (`beat`), what their
    status report is (`snapshot`, also what a flood repeats) and how they write time
    (`timestamp`). `EQUIPMENT_FAULTS` are their own scenarios.
    """

    EQUIPMENT_FAULTS: ClassVar[tuple[str, ...]] = ()
    # State topics are retained, as such devices publish them, so a gateway that subscribes
    # late learns the state at once rather than at the next heartbeat; events are not.
    RETAINED: ClassVar[frozenset[str]] = frozenset()

    def __init__(
        self,
        profile: Profile,
        rng: random.Random,
        *,
        heartbeat: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(profile, rng)
        self.heartbeat = heartbeat
        self.clock = clock
        self.seq = 0
        self._queued: list[Body] = []  # what a fault or its clearing says at the next `due`
        self._last_due: float | None = None
        self._last_beat: float | None = None
        self._flood_debt = 0.0
        self._sent = 0

    @property
    def faults(self) -> tuple[str, ...]:
        return (*self.EQUIPMENT_FAULTS, *TRANSPORT_FAULTS)

    # --- what subclasses provide ---------------------------------------------------

    def react(self, now: float, dt: float) -> list[Body]:
        """Move the equipment on by `dt` real seconds; the messages that causes."""
        return []

    def beat(self, now: float) -> list[Body]:
        """The heartbeat's messages."""
        return [self.snapshot(now)]

    def snapshot(self, now: float) -> Body:
        """The status report as it stands."""
        raise NotImplementedError

    def timestamp(self, now: float) -> dict[str, Any]:
        """The device's time field(s), in its own format."""
        raise NotImplementedError

    def enter(self, kind: str, now: float) -> None:
        """An equipment fault starts."""

    def leave(self, kind: str, now: float) -> None:
        """An equipment fault ends (the door is shut, the passenger rescued)."""

    # --- the schedule --------------------------------------------------------------

    def body(self, now: float, fields: dict[str, Any]) -> dict[str, Any]:
        """A payload object: the device's time and message sequence number first."""
        self.seq += 1
        return {**self.timestamp(now), "seq": self.seq, **fields}

    def queue(self, body: Body) -> None:
        self._queued.append(body)

    def step(self, dt: float, now: SimTime) -> None:
        """Simulated time does not move MQTT equipment; see the module docstring."""

    def due(self, now: float | None = None) -> list[Message]:
        """Everything the device publishes at `now` (real epoch seconds), faults applied."""
        now = self.clock() if now is None else now
        dt = 0.0 if self._last_due is None else max(0.0, now - self._last_due)
        self._last_due = now
        bodies, self._queued = self._queued, []
        bodies += self.react(now, dt)
        if self._last_beat is None or now - self._last_beat >= self.heartbeat:
            self._last_beat = now
            bodies += self.beat(now)
        if self.fault == "flood":
            self._flood_debt += FLOOD_RATE * dt
            bodies += [self.snapshot(now) for _ in range(int(self._flood_debt))]
            self._flood_debt -= int(self._flood_debt)
        if self.fault == "device_silent":
            return []  # the equipment goes on; its radio says nothing
        messages = [Message(topic, _encode(fields), topic in self.RETAINED) for topic, fields in bodies]
        if self.fault == "malformed":
            messages = [self._maybe_spoil(message) for message in messages]
        return messages

    def _maybe_spoil(self, message: Message) -> Message:
        self._sent += 1
        if self._sent % SPOIL_EVERY != 1:
            return message
        spoil = _SPOILERS[(self._sent // SPOIL_EVERY) % len(_SPOILERS)]
        return Message(message.topic, spoil(message.payload), message.retain)

    # --- faults --------------------------------------------------------------------

    def set_fault(self, kind: str) -> None:
        if kind not in self.faults:
            raise ValueError(f"profile {self.profile.id} has no fault {kind!r} (it has: {', '.join(self.faults)})")
        if self.fault is not None:
            self.clear()
        self.fault = kind
        self._sent = 0
        self._flood_debt = 0.0
        if kind in self.EQUIPMENT_FAULTS:
            self.enter(kind, self.clock())

    def clear(self) -> None:
        if self.fault in self.EQUIPMENT_FAULTS:
            self.leave(self.fault, self.clock())
        super().clear()


def _encode(fields: dict[str, Any]) -> bytes:
    # Chinese texts as UTF-8, as the products send them, not \u escapes
    return json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def iso_time(now: float, zone: ZoneInfo) -> str:
    """ISO 8601 with the site's offset and milliseconds: 2025-06-02T08:00:00.123+08:00."""
    return datetime.fromtimestamp(now, zone).isoformat(timespec="milliseconds")
