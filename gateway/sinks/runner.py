"""Drives one sink: read after its cursor, send, advance only once the peer confirmed."""

from __future__ import annotations

import asyncio
import time

import structlog

from gateway.outbox import Outbox
from gateway.sinks.base import Sink, SinkUnavailable

log = structlog.get_logger(__name__)

_BACKOFF_FIRST = 0.5
_BACKOFF_MAX = 30.0


class SinkRunner:
    """Moves records from the outbox to one sink, at least once, in order.

    A sink that fails is retried with exponential backoff (or after the peer's
    Retry-After); its outage is logged once when it starts and once when it ends.
    `linger` lets a sink wait for fuller batches when less than `max_batch` is waiting.
    """

    def __init__(self, sink: Sink, outbox: Outbox, *, linger: float = 0.0) -> None:
        self.sink = sink
        self.outbox = outbox
        self.linger = linger
        self.delivered = 0
        self.failures = 0
        self.last_error: str | None = None
        self.last_success: float | None = None
        self._cursor = 0
        self._stopping = False

    @property
    def name(self) -> str:
        return self.sink.name

    async def run(self) -> None:
        self._cursor = await self.outbox.register(self.sink.name)
        await self.sink.start()
        backoff = _BACKOFF_FIRST
        while not self._stopping:
            records, upto = await self.outbox.read(self._cursor, self.sink.max_batch, self.sink.kinds)
            if upto <= self._cursor:
                await self.outbox.wait_committed(self._cursor, timeout=1.0)
                continue
            if records and len(records) < self.sink.max_batch and self.linger and not self._stopping:
                await asyncio.sleep(self.linger)
                records, upto = await self.outbox.read(
                    self._cursor, self.sink.max_batch, self.sink.kinds
                )
            if records:
                try:
                    await self.sink.send(records)
                except SinkUnavailable as exc:
                    backoff = await self._failed(str(exc), exc.retry_after, backoff)
                    continue
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # a sink bug must not end delivery for good
                    log.exception("sink raised unexpectedly", sink=self.name)
                    backoff = await self._failed(repr(exc), None, backoff)
                    continue
            if self.last_error is not None:
                log.info("sink delivering again", sink=self.name, failures=self.failures)
                self.last_error = None
            backoff = _BACKOFF_FIRST
            self.delivered += len(records)
            self.last_success = time.time()
            self._cursor = upto
            self.outbox.advance(self.sink.name, upto)

    async def _failed(self, error: str, retry_after: float | None, backoff: float) -> float:
        self.failures += 1
        if self.last_error is None:
            log.warning("sink unavailable, will retry", sink=self.name, error=error)
        self.last_error = error
        await asyncio.sleep(retry_after if retry_after is not None else backoff)
        return min(backoff * 2, _BACKOFF_MAX)

    async def drain(self, timeout: float) -> bool:
        """Wait until everything committed so far was delivered, at most `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._cursor >= self.outbox.stats.committed_seq and self.last_error is None:
                return True
            await asyncio.sleep(0.05)
        return False

    def stop(self) -> None:
        self._stopping = True

    def status(self) -> dict[str, object]:
        return {
            "sink": self.name,
            "cursor": self._cursor,
            "behind": self.outbox.stats.committed_seq - self._cursor,
            "delivered": self.delivered,
            "failures": self.failures,
            "last_error": self.last_error,
            "last_success": self.last_success,
        }
