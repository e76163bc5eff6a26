"""The pipeline: batches from drivers go through the rules stage into the outbox."""

from __future__ import annotations

from gateway.batch import Batch, Event
from gateway.outbox import Outbox
from rules.stage import RulesStage


class Pipeline:
    """The one place a batch enters the gateway; keeps the latest batches for views.

    `latest` is keyed by device and point set: a poll group's batch and a COV batch of one
    point each keep their own latest, so a view can merge them into the device's state.
    """

    def __init__(self, outbox: Outbox, rules: RulesStage | None = None) -> None:
        self.outbox = outbox
        self.rules = rules or RulesStage()
        self.latest: dict[tuple[str, tuple[str, ...]], Batch] = {}
        self.batches = 0

    def emit_batch(self, batch: Batch) -> None:
        self.batches += 1
        self.latest[(batch.device, batch.points)] = batch
        self.outbox.append_batch(batch)
        for event in self.rules.process(batch):
            self.outbox.append_event(event)

    def emit_event(self, event: Event) -> None:
        self.outbox.append_event(event)

    def current(self) -> dict[str, dict[str, tuple[object, str, float]]]:
        """Each device's points with their newest (value, quality, ts), across its batches."""
        state: dict[str, dict[str, tuple[object, str, float]]] = {}
        for (device, _points), batch in sorted(self.latest.items(), key=lambda kv: kv[1].ts):
            points = state.setdefault(device, {})
            for point, value, quality in batch.items():
                points[point] = (value, quality, batch.ts)
        return state
