"""The sink runner keeps trying a sink that fails, whatever it fails with, and loses nothing."""

from __future__ import annotations

import asyncio

from gateway.batch import Batch, Kind
from gateway.outbox import Outbox
from gateway.sinks.base import Sink
from gateway.sinks.runner import SinkRunner


class FlakySink(Sink):
    """Fails to start twice (a full disk, a locked file), then delivers."""

    def __init__(self) -> None:
        super().__init__("flaky")
        self.starts = 0
        self.received: list[int] = []

    async def start(self) -> None:
        self.starts += 1
        if self.starts <= 2:
            raise OSError("No space left on device")

    async def send(self, records) -> None:
        self.received.extend(r.seq for r in records)


async def test_a_sink_that_cannot_start_is_retried_and_then_gets_everything(tmp_path, monkeypatch):
    monkeypatch.setattr("gateway.sinks.runner._BACKOFF_FIRST", 0.01)
    outbox = Outbox(tmp_path / "outbox.db", flush_interval=0.02)
    await outbox.open()
    sink = FlakySink()
    runner = SinkRunner(sink, outbox)
    task = asyncio.create_task(runner.run())
    for i in range(5):
        outbox.append_batch(Batch("meter", float(i), ("kwh",), [i]))
    await outbox.flush()
    try:
        assert await runner.drain(5.0)
    finally:
        runner.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await outbox.close()
    assert sink.starts == 3
    assert sink.received == [1, 2, 3, 4, 5]
    assert runner.failures == 2 and runner.last_error is None
    assert Kind.READING in sink.kinds
