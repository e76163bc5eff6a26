"""The pipeline: batches from drivers go through the rules stage into the outbox."""

from __future__ import annotations

from gateway.batch import Batch, Event
from gateway.outbox import Outbox
from rules.stage import RulesStage


class Pipeline:
    """The one place a batch enters the gateway; keeps each device's latest batch for views."""

    def __init__(self, outbox: Outbox, rules: RulesStage | None = None) -> None:
        self.outbox = outbox
        self.rules = rules or RulesStage()
        self.latest: dict[str, Batch] = {}
        self.batches = 0

    def emit_batch(self, batch: Batch) -> None:
        self.batches += 1
        self.latest[batch.device] = batch
        self.outbox.append_batch(batch)
        for event in self.rules.process(batch):
            self.outbox.append_event(event)

    def emit_event(self, event: Event) -> None:
        self.outbox.append_event(event)
