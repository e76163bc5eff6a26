"""Which rules a reading concerns: the point → rules index, and the order to run them.

A poll carries a few dozen points and a site has hundreds of rules; evaluating only the
rules that read a point of the batch keeps the hot path proportional to the batch.
Derived points run first, each before the rules that read it (declaration order when
nothing depends on anything), so a rule reading `run_hours` sees the value this very
batch produced.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator

from rules.compile import CompiledRule

# Batch shapes (device, points) remembered; beyond, the memory starts again.
BATCH_SHAPES = 4096


class RuleIndex:
    """Rules by the full point names (`device.point`) they read, in evaluation order."""

    def __init__(self, rules: Iterable[CompiledRule]) -> None:
        rules = list(rules)
        derived = [r for r in rules if r.derive is not None]
        self.order: list[CompiledRule] = _dependency_order(derived) + [
            r for r in rules if r.derive is None
        ]
        self._rank = {rule.id: rank for rank, rule in enumerate(self.order)}
        self._readers: dict[str, list[int]] = {}
        for rank, rule in enumerate(self.order):
            for point in rule.inputs:
                self._readers.setdefault(point, []).append(rank)
        self.timed = [r for r in self.order if r.timed]
        # (device, points of a batch) -> the ranks reading them, sorted: a device's batches
        # share their points tuple, so the names are joined and looked up once
        self._batch_ranks: dict[tuple[str, tuple[str, ...]], list[int]] = {}

    def readers(self, point: str) -> list[CompiledRule]:
        """The rules that read `point` (a full `device.point` name)."""
        return [self.order[rank] for rank in self._readers.get(point, ())]

    def agenda(self, points: Iterable[str]) -> Agenda:
        """The rules to run for readings of `points`, each once, in order."""
        return Agenda(self, points)

    def batch_agenda(self, device: str, points: tuple[str, ...]) -> Agenda:
        """`agenda` for a batch of `device` reading `points` (its bare names)."""
        key = (device, points)
        ranks = self._batch_ranks.get(key)
        if ranks is None:
            prefix = device + "."
            found = {rank for point in points for rank in self._readers.get(prefix + point, ())}
            if len(self._batch_ranks) >= BATCH_SHAPES:  # payloads of many shapes (MQTT)
                self._batch_ranks.clear()
            ranks = self._batch_ranks[key] = sorted(found)
        return Agenda(self, (), ranks)


class Agenda:
    """One call's work list: rules reading the batch's points, and those reading what
    derived rules produce along the way (`add`), each rule at most once."""

    def __init__(self, index: RuleIndex, points: Iterable[str],
                 ranks: list[int] | None = None) -> None:
        self._index = index
        # a sorted list is a heap: the ranks a batch queues need no pushing one by one
        self._heap: list[int] = list(ranks) if ranks else []
        self._queued: set[int] = set(self._heap)
        for point in points:
            self.add(point)

    def add(self, point: str) -> None:
        """A new value of `point`: queue its readers that have not run in this call."""
        for rank in self._index._readers.get(point, ()):
            if rank not in self._queued:
                self._queued.add(rank)
                heapq.heappush(self._heap, rank)

    def queue(self, rule: CompiledRule) -> None:
        """Run `rule` in this call whatever its inputs (a timed rule on a tick)."""
        rank = self._index._rank[rule.id]
        if rank not in self._queued:
            self._queued.add(rank)
            heapq.heappush(self._heap, rank)

    def __iter__(self) -> Iterator[CompiledRule]:
        while self._heap:
            yield self._index.order[heapq.heappop(self._heap)]


def _dependency_order(derived: list[CompiledRule]) -> list[CompiledRule]:
    """Derived rules with each after the derived points it reads; otherwise as declared.

    A cycle (a point derived from itself, directly or not) cannot be ordered: its rules
    keep their declaration order and read the previous value of each other.
    """
    ids = {r.id for r in derived}
    waiting = {r.id: {p for p in r.inputs if p in ids and p != r.id} for r in derived}
    done: set[str] = set()
    out: list[CompiledRule] = []
    progress = True
    while progress:
        progress = False
        for rule in derived:
            if rule.id not in done and waiting[rule.id] <= done:
                done.add(rule.id)
                out.append(rule)
                progress = True
                break  # start over: keep declaration order among the ready ones
    out += [r for r in derived if r.id not in done]
    return out
