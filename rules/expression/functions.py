"""The functions a rule expression may call, and what each does with missing data.

Each function is declared once in `FUNCTIONS` with the kinds of its arguments, so the
compiler checks every call at start-up (a window must be a duration, a window function
must be given a point) and nothing is looked up by name at run time. Functions that read
history take the scope, the point and the window in seconds; they return None
(unknown) when the history cannot answer, never a made-up number.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from rules.expression.history import Scope
from rules.expression.windows import NUMBER, is_number

# value: any expression; point: a point's name; window: a duration literal;
# condition: an expression over one point, evaluated per sample (count).
ArgKind = Literal["value", "point", "window", "condition"]


@dataclass(frozen=True, slots=True)
class FunctionSpec:
    """One function: its argument kinds, how many are optional, how to call it."""

    name: str
    args: tuple[ArgKind, ...]
    usage: str
    purpose: str
    run: Callable[..., Any] | None  # None for count, which the compiler builds itself
    optional: int = 0  # how many trailing args may be left out
    variadic: bool = False  # the last kind repeats (min, max)

    @property
    def reads_history(self) -> bool:
        return "point" in self.args or "condition" in self.args


# -- functions of values: unknown in, unknown out ------------------------------------

def _abs(value: Any) -> Any:
    return abs(value) if is_number(value) else None


def _min(*values: Any) -> Any:
    for value in values:
        if not (isinstance(value, NUMBER) and value == value):
            return None
    return min(values)


def _max(*values: Any) -> Any:
    for value in values:
        if not (isinstance(value, NUMBER) and value == value):
            return None
    return max(values)


def _round(value: Any, digits: Any = 0) -> Any:
    if not is_number(value) or not isinstance(digits, int) or isinstance(digits, bool):
        return None
    return round(value, digits) if digits else round(value)


# -- functions of a point's history --------------------------------------------------
# Each asks its PointHistory, which answers a window without walking it.

def _avg(scope: Scope, point: str, seconds: float) -> Any:
    series = scope.series(point)
    now = scope.now
    return None if series is None else series.average(now - seconds, now)


def _min_over(scope: Scope, point: str, seconds: float) -> Any:
    series = scope.series(point)
    now = scope.now
    return None if series is None else series.extreme(now - seconds, now, largest=False)


def _max_over(scope: Scope, point: str, seconds: float) -> Any:
    series = scope.series(point)
    now = scope.now
    return None if series is None else series.extreme(now - seconds, now, largest=True)


def _span(scope: Scope, point: str, seconds: float | None) -> tuple[float, Any, float, Any] | None:
    """(base ts, base value, latest ts, latest value): the good samples a change is
    measured between.

    With a window the base is the value in force when the window opened, or the oldest
    good sample inside it when history does not reach back that far; without one it is
    the good sample before the latest.
    """
    series = scope.series(point)
    if series is None:
        return None
    now = scope.now
    latest = series.good_index(now)
    if latest < 0:
        return None
    if seconds is None:
        base = latest - 1
        if not series.is_live(base):
            return None
    else:
        start = now - seconds
        base = series.good_index(start)
        if base < 0:
            base, end = series.good_range(start, now)
            if base >= end:
                return None
    if base == latest:
        return None
    base_ts, base_value = series.good_sample(base)
    latest_ts, latest_value = series.good_sample(latest)
    if not (is_number(base_value) and is_number(latest_value)):
        return None
    return base_ts, base_value, latest_ts, latest_value


def _delta(scope: Scope, point: str, seconds: float) -> Any:
    span = _span(scope, point, seconds)
    return None if span is None else span[3] - span[1]


def _rate(scope: Scope, point: str, seconds: float | None = None) -> Any:
    span = _span(scope, point, seconds)
    if span is None or span[2] <= span[0]:
        return None
    base_ts, base_value, latest_ts, latest_value = span
    return (latest_value - base_value) / (latest_ts - base_ts) * 60.0


def _changed(scope: Scope, point: str) -> bool:
    series = scope.series(point)
    if series is None:
        return False
    latest = series.good_index(scope.now)
    if latest < 0:
        return False
    latest_ts, latest_value = series.good_sample(latest)
    if scope.previous is not None and latest_ts <= scope.previous:
        return False
    if not series.is_live(latest - 1):
        return False
    return series.good_sample(latest - 1)[1] != latest_value


def _age(scope: Scope, point: str) -> float:
    series = scope.series(point)
    last = None if series is None else series.last_good_ts
    if last is None:
        return math.inf  # never read: older than any limit, so comm-loss rules fire
    return max(0.0, scope.now - last)


def _stale(scope: Scope, point: str, seconds: float) -> bool:
    return _age(scope, point) > seconds


def _rises(scope: Scope, point: str, seconds: float) -> int:
    series = scope.series(point)
    now = scope.now
    return 0 if series is None else series.rises(now - seconds, now)


_SPECS = [
    FunctionSpec("abs", ("value",), "abs(x)", "absolute value", _abs),
    FunctionSpec("min", ("value", "value"), "min(a, b, ...)", "smallest of its arguments",
                 _min, variadic=True),
    FunctionSpec("max", ("value", "value"), "max(a, b, ...)", "largest of its arguments",
                 _max, variadic=True),
    FunctionSpec("round", ("value", "value"), "round(x) or round(x, digits)",
                 "x rounded", _round, optional=1),
    FunctionSpec("avg", ("point", "window"), 'avg(point, "5m")',
                 "mean of the good samples in the window", _avg),
    FunctionSpec("min_over", ("point", "window"), 'min_over(point, "5m")',
                 "smallest good sample in the window", _min_over),
    FunctionSpec("max_over", ("point", "window"), 'max_over(point, "5m")',
                 "largest good sample in the window", _max_over),
    FunctionSpec("delta", ("point", "window"), 'delta(point, "10m")',
                 "change of the value over the window", _delta),
    FunctionSpec("rate", ("point", "window"), 'rate(point) or rate(point, "5m")',
                 "change per minute, between the last two samples or over the window",
                 _rate, optional=1),
    FunctionSpec("changed", ("point",), "changed(point)",
                 "true when the value changed since the rule was last evaluated", _changed),
    FunctionSpec("age", ("point",), "age(point)",
                 "seconds since the last good value (infinite if none yet)", _age),
    FunctionSpec("stale", ("point", "window"), 'stale(point, "2m")',
                 "true when no good value arrived within the window", _stale),
    FunctionSpec("count", ("condition", "window"), 'count(state == 3, "1h")',
                 "how many samples in the window met the condition", None),
    FunctionSpec("rises", ("point", "window"), 'rises(running, "1h")',
                 "how many times the value went from false to true in the window", _rises),
]

FUNCTIONS: dict[str, FunctionSpec] = {spec.name: spec for spec in _SPECS}

# Names engineers reach for that mean one of ours.
ALIASES = {
    "mean": "avg", "average": "avg", "diff": "delta", "difference": "delta",
    "len": "count", "starts": "rises", "minimum": "min", "maximum": "max",
}
