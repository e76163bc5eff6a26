"""How a round is judged: which checkpoints were visited in it, which were missed.

A checkpoint counts as visited in a round when a visit to it falls in [start, end) and,
if the plan names guards, the visit's card is one of theirs. With `order: listed` the
visits must also follow the plan's order: the largest set of checkpoints visited in that
order counts (the longest common subsequence of the plan's list and the visits), and a
checkpoint visited only out of order is missed (`out_of_order`). A guard who skips B
and walks A, C has missed B only; one who walks C, A, B has missed C.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gateway.patrol.plan import Round


@dataclass(frozen=True, slots=True)
class CountedVisit:
    """A visit as a round sees it: where, when, and which guard (None: unknown card or
    a checkpoint that cannot tell)."""

    checkpoint: str
    ts: float
    guard: str | None


@dataclass(frozen=True, slots=True)
class RoundResult:
    """The judgement of one round."""

    round: Round
    expected: tuple[str, ...]
    visited: dict[str, CountedVisit]  # checkpoint → the visit that counted
    missed: tuple[str, ...]  # in the plan's order
    out_of_order: tuple[str, ...] = ()  # missed, though visited: not in the listed order

    @property
    def done(self) -> bool:
        return not self.missed


def judge(round_: Round, checkpoints: Sequence[str], visits: Sequence[CountedVisit], *,
          listed: bool = False) -> RoundResult:
    """Judge `round_` from the plan's visits in it (already filtered by guard), in time order."""
    inside = [v for v in visits if round_.holds(v.ts) and v.checkpoint in checkpoints]
    inside.sort(key=lambda v: v.ts)
    visited: dict[str, CountedVisit] = {}
    if listed:
        for checkpoint, visit in _in_order(checkpoints, inside):
            visited[checkpoint] = visit
    else:
        for visit in inside:
            visited.setdefault(visit.checkpoint, visit)
    missed = tuple(c for c in checkpoints if c not in visited)
    seen = {v.checkpoint for v in inside}
    return RoundResult(round_, tuple(checkpoints), visited, missed,
                       tuple(c for c in missed if c in seen))


def _in_order(order: Sequence[str], visits: Sequence[CountedVisit]) -> list[tuple[str, CountedVisit]]:
    """The longest run of `order`'s checkpoints visited in that order (the earliest
    visits where there is a choice), as (checkpoint, visit) pairs."""
    n, m = len(order), len(visits)
    # best[i][j]: the longest common subsequence of order[i:] and visits[j:]
    best = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n - 1, -1, -1):
        for j in range(m - 1, -1, -1):
            if order[i] == visits[j].checkpoint:
                best[i][j] = best[i + 1][j + 1] + 1
            else:
                best[i][j] = max(best[i + 1][j], best[i][j + 1])
    pairs: list[tuple[str, CountedVisit]] = []
    i = j = 0
    while i < n and j < m:
        if order[i] == visits[j].checkpoint and best[i][j] == best[i + 1][j + 1] + 1:
            pairs.append((order[i], visits[j]))
            i, j = i + 1, j + 1
        elif best[i + 1][j] >= best[i][j + 1]:
            i += 1
        else:
            j += 1
    return pairs
