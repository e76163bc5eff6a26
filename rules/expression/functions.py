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

from rules.expression.history import Sample, Scope

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


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not (isinstance(value, float) and math.isnan(value))


def _numbers(samples) -> list[float]:
    return [sample.value for sample in samples if is_number(sample.value)]


# -- functions of values: unknown in, unknown out ------------------------------------

def _abs(value: Any) -> Any:
    return abs(value) if is_number(value) else None


def _min(*values: Any) -> Any:
    return min(values) if all(is_number(v) for v in values) else None


def _max(*values: Any) -> Any:
    return max(values) if all(is_number(v) for v in values) else None


def _round(value: Any, digits: Any = 0) -> Any:
    if not is_number(value) or not isinstance(digits, int) or isinstance(digits, bool):
        return None
    return round(value, digits) if digits else round(value)


# -- functions of a point's history --------------------------------------------------

def _window(scope: Scope, point: str, seconds: float) -> list[float]:
    series = scope.series(point)
    if series is None:
        return []
    return _numbers(series.good_since(scope.now - seconds, scope.now))


def _over(reduce: Callable[[list[float]], float]) -> Callable[[Scope, str, float], Any]:
    """A window function: `reduce` of the window's good numbers, unknown when there are none."""

    def run(scope: Scope, point: str, seconds: float) -> Any:
        values = _window(scope, point, seconds)
        return reduce(values) if values else None

    return run


_avg = _over(lambda values: sum(values) / len(values))
_min_over = _over(min)
_max_over = _over(max)


def _span(scope: Scope, point: str, seconds: float | None) -> tuple[Sample, Sample] | None:
    """(base, latest): the good samples a change is measured between.

    With a window the base is the value in force when the window opened, or the oldest
    good sample inside it when history does not reach back that far; without one it is
    the good sample before the latest.
    """
    series = scope.series(point)
    if series is None:
        return None
    latest = series.good_at(scope.now)
    if latest is None:
        return None
    if seconds is None:
        base = series.good_before(latest)
    else:
        start = scope.now - seconds
        base = series.good_at(start) or next(iter(series.good_since(start, scope.now)), None)
    if base is None or base is latest or not (is_number(base.value) and is_number(latest.value)):
        return None
    return base, latest


def _delta(scope: Scope, point: str, seconds: float) -> Any:
    span = _span(scope, point, seconds)
    return None if span is None else span[1].value - span[0].value


def _rate(scope: Scope, point: str, seconds: float | None = None) -> Any:
    span = _span(scope, point, seconds)
    if span is None or span[1].ts <= span[0].ts:
        return None
    base, latest = span
    return (latest.value - base.value) / (latest.ts - base.ts) * 60.0


def _changed(scope: Scope, point: str) -> bool:
    series = scope.series(point)
    latest = series.good_at(scope.now) if series is not None else None
    if latest is None or (scope.previous is not None and latest.ts <= scope.previous):
        return False
    before = series.good_before(latest)  # type: ignore[union-attr]
    return before is not None and before.value != latest.value


def _age(scope: Scope, point: str) -> float:
    series = scope.series(point)
    if series is None or series.last_good is None:
        return math.inf  # never read: older than any limit, so comm-loss rules fire
    return max(0.0, scope.now - series.last_good.ts)


def _stale(scope: Scope, point: str, seconds: float) -> bool:
    return _age(scope, point) > seconds


def _rises(scope: Scope, point: str, seconds: float) -> int:
    series = scope.series(point)
    if series is None:
        return 0
    start = scope.now - seconds
    before = series.good_at(start)
    was = bool(before.value) if before is not None else None
    rises = 0
    for sample in series.good_since(start, scope.now):
        now_on = bool(sample.value)
        if now_on and was is False:
            rises += 1
        was = now_on
    return rises


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
