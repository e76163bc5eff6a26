"""A stage that raises costs one batch's evaluation, never a device's polling: the batch
is stored, the failure counted and logged at most once a minute."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import structlog

from gateway.batch import Batch, Event
from gateway.health import DeviceHealth
from gateway.pipeline import Pipeline
from gateway.poller import PollSpec, poll_forever


class ListOutbox:
    def __init__(self) -> None:
        self.batches: list[Batch] = []
        self.events: list[Event] = []

    def append_batch(self, batch: Batch) -> None:
        self.batches.append(batch)

    def append_event(self, event: Event) -> None:
        self.events.append(event)


class BrokenStage:
    """A stage with a bug (or a disk it cannot write): every call raises."""

    def __init__(self) -> None:
        self.calls = 0

    def process(self, batch: Batch) -> list[Batch | Event]:
        self.calls += 1
        raise RuntimeError("a bug in a rule")

    def evaluate(self, items: list[Batch | Event]) -> list[Batch | Event]:
        self.calls += 1
        raise RuntimeError("a bug in a rule")


class CountingDriver:
    def __init__(self) -> None:
        self.device = SimpleNamespace(id="pump_1")
        self.reads = 0

    async def read(self, group: str) -> Batch:
        self.reads += 1
        return Batch("pump_1", float(self.reads), ("pressure",), [0.4])


def test_a_stage_that_raises_costs_the_evaluation_not_the_batch() -> None:
    outbox, stage = ListOutbox(), BrokenStage()
    pipeline = Pipeline(outbox, stage)
    with structlog.testing.capture_logs() as logs:
        for i in range(3):
            pipeline.emit_batch(Batch("pump_1", float(i), ("pressure",), [0.4]))
    assert len(outbox.batches) == 3 and pipeline.batches == 3
    assert pipeline.stage_errors == 3 and stage.calls == 3
    assert len([e for e in logs if e["log_level"] == "error"]) == 1  # once a minute


def test_a_measured_reading_is_stored_when_its_evaluation_raises() -> None:
    outbox = ListOutbox()
    pipeline = Pipeline(outbox, BrokenStage())
    reading = Batch("water_201", 5.0, ("reading",), [12.5])
    event = Event("meter_event", 5.0, "water_201", {"kind": "replaced"})
    pipeline.emit_measured([reading, event])
    assert outbox.batches == [reading] and outbox.events == [event]
    assert pipeline.stage_errors == 1


async def test_a_device_keeps_being_polled_when_the_stage_raises() -> None:
    driver = CountingDriver()
    pipeline = Pipeline(ListOutbox(), BrokenStage())
    health = DeviceHealth("pump_1")
    task = asyncio.create_task(
        poll_forever(driver, pipeline, health, PollSpec("default", 0.01, ("pressure",))))
    await asyncio.sleep(0.1)
    assert not task.done(), task.exception() if task.done() else None
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert driver.reads >= 3 and pipeline.stage_errors == driver.reads
