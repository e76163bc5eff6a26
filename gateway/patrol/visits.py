"""Visits out of readings: which batches of which devices say a guard was at a checkpoint.

A checkpoint is a device's point read one of three ways (gateway/config/patrol_models.py):
any good value of a card reader's point, a hub's point equal to the checkpoint's code,
or an IO input rising from 0 to 1. The last needs the input's previous state, kept here
and saved by the stage, so a restart neither invents a rise nor loses one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from gateway.batch import Batch, Quality
from gateway.config.patrol_models import Checkpoint


@dataclass(frozen=True, slots=True)
class Visit:
    """A guard at a checkpoint at `ts`; `card` None when the checkpoint cannot tell who."""

    checkpoint: str
    device: str
    ts: float
    card: str | None


def is_on(value: Any) -> bool:
    """An input's state from what a driver decoded: 1, True, 1.0, "1", "on"."""
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "on", "yes")
    return bool(value)


def _equal(value: Any, expected: str | int) -> bool:
    return value == expected or str(value) == str(expected)


class VisitReader:
    """The site's checkpoints by device; `read` finds the visits in one batch."""

    def __init__(self, checkpoints: Iterable[Checkpoint]) -> None:
        self.by_device: dict[str, list[Checkpoint]] = {}
        for checkpoint in checkpoints:
            self.by_device.setdefault(checkpoint.device, []).append(checkpoint)
        self.inputs: dict[str, bool] = {}  # "device.point" → last state, for rises
        self.changed_inputs: dict[str, bool] = {}  # changed since `take_changed`

    def read(self, batch: Batch) -> list[Visit]:
        """The visits in a batch of a checkpoint device (none for any other device)."""
        checkpoints = self.by_device.get(batch.device)
        if checkpoints is None:
            return []
        visits: list[Visit] = []
        for checkpoint in checkpoints:
            value = _good(batch, checkpoint.point)
            if value is None:
                continue
            if checkpoint.rises:
                key = f"{batch.device}.{checkpoint.point}"
                now_on, before = is_on(value), self.inputs.get(key)
                if before != now_on:
                    self.inputs[key] = self.changed_inputs[key] = now_on
                if not (before is False and now_on):
                    continue
            elif checkpoint.equals is not None and not _equal(value, checkpoint.equals):
                continue
            card_point = checkpoint.card_point
            card = _good(batch, card_point) if card_point is not None else None
            visits.append(Visit(checkpoint.id, batch.device, batch.ts,
                                None if card is None else str(card)))
        return visits

    def take_changed(self) -> dict[str, bool]:
        """The inputs whose state changed since the last call, to be saved."""
        changed, self.changed_inputs = self.changed_inputs, {}
        return changed


def _good(batch: Batch, point: str) -> Any:
    """The point's value in the batch when it is there and good, else None."""
    try:
        index = batch.points.index(point)
    except ValueError:
        return None
    if batch.quality is not None and batch.quality[index] != Quality.GOOD:
        return None
    return batch.values[index]
