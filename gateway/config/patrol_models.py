"""Typed configuration for guard patrols (巡更): checkpoints, guards and patrol plans.

site.yaml `patrols:` says where a guard shows he was at a place (a checkpoint: a card
reader's swipe, a hub reporting the checkpoint it read, an IO module's input rising when
the guard presses the button at the tank), who may patrol (guards and their cards), and
the plans: which checkpoints, in which time windows, how many rounds (docs/patrols.md).
Whether a device, point, checkpoint or guard named here exists is checked against the
whole site in `patrol_loader.py`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from gateway.config.energy_models import ClockWindow, window_minutes
from gateway.config.rule_models import KEY_CONFLICT, Severity
from gateway.config.types import Identifier, Model, Text

DAY_MINUTES = 24 * 60


class Checkpoint(Model):
    """A place a guard must visit, and how a visit shows in its device's readings.

    - `point` alone (a card reader): any value of the point is a visit, and the value is
      the guard's card;
    - `equals` (a hub or handheld base reporting which checkpoint it read): a visit when
      the point's value is this one;
    - `rises: true` (an IO module's input, a button at the checkpoint): a visit when the
      input goes from 0 to 1.

    `card` names the point carrying the guard's card where it is not `point` itself.
    """

    id: Identifier
    name: str | None = None  # for people: B1水泵房
    device: Identifier
    point: Identifier
    equals: str | int | None = None
    rises: bool = False
    card: Identifier | None = None

    @model_validator(mode="after")
    def _one_way(self) -> Checkpoint:
        if self.rises and self.equals is not None:
            raise PydanticCustomError(KEY_CONFLICT, "write equals: (the point names the "
                                      "checkpoint) or rises: true (an input going 0 → 1), "
                                      "not both", {"key": "rises"})
        return self

    @property
    def card_point(self) -> str | None:
        """The point carrying the guard's card: `card`, else the point of a card reader."""
        if self.card is not None:
            return self.card
        return self.point if self.equals is None and not self.rises else None


class Guard(Model):
    """A guard and the cards he patrols with (a lost card is replaced, so a list)."""

    id: Identifier
    name: str | None = None
    cards: list[Text] = Field(min_length=1)


class PatrolWindow(Model):
    """A time window of a plan in the site's time zone and the rounds walked in it.

    `hours: "20:00-08:00"` crosses midnight; equal ends (`"08:00-08:00"`) are a whole day.
    The window is cut into `rounds` equal rounds: 08:00-20:00 with 3 rounds is 08:00-12:00,
    12:00-16:00 and 16:00-20:00, each of which must see every checkpoint.
    """

    id: Identifier
    hours: ClockWindow
    rounds: int = Field(ge=1, le=96)

    def minutes(self) -> tuple[int, int]:
        """Start and end in minutes after midnight, the end past the start (up to 48 h)."""
        start, end = window_minutes(self.hours)
        return start, end if end > start else end + DAY_MINUTES


class PatrolPlan(Model):
    """Which checkpoints, when, how many rounds; who may walk them (None: any card)."""

    id: Identifier
    name: str | None = None  # 设备房巡更
    checkpoints: list[Identifier] = Field(min_length=1)
    # any: each checkpoint once a round, in any order; listed: in the order written
    order: Literal["any", "listed"] = "any"
    windows: list[PatrolWindow] = Field(min_length=1)
    guards: list[Identifier] = []  # empty: a visit by any card counts
    severity: Severity | None = None  # of the missed-checkpoint alarm; default patrols.severity


class PatrolsConfig(Model):
    """site.yaml `patrols:`."""

    checkpoints: list[Checkpoint] = []
    guards: list[Guard] = []
    plans: list[PatrolPlan] = []
    severity: Severity = "minor"  # a missed checkpoint: a service failure, not a breakdown
    keep_days: int = Field(default=800, ge=40)  # visits and round results kept for reports
