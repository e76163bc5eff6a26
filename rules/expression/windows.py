"""Summaries of a point's good samples that answer a window without walking it.

Each is built the first time a function asks, over the good samples' values from the
first position of their arrays, and extended as samples arrive, so a window's answer is
a difference of two running figures (or one bisection): amortised O(1) a sample and
O(log n) a question. `PointHistory` owns them, tells them when its arrays drop their
front (`dropped`), and bounds each window by bisection on the samples' times.

Positions are indexes into the arrays; absolute indexes count every good sample ever
appended (position + the number dropped), so they survive a compaction.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from typing import Any

# A condition of count() on one sample's value and time: whether the sample counts.
SampleTest = Callable[[Any, float], bool]

# Every finite float is a whole multiple of 2**-1074, so `value << SCALE` (floats via
# their integer ratio) makes running totals exact integers: a window's sum is a
# difference of two totals with no rounding, and its mean is correctly rounded.
SCALE = 1074
INF = float("inf")

NUMBER = (int, float)  # bool is an int


def is_number(value: Any) -> bool:
    """An int, float or bool that is not NaN."""
    return isinstance(value, NUMBER) and value == value  # only NaN differs from itself


def within(indexes: list[int], lo: int, hi: int) -> int:
    """How many of the sorted `indexes` lie in [lo, hi)."""
    return bisect_left(indexes, hi) - bisect_left(indexes, lo)


def _scaled(value: Any) -> int | None:
    """`value` times 2**SCALE as an exact int, or None for an infinity."""
    if isinstance(value, float):
        if value in (INF, -INF):
            return None
        numerator, denominator = value.as_integer_ratio()
        return numerator << (SCALE + 1 - denominator.bit_length())
    return int(value) << SCALE


class Sums:
    """Running totals of the numbers among the good samples: `total[p]` and `count[p]`
    cover positions before p; infinities are listed apart (absolute indexes)."""

    __slots__ = ("total", "count", "pos_inf", "neg_inf", "asked", "answer")

    def __init__(self) -> None:
        self.total: list[int] = [0]
        self.count: list[int] = [0]
        self.pos_inf: list[int] = []
        self.neg_inf: list[int] = []
        # the last question (since, until, good samples so far, first live one) and answer
        self.asked: tuple[float, float, int, int] | None = None
        self.answer: Any = None

    def extend(self, values: list[Any], base: int) -> None:
        total, count = self.total, self.count
        running, seen = total[-1], count[-1]
        for position in range(len(count) - 1, len(values)):
            value = values[position]
            kind = type(value)
            if kind is float:
                if value != value:
                    pass  # NaN is not a number
                elif value == INF:
                    self.pos_inf.append(position + base)
                    seen += 1
                elif value == -INF:
                    self.neg_inf.append(position + base)
                    seen += 1
                else:
                    numerator, denominator = value.as_integer_ratio()
                    running += numerator << (SCALE + 1 - denominator.bit_length())
                    seen += 1
            elif kind is int or kind is bool:
                running += value << SCALE
                seen += 1
            elif is_number(value):  # a subclass of int or float
                scaled = _scaled(value)
                if scaled is None:
                    (self.pos_inf if value > 0 else self.neg_inf).append(position + base)
                else:
                    running += scaled
                seen += 1
            total.append(running)
            count.append(seen)

    def dropped(self, drop: int, base: int) -> Sums | None:
        """After the first `drop` positions went (None: start again)."""
        if len(self.count) <= drop:
            return None
        del self.total[:drop], self.count[:drop]
        self.pos_inf = [i for i in self.pos_inf if i >= base]
        self.neg_inf = [i for i in self.neg_inf if i >= base]
        return self


class Rises:
    """`cum[p]`: how many positions before p hold a truthy value after a falsy one."""

    __slots__ = ("cum", "was")

    def __init__(self) -> None:
        self.cum: list[int] = [0]
        self.was = True  # the first position ever has nothing before it: no rise

    def extend(self, values: list[Any]) -> None:
        cum = self.cum
        found, was = cum[-1], self.was
        for position in range(len(cum) - 1, len(values)):
            on = bool(values[position])
            if on and not was:
                found += 1
            was = on
            cum.append(found)
        self.was = was

    def dropped(self, drop: int) -> Rises | None:
        if len(self.cum) <= drop:
            return None
        del self.cum[:drop]
        return self


class Extremes:
    """A monotonic stack over the numbers among the good samples: each entry is at
    least as large (as small) as everything after it, so the first entry at or after a
    window's start is the window's extreme when the window reaches the latest sample."""

    __slots__ = ("largest", "indexes", "values", "built")

    def __init__(self, largest: bool) -> None:
        self.largest = largest
        self.indexes: list[int] = []  # absolute, increasing
        self.values: list[Any] = []
        self.built = 0  # absolute index of the next good sample to take in

    def extend(self, values: list[Any], base: int) -> None:
        indexes, kept = self.indexes, self.values
        largest = self.largest
        for position in range(max(self.built - base, 0), len(values)):
            value = values[position]
            if not is_number(value):
                continue
            if largest:
                while kept and kept[-1] < value:
                    kept.pop()
                    indexes.pop()
            else:
                while kept and kept[-1] > value:
                    kept.pop()
                    indexes.pop()
            kept.append(value)
            indexes.append(position + base)
        self.built = len(values) + base

    def first_from(self, start: int) -> Any:
        at = bisect_left(self.indexes, start)
        return self.values[at] if at < len(self.values) else None

    def dropped(self, base: int) -> None:
        at = bisect_left(self.indexes, base)
        del self.indexes[:at], self.values[:at]


class Hits:
    """`cum[p]`: how many positions before p pass one count() condition; `errors`:
    absolute indexes where the condition raised (raised again if a window holds one)."""

    __slots__ = ("cum", "errors")

    def __init__(self) -> None:
        self.cum: list[int] = [0]
        self.errors: list[int] = []

    def extend(self, test: SampleTest, times: list[float], values: list[Any],
               base: int) -> None:
        cum = self.cum
        found = cum[-1]
        for position in range(len(cum) - 1, len(values)):
            try:
                if test(values[position], times[position]):
                    found += 1
            except Exception:  # noqa: BLE001 - raised again when a window reads it
                self.errors.append(position + base)
            cum.append(found)

    def dropped(self, drop: int, base: int) -> Hits | None:
        if len(self.cum) <= drop:
            return None
        del self.cum[:drop]
        self.errors = [i for i in self.errors if i >= base]
        return self
