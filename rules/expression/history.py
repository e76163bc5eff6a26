"""What an expression reads: each point's recent samples, and the moment of evaluation.

The engine feeds every batch into a `History` (one `PointHistory` per point, kept as
long as the longest window any expression asks for), then evaluates expressions against
a `Context`: the history, the evaluation time, the device a profile rule runs for, and
when the rule was last evaluated (for `changed`). Compiled expressions only use the
`Scope` protocol, so the engine may supply its own context.

Windows are answered without walking them: a rule such as `avg(power_factor, "1h")` is
evaluated at every poll, and a walk over an hour of samples each time made the rules
stage the pipeline's bottleneck. A `PointHistory` keeps its samples in parallel arrays
(no object per sample), finds a window's bounds by bisection, and builds, the first time
a function asks and then as samples arrive, running totals for `avg`, rises for `rises`,
per-condition hits for `count`, and monotonic stacks for `min_over`/`max_over`.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.batch import Batch, Quality
from rules.expression.windows import (
    INF,
    SCALE,
    Extremes,
    Hits,
    Rises,
    SampleTest,
    Sums,
    is_number,
    within,
)

# A point's hard cap: a 1 s poll with a 1 h window is 3,600 samples.
MAX_SAMPLES = 20_000
# A sample this much older than a point's newest is not late, the clock was set back (an
# NTP correction, a mistyped date fixed by hand): the point's history restarts from it,
# or every rule would read the reading from before the jump until the clock caught up.
CLOCK_SET_BACK = 60.0  # seconds

# Batch shapes (device, points) whose routes are remembered; beyond, they start again.
BATCH_SHAPES = 4096

_GOOD = Quality.GOOD
# Trimmed samples stay at the front of the arrays until there are at least this many and
# they outnumber the live ones: then one memmove drops them all (amortised O(1) a sample).
_COMPACT_AT = 512


@dataclass(frozen=True, slots=True)
class Sample:
    """One reading of one point. A sample that is not good carries no value."""

    ts: float
    value: Any
    quality: str = Quality.GOOD

    @property
    def good(self) -> bool:
        return self.quality == Quality.GOOD


class PointHistory:
    """The recent samples of one point, oldest first, trimmed to `keep` seconds.

    One sample older than the window is kept, so `delta` knows the value in force when
    the window opened; at least two are kept, so `changed` and `rate` have a previous
    value. The last good sample is remembered even once trimmed, so `age` and `stale`
    keep working after a long outage. A sample older than the latest is dropped: a late
    sample would corrupt every window.

    Windows are (since, until]: a sample stamped exactly `since` belongs to the window
    before. Only good samples carry values; of those, only numbers that are not NaN
    count for `average` and `extreme`.
    """

    __slots__ = (
        "keep", "max_samples",
        # every live sample: its time, its quality, and how many good samples came before
        # it (absolute, so it is also its index among the good ones when it is good)
        "_ts", "_quality", "_rank", "_head",
        # the good samples alone, which is what every window reads
        "_good_ts", "_good_values", "_good_head", "_good_base",
        # kept as plain attributes: every evaluation reads them
        "current", "last_good_ts", "last_good_value",
        # built on demand, extended as samples arrive (see the module's docstring)
        "_sums", "_rises", "_highs", "_lows", "_counts",
    )

    def __init__(self, keep: float = 0.0, max_samples: int = MAX_SAMPLES) -> None:
        self.keep = keep
        self.max_samples = max_samples
        self._ts: list[float] = []
        self._quality: list[str] = []
        self._rank: list[int] = []
        self._head = 0  # index of the oldest live sample; those before it are trimmed
        self._good_ts: list[float] = []
        self._good_values: list[Any] = []
        self._good_head = 0  # position of the oldest live good sample
        self._good_base = 0  # good samples compacted away: position + base = absolute index
        self.current: Any = None  # the latest sample's value; None when it is not good
        self.last_good_ts: float | None = None  # the last good sample, even once trimmed
        self.last_good_value: Any = None
        self._sums: Sums | None = None
        self._rises: Rises | None = None
        self._highs: Extremes | None = None
        self._lows: Extremes | None = None
        self._counts: dict[SampleTest, Hits] | None = None

    # -- recording -------------------------------------------------------------------

    def add(self, ts: float, value: Any, quality: str = _GOOD) -> None:
        """Record one reading (its value is dropped unless it is good)."""
        times = self._ts
        n = len(times)
        head = self._head
        if n > head and ts < times[-1]:
            if times[-1] - ts <= CLOCK_SET_BACK:
                return  # out of order: a late sample would corrupt every window
            self._restart_at(ts)  # the clock was set back: what is "newer" never happened
            times, n, head = self._ts, len(self._ts), self._head
        times.append(ts)
        self._quality.append(quality)
        self._rank.append(self._good_base + len(self._good_ts))  # good samples ever added
        if quality == _GOOD:
            self._good_ts.append(ts)
            self._good_values.append(value)
            self.current = self.last_good_value = value
            self.last_good_ts = ts
        else:
            self.current = None
        live = n + 1 - head
        if live > 2 and times[head + 1] <= ts - self.keep:
            if (live == 3 or times[head + 2] > ts - self.keep) and live <= self.max_samples + 1:
                # the usual case once the window is full: the oldest sample leaves it (with
                # no window, the older of the two kept)
                self._head = head = head + 1
                self._good_head = self._rank[head] - self._good_base
                if head >= _COMPACT_AT and 2 * head > n:
                    self._compact()
            else:
                self._trim()
        elif live > self.max_samples:
            self._trim()

    def _restart_at(self, ts: float) -> None:
        """Keep only the samples up to `ts` (in place: the engine holds this object).

        Rare (a wall clock corrected backwards), so the series is simply built again."""
        kept = [s for s in self.samples if s.ts <= ts]
        last_good = (self.last_good_ts, self.last_good_value)
        PointHistory.__init__(self, self.keep, self.max_samples)
        for sample in kept:
            self.add(sample.ts, sample.value, sample.quality)
        if self.last_good_ts is None and last_good[0] is not None and last_good[0] <= ts:
            self.last_good_ts, self.last_good_value = last_good

    def _trim(self) -> None:
        times = self._ts
        n = len(times)
        head = max(self._head, n - self.max_samples)
        if n - head > 2:
            # drop samples while the second oldest is at or before the horizon
            beyond = bisect_right(times, times[-1] - self.keep, head + 1, n) - 1
            head = max(head, min(beyond, n - 2))
        self._head = head
        if head < n:
            self._good_head = self._rank[head] - self._good_base
        else:  # a cap of no samples at all
            self._good_head = len(self._good_ts)
            self.current = None
        if head >= _COMPACT_AT and 2 * head >= n:
            self._compact()

    def _compact(self) -> None:
        head, drop = self._head, self._good_head
        del self._ts[:head], self._quality[:head], self._rank[:head]
        self._head = 0
        if not drop:
            return
        del self._good_ts[:drop], self._good_values[:drop]
        self._good_head = 0
        self._good_base += drop
        base = self._good_base
        if self._sums is not None:
            self._sums = self._sums.dropped(drop, base)
        if self._rises is not None:
            self._rises = self._rises.dropped(drop)
        if self._highs is not None:
            self._highs.dropped(base)
        if self._lows is not None:
            self._lows.dropped(base)
        if self._counts:
            for test, counts in list(self._counts.items()):
                kept = counts.dropped(drop, base)
                if kept is None:
                    del self._counts[test]
                else:
                    self._counts[test] = kept

    # -- the latest ------------------------------------------------------------------

    @property
    def samples(self) -> list[Sample]:
        """The live samples, oldest first: a copy, for tests and tools (not the hot path)."""
        out = []
        base = self._good_base
        total = base + len(self._good_ts)
        last = len(self._ts) - 1
        for i in range(self._head, last + 1):
            rank = self._rank[i]
            good = (self._rank[i + 1] if i < last else total) > rank
            value = self._good_values[rank - base] if good else None
            out.append(Sample(self._ts[i], value, self._quality[i]))
        return out

    def __len__(self) -> int:
        return len(self._ts) - self._head

    def latest(self) -> Sample | None:
        if len(self._ts) <= self._head:
            return None
        return Sample(self._ts[-1], self.current, self._quality[-1])

    @property
    def last_good(self) -> Sample | None:
        """The last good sample, even once trimmed."""
        ts = self.last_good_ts
        return None if ts is None else Sample(ts, self.last_good_value)

    # -- windows, by position among the live good samples ------------------------------

    def good_index(self, ts: float) -> int:
        """The position of the last good sample at or before `ts` (the value in force
        then), or -1."""
        j = bisect_right(self._good_ts, ts, self._good_head) - 1
        return j if j >= self._good_head else -1

    def good_range(self, since: float, until: float) -> tuple[int, int]:
        """Positions [lo, hi) of the good samples with since < ts <= until."""
        times = self._good_ts
        lo = bisect_right(times, since, self._good_head)
        return lo, bisect_right(times, until, lo)

    def is_live(self, position: int) -> bool:
        return position >= self._good_head

    def good_sample(self, position: int) -> tuple[float, Any]:
        """(ts, value) of the good sample at `position`."""
        return self._good_ts[position], self._good_values[position]

    def average(self, since: float, until: float) -> Any:
        """Mean of the numbers among the good samples in the window (correctly rounded);
        None when there are none."""
        sums = self._sums
        if sums is None:
            sums = self._sums = Sums()
        # a rule with a deadband asks twice in a row (`when`, then `clear`)
        base = self._good_base
        asked = (since, until, base + len(self._good_ts), base + self._good_head)
        if sums.asked == asked:
            return sums.answer
        lo, hi = self.good_range(since, until)
        answer = None
        if lo < hi:
            if len(sums.count) <= hi:
                sums.extend(self._good_values, self._good_base)
            count = sums.count[hi] - sums.count[lo]
            if count:
                answer = self._mean(sums, lo, hi, count)  # may raise: then nothing is kept
        sums.asked, sums.answer = asked, answer
        return answer

    def _mean(self, sums: Sums, lo: int, hi: int, count: int) -> Any:
        if sums.pos_inf or sums.neg_inf:
            base = self._good_base
            up = within(sums.pos_inf, lo + base, hi + base)
            down = within(sums.neg_inf, lo + base, hi + base)
            if up and down:
                return INF - INF  # NaN, as a sum of inf and -inf is
            if up or down:
                return INF if up else -INF
        return (sums.total[hi] - sums.total[lo]) / (count << SCALE)

    def extreme(self, since: float, until: float, *, largest: bool) -> Any:
        """The largest (or smallest) number among the good samples in the window, the
        first of equal ones; None when there are none."""
        lo, hi = self.good_range(since, until)
        if lo >= hi:
            return None
        if hi < len(self._good_ts):  # the window ends before the latest: look at it
            numbers = [v for v in self._good_values[lo:hi] if is_number(v)]
            if not numbers:
                return None
            return max(numbers) if largest else min(numbers)
        stack = self._highs if largest else self._lows
        if stack is None:
            stack = Extremes(largest)
            if largest:
                self._highs = stack
            else:
                self._lows = stack
        stack.extend(self._good_values, self._good_base)
        return stack.first_from(lo + self._good_base)

    def rises(self, since: float, until: float) -> int:
        """How many good samples in the window are truthy after a falsy good sample; the
        first one compares with the value in force when the window opened."""
        lo, hi = self.good_range(since, until)
        if lo >= hi:
            return 0
        rises = self._rises
        if rises is None:
            rises = self._rises = Rises()
        if len(rises.cum) <= hi:
            rises.extend(self._good_values)
        cum = rises.cum
        found = cum[hi] - cum[lo]
        if lo == self._good_head:  # nothing in force at the start: the first is no rise
            found -= cum[lo + 1] - cum[lo]
        return found

    def count(self, test: SampleTest, since: float, until: float) -> int:
        """How many good samples in the window pass `test` (count()'s condition, which
        must depend on the sample alone: its results are kept)."""
        lo, hi = self.good_range(since, until)
        if lo >= hi:
            return 0
        if self._counts is None:
            self._counts = {}
        counts = self._counts.get(test)
        if counts is None:
            counts = self._counts[test] = Hits()
        if len(counts.cum) <= hi:
            counts.extend(test, self._good_ts, self._good_values, self._good_base)
        if counts.errors:
            base = self._good_base
            at = bisect_left(counts.errors, lo + base)
            if at < len(counts.errors) and counts.errors[at] < hi + base:
                position = counts.errors[at] - base  # raise as the condition did
                test(self._good_values[position], self._good_ts[position])
        return counts.cum[hi] - counts.cum[lo]


class History:
    """One `PointHistory` per point name, named `device.point`."""

    def __init__(self, keep: Mapping[str, float] | None = None, *,
                 max_samples: int = MAX_SAMPLES, needed_only: bool = False) -> None:
        self._keep: dict[str, float] = dict(keep or {})
        self._max_samples = max_samples
        self._points: dict[str, PointHistory] = {}
        # the engine's history keeps only the points some rule reads (`need`): most points
        # of a poll are read by no rule, and recording them was a fifth of a poll's cost
        self._needed_only = needed_only
        # (device, points of a batch) -> [(index in the batch, its series)]: a device's
        # batches share their points tuple, so names are joined once, not every poll
        self._routes: dict[tuple[str, tuple[str, ...]], list[tuple[int, PointHistory]]] = {}

    def need(self, windows: Mapping[str, float]) -> None:
        """Keep at least these many seconds of these points (an expression's `.windows`)."""
        for point, seconds in windows.items():
            if point not in self._keep or seconds > self._keep[point]:
                self._keep[point] = seconds
                if point in self._points:
                    self._points[point].keep = seconds
        self._routes.clear()  # a point newly needed may be in a batch seen before

    def series_of(self, point: str) -> PointHistory:
        """The series of `point`, created (empty) if it has none yet."""
        series = self._points.get(point)
        if series is None:
            series = PointHistory(self._keep.get(point, 0.0), self._max_samples)
            self._points[point] = series
        return series

    def record(self, point: str, ts: float, value: Any, quality: str = Quality.GOOD) -> None:
        self.series_of(point).add(ts, value, quality)

    def record_batch(self, batch: Batch) -> None:
        """Every reading of one poll, as `device.point`."""
        key = (batch.device, batch.points)
        route = self._routes.get(key)
        if route is None:
            if len(self._routes) >= BATCH_SHAPES:  # payloads of many shapes (MQTT)
                self._routes.clear()
            route = self._routes[key] = self._route(batch.device, batch.points)
        ts, values, quality = batch.ts, batch.values, batch.quality
        if quality is None:
            for index, series in route:
                series.add(ts, values[index])
        else:
            for index, series in route:
                series.add(ts, values[index], quality[index])

    def _route(self, device: str, points: tuple[str, ...]) -> list[tuple[int, PointHistory]]:
        prefix = device + "."
        keep = self._keep if self._needed_only else None
        return [(index, self.series_of(prefix + point)) for index, point in enumerate(points)
                if keep is None or prefix + point in keep]

    def get(self, point: str) -> PointHistory | None:
        return self._points.get(point)


class Scope(Protocol):
    """What a compiled expression reads while it is evaluated."""

    now: float
    previous: float | None

    def series(self, point: str) -> PointHistory | None: ...

    def value(self, point: str) -> Any: ...


@dataclass(slots=True)
class Context:
    """One evaluation: the history, the time, and whose points bare names mean.

    A profile rule's `outlet_pressure` means `<device>.outlet_pressure`; a site rule
    names `device.point` itself. `previous` is when this rule was last evaluated for
    this device, None the first time. The engine keeps one context per rule and moves
    `now` and `previous` along, so the series a name means is looked up once.
    """

    history: History
    now: float
    device: str | None = None
    previous: float | None = None
    # point as written -> its series, once it exists (a series is never replaced)
    _seen: dict[str, PointHistory] = field(default_factory=dict, init=False, repr=False,
                                           compare=False)

    def resolve(self, point: str) -> str:
        if self.device is None or "." in point:
            return point
        return f"{self.device}.{point}"

    def series(self, point: str) -> PointHistory | None:
        series = self._seen.get(point)
        if series is None:
            series = self.history.get(self.resolve(point))
            if series is not None:
                self._seen[point] = series
        return series

    def value(self, point: str) -> Any:
        """The current value, or None when the latest sample is not good or there is none."""
        series = self._seen.get(point)
        if series is None:
            series = self.series(point)
            if series is None:
                return None
        return series.current
