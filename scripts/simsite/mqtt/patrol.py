"""An online patrol checkpoint (在线式巡更点): a card reader a guard swipes on his rounds.

Guards walk the site's patrol plan (site.yaml `patrols:`): each round takes them past
every checkpoint once. On the wall clock the simulator runs on, a guard comes by every
`VISIT_EVERY_S` or so, comfortably more often than the plan's 3 to 4 hour rounds ask,
with one of the guards' cards. `patrol_skipped` is the guard leaving this checkpoint out
of his rounds (the round ends with it missed and the gateway raises its alarm);
clearing it is the guard coming by at once. Time is ISO 8601 in `$.time`.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from typing import Any
from zoneinfo import ZoneInfo

from gateway.config.models import Profile
from simsite.mqtt.equipment import Body, MqttEquipment, iso_time

VISIT_EVERY_S = 45 * 60.0  # a guard passes each checkpoint about this often (real seconds)
JITTER = 0.3  # ± this share of VISIT_EVERY_S: guards do not walk like clockwork
DRAIN_PER_DAY = 0.05  # battery percent: two AA cells last years at a few swipes an hour
SPARE_CARD = "00000000"  # a site without guards configured: any card counts


class PatrolReader(MqttEquipment):
    """One checkpoint's reader; `cards` are the guards' patrol cards."""

    EQUIPMENT_FAULTS = ("patrol_skipped",)
    RETAINED = frozenset({"heartbeat"})

    def __init__(self, profile: Profile, rng: random.Random, *, heartbeat: float, zone: ZoneInfo,
                 cards: Sequence[str] = (), clock: Callable[[], float] = time.time) -> None:
        super().__init__(profile, rng, heartbeat=heartbeat, clock=clock)
        self.zone = zone
        self.cards = list(cards) or [SPARE_CARD]
        self.battery = rng.uniform(70.0, 99.0)
        self.swipes = 0
        self._next_visit = clock() + rng.uniform(0.0, VISIT_EVERY_S)

    def timestamp(self, now: float) -> dict[str, Any]:
        return {"time": iso_time(now, self.zone)}

    def react(self, now: float, dt: float) -> list[Body]:
        self.battery = max(0.0, self.battery - DRAIN_PER_DAY * dt / 86400)
        if now < self._next_visit:
            return []
        self._next_visit = now + VISIT_EVERY_S * self.rng.uniform(1 - JITTER, 1 + JITTER)
        if self.fault == "patrol_skipped":
            return []  # the guard walks past without swiping, or not at all
        return [self.swipe(now)]

    def swipe(self, now: float) -> Body:
        """A guard holds his card to the reader."""
        self.swipes += 1
        return "events/patrol", self.body(now, {"event": "patrol",
                                                "card": {"no": self.rng.choice(self.cards)},
                                                "reader": self.profile.id})

    def snapshot(self, now: float) -> Body:
        return "heartbeat", self.body(now, {"battery": round(self.battery), "tamper": False})

    def leave(self, kind: str, now: float) -> None:
        self.queue(self.swipe(now))  # the guard is sent back: he swipes at once
