"""The sink interface: deliver records, return only once the peer confirmed them."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod

from gateway.batch import Kind, Record


class SinkUnavailable(Exception):
    """The peer did not confirm; the runner retries the same records later.

    `retry_after` (seconds) is the peer's own wish (HTTP Retry-After), if it said one.
    """

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Sink(ABC):
    """Each sink has a name, a cursor in the outbox, and a peer that confirms delivery.

    `send` must either return (every record is stored by the peer, or was refused as
    bad data and logged, which also advances the cursor) or raise SinkUnavailable.
    """

    kinds: frozenset[Kind] = frozenset({Kind.READING, Kind.EVENT})
    max_batch: int = 1000
    # Kinds the runner reads first, on a lane of their own (the upstream link: events before
    # a telemetry backlog); empty: one lane in outbox order.
    priority_kinds: frozenset[Kind] = frozenset()
    backlog_rate: float | None = None  # records/s while more than one batch is waiting

    def __init__(self, name: str) -> None:
        self.name = name

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Open connections; a peer that is down must not make this raise."""

    @abstractmethod
    async def send(self, records: list[Record]) -> None:
        """Deliver records (all of a kind in `kinds`), in order."""

    async def wait_ready(self, timeout: float) -> None:
        """After a failed send, wait `timeout` before the next try; a sink that knows when
        its peer is back (a reconnected broker) returns then, so a backlog does not sit
        out the rest of a backoff that grew during the outage."""
        await asyncio.sleep(timeout)

    async def stop(self) -> None:  # noqa: B027 - optional hook
        """Close connections promptly."""
