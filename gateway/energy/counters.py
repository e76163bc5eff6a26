"""Consumption from a cumulative counter: raw meter readings in, a continuous total out.

A meter's register is not a clean series: it wraps at the top of its range, it goes back
to zero when the meter is replaced or its memory is cleared, and a corrupted read can
jump it by millions. `CounterTracker` turns the readings of one counter into `total`, the
consumption since tracking began, which never decreases and never jumps because of
those accidents:

- rollover: a reading below the last by more than half the register's range wrapped;
  the consumption is `rollover - last + raw`. Normal, logged, not an event.
- reset: any other step backwards (beyond float noise) is a meter reset or swap; nothing
  is counted for that step and the series continues from the new reading.
- jump: a step faster than `max_rate` (units per hour) is implausible; nothing is counted
  and the series continues from the new reading. If the very next reading continues the
  series from before the jump, the jump was one corrupted read (a glitch): what the old
  series counted meanwhile is counted and nothing is lost.
- replacement: `replace(ts, old_final, new_initial)` counts the old meter up to its final
  reading and continues from the new meter's initial one. Recorded after the swap was
  already seen as a reset or jump (at a time after the old meter's last reading, within
  a week of the step), it credits what that step dropped: the old meter from its last
  reading to its final one, the new one from its initial reading to the first seen.

What a reset or jump drops is not counted in any rollup unless a replacement explains it
(docs/energy.md): a guess would put a made-up number in the ledger.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from gateway.config.models import ModbusPoint

ROLLOVER, RESET, JUMP, REPLACED, RESUMED = "rollover", "reset", "jump", "replaced", "resumed"

# The span of each integer register type: a counter in it wraps at span x scale.
_REGISTER_SPAN = {
    "uint16": 2**16, "int16": 2**16, "bcd16": 10**4,
    "uint32": 2**32, "int32": 2**32, "bcd32": 10**8,
    "uint64": 2**64, "int64": 2**64,
}
_RELATIVE_NOISE = 2.5e-7  # about two float32 steps: a re-read rounding, not a meter going back
_ABSOLUTE_NOISE = 1e-9
EXPLAIN_WITHIN = 7 * 86400.0  # a replacement this soon after a reset or jump explains it


def default_rollover(point: Any) -> float | None:
    """Where a counter wraps when its profile does not say: the register's range times its
    scale (uint16: 65536 x scale, ...); None for floats and for BACnet and MQTT points,
    which carry numbers rather than registers."""
    if not isinstance(point, ModbusPoint):
        return None
    span = _REGISTER_SPAN.get(point.type)
    return None if span is None else span * abs(point.scale)


def as_reading(value: Any) -> float | None:
    """A finite number, or None (text, a bool, NaN): a value a counter can take."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


@dataclass(slots=True)
class Step:
    """What one reading did to a counter. `base` is the raw the series continues from
    (the last one when a reading is a hair below it: float noise)."""

    ts: float
    raw: float
    previous: float | None
    consumption: float
    flag: str | None = None
    rate: float | None = None  # units per hour of the step, when it was judged a jump
    base: float | None = None


