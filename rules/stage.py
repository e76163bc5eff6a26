"""The rules stage of the pipeline: what the pipeline asks of the rule engine.

Every batch passes the stage before it is stored; the stage answers with what the batch
caused: derived points (batches, stored and sent like read ones) and events (alarms,
tickets). `PassThrough` is the stage of a gateway that runs no rules.
"""

from __future__ import annotations

from typing import Protocol

from gateway.batch import Batch, Event


class RulesStage(Protocol):
    def process(self, batch: Batch) -> list[Batch | Event]: ...

    def evaluate(self, items: list[Batch | Event]) -> list[Batch | Event]:
        """`items` with what their batches cause in the rules, in order."""
        ...


class PassThrough:
    """No rules: batches go straight to the outbox and cause nothing."""

    def process(self, batch: Batch) -> list[Batch | Event]:
        return []

    def evaluate(self, items: list[Batch | Event]) -> list[Batch | Event]:
        return list(items)
