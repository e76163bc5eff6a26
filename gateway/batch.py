"""What flows through the gateway: batches of readings and events.

A batch is one poll of one device: parallel lists rather than an object per point,
because per-point objects on the hot path are what makes a Python gateway slow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any

_NUMBERS = frozenset({int, float, bool})


def number_kinds(batch: Batch) -> set[type] | None:
    """The types of the batch's values when all are good and every one is a plain int,
    float or bool and none is NaN or infinite: the common batch, which sinks encode without
    looking at each value's type or quality (C-speed checks, no Python loop); else None,
    which means "look closer", never that a value is bad."""
    if batch.quality is not None:
        return None
    values = batch.values
    kinds = set(map(type, values))
    if not kinds <= _NUMBERS:
        return None
    try:
        finite = math.isfinite(sum(values))  # NaN or ±inf anywhere makes the sum non-finite
    except OverflowError:  # an int too large for a float: let the careful path decide
        return None
    return kinds if finite else None


class Quality(StrEnum):
    """How far a value can be trusted; a value that is not GOOD is None."""

    GOOD = "good"
    COMM_FAILURE = "comm_failure"
    DEVICE_EXCEPTION = "device_exception"
    OUT_OF_RANGE = "out_of_range"
    DECODE_ERROR = "decode_error"


class Kind(IntEnum):
    """Record kinds in the outbox; readings may be dropped when the disk is full, events never."""

    READING = 0
    EVENT = 1


@dataclass(slots=True)
class Batch:
    """One poll of one device.

    `points` is usually a tuple shared with the driver's compiled plan, so a poll
    allocates only the values list. `quality` is None when every value is good,
    otherwise a list parallel to `values`.
    """

    device: str
    ts: float  # seconds since the epoch, UTC, when the poll was answered
    points: tuple[str, ...]
    values: list[Any]
    quality: list[str] | None = None

    def quality_of(self, index: int) -> str:
        return Quality.GOOD if self.quality is None else self.quality[index]

    def items(self):
        """Yield (point, value, quality) triples; for sinks, not for the hot path."""
        if self.quality is None:
            for point, value in zip(self.points, self.values, strict=True):
                yield point, value, Quality.GOOD
        else:
            yield from zip(self.points, self.values, self.quality, strict=True)

    def to_dict(self) -> dict[str, Any]:
        body = {"d": self.device, "t": self.ts, "p": list(self.points), "v": self.values}
        if self.quality is not None:
            body["q"] = self.quality
        return body

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> Batch:
        return cls(body["d"], body["t"], tuple(body["p"]), body["v"], body.get("q"))

    @classmethod
    def failed(cls, device: str, ts: float, points: tuple[str, ...], quality: str) -> Batch:
        """A poll that produced no values: every point carries the failure, none a stale value."""
        return cls(device, ts, points, [None] * len(points), [quality] * len(points))


@dataclass(slots=True)
class Event:
    """Something that happened: device status change, later alarms and tickets.

    `type` names the event (e.g. "device_status"); `body` is JSON-serialisable.
    """

    type: str
    ts: float
    device: str | None = None
    body: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "t": self.ts, "d": self.device, "b": self.body}

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> Event:
        return cls(body["type"], body["t"], body.get("d"), body.get("b") or {})


@dataclass(slots=True)
class Record:
    """An outbox entry as a sink sees it.

    `id` is unique across restarts and outbox re-creations, so a sink's peer can
    recognise a duplicate delivered after a crash (delivery is at least once).
    """

    seq: int
    id: str
    kind: Kind
    item: Batch | Event
