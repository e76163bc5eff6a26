"""The sink runner keeps trying a sink that fails, whatever it fails with, and loses nothing."""

from __future__ import annotations

import asyncio

from gateway.batch import Batch, Kind
from gateway.outbox import Outbox
from gateway.sinks.base import Sink, SinkUnavailable
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


class ReconnectingSink(Sink):
    """Unavailable until its peer comes back; says so through `wait_ready`."""

    def __init__(self) -> None:
        super().__init__("reconnecting")
        self.back = asyncio.Event()
        self.received: list[int] = []
        self.waits: list[float] = []

    async def send(self, records) -> None:
        if not self.back.is_set():
            raise SinkUnavailable("peer away")
        self.received.extend(r.seq for r in records)

    async def wait_ready(self, timeout: float) -> None:
        self.waits.append(timeout)
        try:
            await asyncio.wait_for(self.back.wait(), timeout)
        except TimeoutError:
            pass


async def test_a_backlog_goes_as_soon_as_the_peer_is_back_not_after_the_backoff(tmp_path, monkeypatch):
    monkeypatch.setattr("gateway.sinks.runner._BACKOFF_FIRST", 3600.0)  # an outage's backoff
    outbox = Outbox(tmp_path / "outbox.db", flush_interval=0.02)
    await outbox.open()
    sink = ReconnectingSink()
    runner = SinkRunner(sink, outbox)
    task = asyncio.create_task(runner.run())
    outbox.append_batch(Batch("meter", 1.0, ("kwh",), [1]))
    await outbox.flush()
    try:
        while not sink.waits:  # the send failed; the runner is waiting out its backoff
            await asyncio.sleep(0.01)
        assert outbox._away == {"reconnecting"}  # memory keeps nothing for it meanwhile
        sink.back.set()
        assert await runner.drain(10.0)  # an hour's backoff, cut short by the reconnect
        assert outbox._away == set()
    finally:
        runner.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await outbox.close()
    assert sink.received == [1] and sink.waits == [3600.0]


class RecordingSink(Sink):
    def __init__(self) -> None:
        super().__init__("recording")
        self.sends: list[list[int]] = []

    async def send(self, records) -> None:
        self.sends.append([r.seq for r in records])


async def test_a_waiting_runner_gets_a_record_as_soon_as_it_is_committed(tmp_path):
    outbox = Outbox(tmp_path / "outbox.db", flush_interval=3600.0)  # never waited out
    await outbox.open()
    sink = RecordingSink()
    runner = SinkRunner(sink, outbox)
    task = asyncio.create_task(runner.run())
    try:
        while outbox.cursor("recording") != 0 or "recording" not in outbox.backlog():
            await asyncio.sleep(0.01)  # registered, idle, waiting for a commit
        await asyncio.sleep(0.05)
        outbox.append_batch(Batch("meter", 1.0, ("kwh",), [1]))  # nobody calls flush()
        assert await outbox.wait_committed(0, timeout=60.0)
        assert await runner.drain(60.0)
        outbox.append_batch(Batch("meter", 2.0, ("kwh",), [2]))
        assert await outbox.wait_committed(1, timeout=60.0)
        assert await runner.drain(60.0)
    finally:
        runner.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await outbox.close()
    assert sink.sends == [[1], [2]]
    assert outbox.stats.commits >= 2