class CounterTracker:
    """One counter of one meter: `total` since tracking began, from raw readings."""

    def __init__(self, device: str, point: str, *, rollover: float | None = None,
                 max_rate: float | None = None) -> None:
        self.device = device
        self.point = point
        self.rollover = rollover
        self.max_rate = max_rate
        self.total = 0.0
        self.last_raw: float | None = None
        self.last_ts: float | None = None
        self.glitch: tuple[float, float] | None = None  # (ts, raw) just before a jump
        self.unexplained: dict[str, float] | None = None  # the last reset/jump not yet explained

    # -- readings --------------------------------------------------------------------------

    def assess(self, ts: float, raw: float) -> Step | None:
        """What this reading would do, without doing it; None for a reading not newer than
        the last (out of order or repeated), which is ignored."""
        last, last_ts = self.last_raw, self.last_ts
        if last is None or last_ts is None:
            return Step(ts, raw, None, 0.0, base=raw)
        if ts <= last_ts:
            return None
        step = self._from(last, last_ts, ts, raw)
        if step.flag in (RESET, JUMP) and self.glitch is not None:
            g_ts, g_raw = self.glitch
            again = self._from(g_raw, g_ts, ts, raw)
            if again.flag in (None, ROLLOVER):
                return Step(ts, raw, last, again.consumption, RESUMED, base=again.base)
        return step

    def commit(self, step: Step) -> None:
        """Apply an assessed step."""
        if step.flag in (RESET, JUMP):
            self.glitch = (self.last_ts, self.last_raw) if step.flag == JUMP else None
            self.unexplained = {"ts": step.ts, "raw": step.raw, "previous": step.previous,
                                "previous_ts": self.last_ts}
        else:
            self.glitch = None
            if step.flag == RESUMED:
                self.unexplained = None
        self.total += step.consumption
        self.last_raw = step.raw if step.base is None else step.base
        self.last_ts = step.ts

    def feed(self, ts: float, raw: float) -> Step | None:
        """Assess and apply one reading."""
        step = self.assess(ts, raw)
        if step is not None:
            self.commit(step)
        return step

    def _from(self, last: float, last_ts: float, ts: float, raw: float) -> Step:
        delta = raw - last
        flag = None
        base = raw
        if delta < 0:
            if -delta <= _ABSOLUTE_NOISE + _RELATIVE_NOISE * abs(last):
                delta, base = 0.0, last
            elif self.rollover is not None and -delta > self.rollover / 2:
                delta, flag = self.rollover - last + raw, ROLLOVER
            else:
                return Step(ts, raw, last, 0.0, RESET, base=raw)
        rate = delta / ((ts - last_ts) / 3600.0)
        if self.max_rate is not None and rate > self.max_rate:
            # a "wrap" faster than the meter can count was a reset below half the range
            return Step(ts, raw, last, 0.0, RESET if flag == ROLLOVER else JUMP, rate, base=raw)
        return Step(ts, raw, last, delta, flag, base=base)

    # -- replacement -----------------------------------------------------------------------

    def replace(self, ts: float, old_final: float, new_initial: float) -> Step:
        """A meter swap: count the old meter to `old_final`, continue from `new_initial`.

        Raises ValueError (with a reason for the operator) when the numbers do not fit the
        readings seen, before changing anything.
        """
        last, last_ts = self.last_raw, self.last_ts
        if last is None or last_ts is None:
            step = Step(ts, new_initial, None, 0.0, REPLACED, base=new_initial)
        elif self._explains(ts):
            # the swap was already seen as a reset or jump: credit what that step dropped
            seen = self.unexplained
            old_part = self._forward(seen["previous"], old_final, "the old meter's final reading")
            new_part = self._forward(new_initial, seen["raw"], "the new meter's initial reading")
            step = Step(max(ts, last_ts), last, last, old_part + new_part, REPLACED, base=last)
        else:
            if ts < last_ts:
                raise ValueError(
                    f"{self.device}.{self.point} was read after that time ({last} at "
                    f"{last_ts:.0f}) with no reset seen; give the time of the swap")
            old_part = self._forward(last, old_final, "the old meter's final reading")
            step = Step(ts, new_initial, last, old_part, REPLACED, base=new_initial)
        self.glitch = None
        self.unexplained = None
        self.total += step.consumption
        self.last_raw = step.base
        self.last_ts = step.ts
        return step

    def _explains(self, ts: float) -> bool:
        """A swap at `ts` explains the last reset or jump when it falls after the old meter's
        last reading and within a week of the step (recorded late, at the time of entry)."""
        seen = self.unexplained
        return (seen is not None and seen["previous_ts"] is not None
                and seen["previous_ts"] <= ts <= seen["ts"] + EXPLAIN_WITHIN)

    def _forward(self, start: float, end: float, what: str) -> float:
        """The consumption from `start` to `end` on one meter (wrapping if it can)."""
        delta = end - start
        if delta >= -(_ABSOLUTE_NOISE + _RELATIVE_NOISE * abs(start)):
            return max(delta, 0.0)
        if self.rollover is not None and -delta > self.rollover / 2:
            return self.rollover - start + end
        raise ValueError(f"{what} ({end}) is below the reading before it ({start}) on "
                         f"{self.device}.{self.point}")

    # -- persistence -----------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {"total": self.total, "last_raw": self.last_raw, "last_ts": self.last_ts,
                "glitch": list(self.glitch) if self.glitch else None,
                "unexplained": self.unexplained}

    def restore(self, body: dict[str, Any]) -> None:
        self.total = float(body.get("total") or 0.0)
        self.last_raw = body.get("last_raw")
        self.last_ts = body.get("last_ts")
        glitch = body.get("glitch")
        self.glitch = (glitch[0], glitch[1]) if glitch else None
        self.unexplained = body.get("unexplained")
