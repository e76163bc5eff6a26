"""Report by exception: which readings go upstream over a thin (4G) link.

A point is reported when its quality changed, when its value moved beyond the deadband
since the value last *sent* (so slow drift still gets reported once it adds up), but
not more often than `min_interval`, and at least every `max_interval` (a heartbeat that
tells the platform the point is alive and unchanged).

Time is the readings' own timestamp, not the wall clock: a backlog drained after an
outage is filtered as if it had been sent live, and the decisions are repeatable.

The filter stages its decisions and keeps them only once the broker confirmed the
send (`commit`); a failed send is `rollback`ed, so the retry decides the same way and
nothing the filter meant to send is lost. Readings the filter leaves out are dropped
by design: the sink's cursor moves past them as if the platform had confirmed them.
The state lives in memory: after a restart every point is reported once again.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from gateway.batch import Batch, Quality
from gateway.config.models import ReportPolicy

PolicyLookup = Callable[[str, str], ReportPolicy]  # (device, point) -> policy


@dataclass(frozen=True, slots=True)
class _Sent:
    """What the platform last received for one point."""

    value: object
    quality: str
    ts: float


def changed(old: object, new: object, policy: ReportPolicy) -> bool:
    """True when `new` differs from `old` by more than the policy's deadband.

    Numbers use the larger of the absolute deadband and the percentage of the last
    value sent (the absolute one is a floor that keeps noise around zero out); booleans
    and text report any change.
    """
    numeric = (int, float)
    if (
        isinstance(old, bool) or isinstance(new, bool)
        or not isinstance(old, numeric) or not isinstance(new, numeric)
    ):
        return old != new
    threshold = max(policy.deadband, abs(old) * policy.deadband_percent / 100.0)
    return abs(new - old) > threshold


class ReportFilter:
    """Per-point report-by-exception state for one upstream sink."""

    def __init__(self, policy_of: PolicyLookup) -> None:
        self.policy_of = policy_of
        self._sent: dict[tuple[str, str], _Sent] = {}
        self._staged: dict[tuple[str, str], _Sent] = {}
        self.kept = 0  # points reported
        self.filtered = 0  # points left out

    def filter(self, batch: Batch) -> Batch | None:
        """The part of `batch` worth reporting (the same object if all of it), or None."""
        keep: list[int] = []
        for index, (point, value, quality) in enumerate(batch.items()):
            if isinstance(value, float) and not math.isfinite(value):
                value, quality = None, Quality.OUT_OF_RANGE  # as the telemetry payload says it
            key = (batch.device, point)
            last = self._staged.get(key) or self._sent.get(key)
            if self._due(last, value, str(quality), batch.ts, self.policy_of(batch.device, point)):
                self._staged[key] = _Sent(value, str(quality), batch.ts)
                keep.append(index)
        self.kept += len(keep)
        self.filtered += len(batch.points) - len(keep)
        if not keep:
            return None
        if len(keep) == len(batch.points):
            return batch
        quality = None if batch.quality is None else [batch.quality[i] for i in keep]
        return Batch(
            batch.device, batch.ts, tuple(batch.points[i] for i in keep),
            [batch.values[i] for i in keep], quality,
        )

    @staticmethod
    def _due(last: _Sent | None, value: object, quality: str, ts: float, policy: ReportPolicy) -> bool:
        if last is None or quality != last.quality:
            return True  # first sight, or the quality changed: always reported
        elapsed = ts - last.ts
        if elapsed < 0 or elapsed >= policy.max_interval:
            return True  # heartbeat (or a clock that went back: start again from here)
        if elapsed < policy.min_interval or quality != Quality.GOOD:
            return False  # too soon; a bad point without a value only has heartbeats
        return changed(last.value, value, policy)

    def commit(self) -> None:
        """The broker confirmed the send: what was staged is now what the platform has."""
        self._sent.update(self._staged)
        self._staged.clear()

    def rollback(self) -> None:
        """The send failed: forget the staged decisions so the retry makes them again."""
        self._staged.clear()


def policy_lookup(
    default: ReportPolicy, per_point: Callable[[str], dict[str, ReportPolicy]]
) -> PolicyLookup:
    """A lookup that prefers a point's own policy (from its profile) to the site default."""

    def policy_of(device: str, point: str) -> ReportPolicy:
        return per_point(device).get(point, default)

    return policy_of
