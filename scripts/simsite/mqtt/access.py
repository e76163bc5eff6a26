"""An access controller at a car-park entrance: a pedestrian door and a vehicle barrier.

Modelled on the networked controllers estates fit at gates (a reader per door or lane,
events pushed over MQTT): every card swipe is an event on `events/card`, granted or
denied, with the card number and a reason; the door and barrier are a status report on
`status`, sent whenever they change and with every heartbeat. Time is ISO 8601 in `$.time`.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

from gateway.config.models import Profile
from simsite.models.base import chance
from simsite.mqtt.equipment import Body, MqttEquipment, iso_time

READERS = {1: ("B1车库人行门", "door"), 2: ("B1车库入口道闸", "barrier")}
DENY_REASONS = {1: "未登记卡", 2: "卡已过期", 3: "不在有效时段", 4: "黑名单卡"}
GRANTED_TEXT = "正常通行"
SWIPES_PER_HOUR = 120.0  # a busy gate at the morning rush: two a minute
GRANTED_SHARE = 0.93
RELEASE_S = 5.0  # the lock stays released this long after a granted swipe
PASS_S = (3.0, 6.0)  # a resident walks through with the door open this long
BARRIER_MOVE_S = 2.0  # raising or lowering the arm
BARRIER_UP_S = (5.0, 10.0)  # a car drives through
FORCED_OPEN_S = 8.0  # a forced door is pushed shut again after this
HELD_AFTER_S = 30.0  # the controller's held-open alarm time (a setting on real ones)
BURST_GAP_S = (0.8, 2.0)  # someone tries a card again and again
_BARRIER_NEXT = {"raising": "up", "up": "lowering", "lowering": "down"}


class AccessController(MqttEquipment):
    """One door and one barrier behind one controller; `held_after` is its alarm setting."""

    EQUIPMENT_FAULTS = ("door_forced", "door_held", "card_denied_burst")
    RETAINED = frozenset({"status"})

    def __init__(
        self,
        profile: Profile,
        rng: random.Random,
        *,
        heartbeat: float,
        zone: ZoneInfo,
        clock: Callable[[], float] = time.time,
        held_after: float = HELD_AFTER_S,
    ) -> None:
        super().__init__(profile, rng, heartbeat=heartbeat, clock=clock)
        self.zone = zone
        self.held_after = held_after
        # registered cards: at most five a household, a few dozen households at this gate
        self.cards = [f"{rng.getrandbits(32):08X}" for _ in range(40)]
        now = clock()
        self.door = "closed"
        self.door_since = now
        self.door_open_at: float | None = None  # a resident pulls the door after a release
        self.door_close_at: float | None = None  # None while open: propped, or never let go
        self.lock_until = 0.0
        self.forced = False  # latched until the alarm is reset at the controller
        self.held = False
        self.barrier = "down"
        self.barrier_next: tuple[str, float] | None = None
        self._burst_card = ""
        self._next_burst = 0.0
        self._reported: tuple[Any, ...] | None = None

    def timestamp(self, now: float) -> dict[str, Any]:
        return {"time": iso_time(now, self.zone)}

    def react(self, now: float, dt: float) -> list[Body]:
        out: list[Body] = []
        if self.fault == "card_denied_burst":
            if now >= self._next_burst:
                self._next_burst = now + self.rng.uniform(*BURST_GAP_S)
                out.append(self.swipe(now, reader=1, granted=False, card=self._burst_card, reason=4))
        elif chance(self.rng, SWIPES_PER_HOUR, dt):
            granted = self.rng.random() < GRANTED_SHARE
            out.append(self.swipe(now, reader=self.rng.choice(tuple(READERS)), granted=granted))
        self._move_door(now)
        while self.barrier_next is not None and now >= self.barrier_next[1]:
            self._barrier_to(*self.barrier_next)
        if self._state(now) != self._reported:
            out.append(self.snapshot(now))
        return out

    def snapshot(self, now: float) -> Body:
        self._reported = self._state(now)
        is_open = self.door == "open"
        return "status", self.body(now, {
            "event": "status",
            "door": {
                "no": 1,
                "state": self.door,
                "lock": "released" if now < self.lock_until else "locked",
                "forced": self.forced,
                "held_open": self.held,
                "open_s": round(now - self.door_since) if is_open else 0,
            },
            "barrier": {"no": 2, "state": self.barrier, "vehicle": self.barrier in ("raising", "up")},
            "tamper": False,
        })

    def swipe(
        self, now: float, *, reader: int, granted: bool, card: str | None = None, reason: int | None = None
    ) -> Body:
        """A card at `reader`: the event it publishes; a granted one releases the door or
        raises the barrier."""
        code = 0 if granted else reason or self.rng.choice(tuple(DENY_REASONS))
        if card is None:  # an unregistered card is one the controller has never seen
            card = f"{self.rng.getrandbits(32):08X}" if code == 1 else self.rng.choice(self.cards)
        name, channel = READERS[reader]
        if granted and channel == "door":
            self.lock_until = now + RELEASE_S
            if self.door == "closed":
                self.door_open_at = now + self.rng.uniform(0.5, 2.0)
        elif granted and self.barrier in ("down", "lowering"):
            self._barrier_to("raising", now)
        return "events/card", self.body(now, {
            "event": "card_swipe",
            "reader": {"no": reader, "name": name, "channel": channel},
            "card": {"no": card, "type": "IC"},
            "result": "granted" if granted else "denied",
            "reason": {"code": code, "text": DENY_REASONS.get(code, GRANTED_TEXT)},
            "direction": "in",
        })

    def enter(self, kind: str, now: float) -> None:
        if kind == "door_forced":  # pushed open with no swipe: the lock was never released
            self.lock_until = 0.0
            self._open_door(now, stay=FORCED_OPEN_S)
        elif kind == "door_held":  # a resident lets themselves in and wedges the door
            self.queue(self.swipe(now, reader=1, granted=True))
            self.door_open_at = None
            self._open_door(now, stay=None)
        elif kind == "card_denied_burst":
            self._burst_card = f"{self.rng.getrandbits(32):08X}"  # a blacklisted (lost) card
            self._next_burst = now

    def leave(self, kind: str, now: float) -> None:
        if kind == "door_forced":
            self.forced = False  # the guard resets the alarm at the controller
        if kind in ("door_forced", "door_held") and self.door == "open":
            self._close_door(now)

    def _open_door(self, now: float, stay: float | None) -> None:
        self.door, self.door_since = "open", now
        self.door_close_at = None if stay is None else now + stay
        if now >= self.lock_until:
            self.forced = True

    def _close_door(self, now: float) -> None:
        self.door, self.door_since = "closed", now
        self.door_close_at = None
        self.held = False

    def _move_door(self, now: float) -> None:
        if self.door_open_at is not None and now >= self.door_open_at:
            self.door_open_at = None
            if self.door == "closed":
                self._open_door(now, stay=self.rng.uniform(*PASS_S))
        if self.door == "open" and self.door_close_at is not None and now >= self.door_close_at:
            self._close_door(now)
        if self.door == "open" and not self.held and now - self.door_since >= self.held_after:
            self.held = True

    def _barrier_to(self, state: str, at: float) -> None:
        self.barrier = state
        following = _BARRIER_NEXT.get(state)
        if following is None:
            self.barrier_next = None
            return
        lasts = self.rng.uniform(*BARRIER_UP_S) if state == "up" else BARRIER_MOVE_S
        self.barrier_next = (following, at + lasts)

    def _state(self, now: float) -> tuple[Any, ...]:
        return (self.door, now < self.lock_until, self.forced, self.held, self.barrier)
