"""What an expression reads: each point's recent samples, and the moment of evaluation.

The engine feeds every batch into a `History` (one ring buffer per point, kept as long
as the longest window any expression asks for), then evaluates expressions against a
`Context`: the history, the evaluation time, the device a profile rule runs for, and
when the rule was last evaluated (for `changed`). Compiled expressions only use the
`Scope` protocol, so the engine may supply its own context.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.batch import Batch, Quality

# A ring buffer's hard cap: a 1 s poll with a 1 h window is 3,600 samples.
MAX_SAMPLES = 20_000


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
    keep working after a long outage.
    """

    __slots__ = ("keep", "samples", "last_good")

    def __init__(self, keep: float = 0.0, max_samples: int = MAX_SAMPLES) -> None:
        self.keep = keep
        self.samples: deque[Sample] = deque(maxlen=max_samples)
        self.last_good: Sample | None = None

    def append(self, sample: Sample) -> None:
        samples = self.samples
        if samples and sample.ts < samples[-1].ts:
            return  # out of order: a late sample would corrupt every window
        samples.append(sample)
        if sample.good:
            self.last_good = sample
        horizon = sample.ts - self.keep
        while len(samples) > 2 and samples[1].ts <= horizon:
            samples.popleft()

    def latest(self) -> Sample | None:
        return self.samples[-1] if self.samples else None

    # Windows sit at the recent end of the buffer, so every search walks back from it.

    def good_since(self, since: float, until: float) -> list[Sample]:
        """Good samples with since < ts <= until, oldest first."""
        found = []
        for sample in reversed(self.samples):
            if sample.ts <= since:
                break
            if sample.ts <= until and sample.good:
                found.append(sample)
        found.reverse()
        return found

    def good_at(self, ts: float) -> Sample | None:
        """The last good sample at or before `ts`: the value in force then."""
        for sample in reversed(self.samples):
            if sample.ts <= ts and sample.good:
                return sample
        return None

    def good_before(self, sample: Sample) -> Sample | None:
        """The good sample just before `sample`."""
        seen = False
        for candidate in reversed(self.samples):
            if seen and candidate.good:
                return candidate
            seen = seen or candidate is sample
        return None


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

    def need(self, windows: Mapping[str, float]) -> None:
        """Keep at least these many seconds of these points (an expression's `.windows`)."""
        for point, seconds in windows.items():
            if point not in self._keep or seconds > self._keep[point]:
                self._keep[point] = seconds
                if point in self._points:
                    self._points[point].keep = seconds

    def record(self, point: str, ts: float, value: Any, quality: str = Quality.GOOD) -> None:
        series = self._points.get(point)
        if series is None:
            series = PointHistory(self._keep.get(point, 0.0), self._max_samples)
            self._points[point] = series
        series.append(Sample(ts, value if quality == Quality.GOOD else None, quality))

    def record_batch(self, batch: Batch) -> None:
        """Every reading of one poll, as `device.point`."""
        prefix = batch.device + "."
        keep = self._keep if self._needed_only else None
        for point, value, quality in batch.items():
            name = prefix + point
            if keep is None or name in keep:
                self.record(name, batch.ts, value, quality)

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
    this device, None the first time.
    """

    history: History
    now: float
    device: str | None = None
    previous: float | None = None

    def resolve(self, point: str) -> str:
        if self.device is None or "." in point:
            return point
        return f"{self.device}.{point}"

    def series(self, point: str) -> PointHistory | None:
        return self.history.get(self.resolve(point))

    def value(self, point: str) -> Any:
        """The current value, or None when the latest sample is not good or there is none."""
        series = self.history.get(self.resolve(point))
        if series is None or not series.samples:
            return None
        return series.samples[-1].value
