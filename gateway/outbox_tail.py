"""The outbox's tail: its newest committed records, kept in memory for the sinks that keep up.

A sink reading after a cursor inside the tail gets the records as they were appended,
without SQLite and without decoding JSON again; one further behind reads SQLite. The
tail holds every committed record from `first` on, in order and without gaps, and only
what the sinks have not confirmed, at most `max_values` values: a sink far behind reads
SQLite until it reaches the tail.
"""

from __future__ import annotations

from gateway.batch import Batch, Kind, Record

ALL_KINDS = frozenset(Kind)


def values_of(record: Record) -> int:
    """What a record costs the tail: its points, or one for an event."""
    item = record.item
    return len(item.points) if type(item) is Batch else 1


class Tail:
    """Committed records from seq `first` on, in memory."""

    def __init__(self, next_seq: int, max_values: int) -> None:
        self.first = next_seq
        self.max_values = max_values
        self.records: list[Record] = []
        self.values = 0

    def covers(self, after: int) -> bool:
        """Everything committed after seq `after` is here."""
        return after + 1 >= self.first

    def extend(self, records: list[Record]) -> None:
        """Just committed, in seq order, following what the tail holds."""
        if not records:
            return
        if not self.records:
            self.first = records[0].seq
        self.records += records
        self.values += sum(map(values_of, records))

    def reset(self, next_seq: int) -> None:
        """Forget everything (records went from disk): from `next_seq` on again."""
        self.records.clear()
        self.values = 0
        self.first = next_seq

    def read(
        self, after: int, limit: int, kinds: frozenset[Kind], high: int
    ) -> tuple[list[Record], int]:
        """As `Outbox.read`, for an `after` the tail covers; `high` is the last seq committed."""
        start = after + 1 - self.first
        if kinds >= ALL_KINDS:
            records = self.records[start : start + limit]
        else:
            records = []
            tail = self.records
            for i in range(start, len(tail)):
                record = tail[i]
                if record.kind in kinds:
                    records.append(record)
                    if len(records) == limit:
                        break
        upto = high if len(records) < limit else records[-1].seq
        return records, max(upto, after)

    def trim(self, cursors: list[int], next_seq: int) -> None:
        """Keep what is after the lowest of `cursors` (nothing without one), at most
        `max_values`, the newest; `next_seq` is the seq the next commit starts at."""
        tail = self.records
        if not tail:
            self.first = next_seq
            return
        first = self.first
        keep_from = min(cursors) + 1 if cursors else next_seq
        drop = max(0, keep_from - first)
        kept_values = self.values - sum(map(values_of, tail[:drop]))
        while kept_values > self.max_values and drop < len(tail):
            kept_values -= values_of(tail[drop])
            drop += 1
        if drop > 0:
            del tail[:drop]
            self.values = kept_values
            self.first = first + drop
