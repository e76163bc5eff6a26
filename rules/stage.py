"""The rules stage of the pipeline.

Until the rule engine lands it passes batches through and raises nothing; the
pipeline already calls it for every batch so rules slot in without reshaping the flow.
"""

from __future__ import annotations

from gateway.batch import Batch, Event


class RulesStage:
    """Sees every batch before it is stored; returns the events the batch caused."""

    def process(self, batch: Batch) -> list[Event]:
        return []
