"""Windows answered from running totals, bisection and monotonic stacks give what walking
every sample of the window gives: pinned against a brute-force reference (the plain
list-walking history the engine used before) on random sequences with bad samples, NaN,
infinities, booleans, text, late samples, trimming, the sample cap and windows longer
than the history."""

from __future__ import annotations

import math
import random
from collections import deque
from fractions import Fraction
from typing import Any

import pytest

import rules.expression.history as history_module
from gateway.batch import Quality
from rules.expression import Context, History, compile_expression
from rules.expression.history import PointHistory

BAD = Quality.COMM_FAILURE


# -- the reference: every window walked sample by sample ---------------------------------


class Reference:
    """One point's samples as (ts, value, good), trimmed as PointHistory trims them."""

    def __init__(self, keep: float, max_samples: int) -> None:
        self.keep = keep
        self.samples: deque[tuple[float, Any, bool]] = deque(maxlen=max_samples)
        self.last_good: tuple[float, Any] | None = None

    def add(self, ts: float, value: Any, good: bool) -> None:
        if self.samples and ts < self.samples[-1][0]:
            return
        self.samples.append((ts, value if good else None, good))
        if good:
            self.last_good = (ts, value)
        while len(self.samples) > 2 and self.samples[1][0] <= ts - self.keep:
            self.samples.popleft()

    def good_since(self, since: float, until: float) -> list[tuple[float, Any]]:
        return [(t, v) for t, v, good in self.samples if good and since < t <= until]

    def good_at(self, ts: float) -> int | None:
        """Index among the good samples of the one in force at `ts`."""
        goods = [t for t, _, good in self.samples if good]
        found = None
        for i, t in enumerate(goods):
            if t <= ts:
                found = i
        return found

    def goods(self) -> list[tuple[float, Any]]:
        return [(t, v) for t, v, good in self.samples if good]


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not (isinstance(value, float) and math.isnan(value))


def numbers(ref: Reference, now: float, seconds: float) -> list[Any]:
    return [v for _, v in ref.good_since(now - seconds, now) if is_number(v)]


def ref_avg(ref: Reference, now: float, seconds: float) -> Any:
    values = numbers(ref, now, seconds)
    if not values:
        return None
    infinite = [v for v in values if math.isinf(v)]
    if infinite:
        return sum(infinite) / len(values)  # inf, -inf, or NaN for both
    # the correctly rounded mean; sum()/len() is that too whenever its sum is exact
    return float(sum(Fraction(v) for v in values) / len(values))


def ref_extreme(ref: Reference, now: float, seconds: float, largest: bool) -> Any:
    values = numbers(ref, now, seconds)
    if not values:
        return None
    return max(values) if largest else min(values)


def ref_span(ref: Reference, now: float, seconds: float | None):
    goods = ref.goods()
    latest = ref.good_at(now)
    if latest is None:
        return None
    if seconds is None:
        base = latest - 1 if latest > 0 else None
    else:
        base = ref.good_at(now - seconds)
        if base is None:
            inside = [i for i, (t, _) in enumerate(goods) if now - seconds < t <= now]
            base = inside[0] if inside else None
    if base is None or base == latest:
        return None
    if not (is_number(goods[base][1]) and is_number(goods[latest][1])):
        return None
    return goods[base], goods[latest]


def ref_delta(ref: Reference, now: float, seconds: float) -> Any:
    span = ref_span(ref, now, seconds)
    return None if span is None else span[1][1] - span[0][1]


def ref_rate(ref: Reference, now: float, seconds: float | None) -> Any:
    span = ref_span(ref, now, seconds)
    if span is None or span[1][0] <= span[0][0]:
        return None
    (t0, v0), (t1, v1) = span
    return (v1 - v0) / (t1 - t0) * 60.0


def ref_rises(ref: Reference, now: float, seconds: float) -> int:
    goods = ref.goods()
    before = ref.good_at(now - seconds)
    was = bool(goods[before][1]) if before is not None else None
    rises = 0
    for _, value in ref.good_since(now - seconds, now):
        on = bool(value)
        if on and was is False:
            rises += 1
        was = on
    return rises


def ref_count(ref: Reference, now: float, seconds: float, condition) -> int:
    return sum(1 for _, v in ref.good_since(now - seconds, now) if condition(v))


def ref_changed(ref: Reference, now: float, previous: float | None) -> bool:
    goods = ref.goods()
    latest = ref.good_at(now)
    if latest is None or (previous is not None and goods[latest][0] <= previous):
        return False
    return latest > 0 and goods[latest - 1][1] != goods[latest][1]


def ref_age(ref: Reference, now: float) -> float:
    return math.inf if ref.last_good is None else max(0.0, now - ref.last_good[0])


def above_half(value: Any) -> bool:
    """count(p > 0.5)'s condition, as the compiler's three-valued logic evaluates it."""
    try:
        return value is not None and bool(value > 0.5)
    except TypeError:
        return False


# -- random sequences ------------------------------------------------------------------

VALUES = [0, 1, 2, -3, 0.25, 0.5, 0.1, 1e16, -1e16, 1.5, True, False, math.nan, math.inf,
          -math.inf, "on", "", None, 10**30]


def random_samples(rng: random.Random, n: int) -> list[tuple[float, Any, bool]]:
    """(ts, value, good): mostly steps forward, some equal stamps, some late samples."""
    out, ts = [], 1000.0
    for _ in range(n):
        ts += rng.choice([0.0, 0.5, 1.0, 1.0, 2.0, 5.0, 30.0])
        stamp = ts - rng.choice([3.0, 40.0]) if rng.random() < 0.05 else ts  # a late one
        if rng.random() < 0.6:
            value = rng.choice([0, 1, True, False, 0.2, 0.9])
        elif rng.random() < 0.5:
            value = round(rng.uniform(-5, 5), rng.choice([0, 1, 3, 12]))
        else:
            value = rng.choice(VALUES)
        out.append((stamp, value, rng.random() > 0.15))
    return out


def same(actual: Any, expected: Any) -> bool:
    if isinstance(expected, float) and math.isnan(expected):
        return isinstance(actual, float) and math.isnan(actual)
    return actual == expected and type(actual) is type(expected)


EXPRESSIONS = {
    "avg": 'avg(p, "{w}s")',
    "min_over": 'min_over(p, "{w}s")',
    "max_over": 'max_over(p, "{w}s")',
    "delta": 'delta(p, "{w}s")',
    "rate": 'rate(p, "{w}s")',
    "rises": 'rises(p, "{w}s")',
    "count": 'count(p > 0.5, "{w}s")',
}


def reference_of(name: str, ref: Reference, now: float, w: float) -> Any:
    return {
        "avg": lambda: ref_avg(ref, now, w),
        "min_over": lambda: ref_extreme(ref, now, w, largest=False),
        "max_over": lambda: ref_extreme(ref, now, w, largest=True),
        "delta": lambda: ref_delta(ref, now, w),
        "rate": lambda: ref_rate(ref, now, w),
        "rises": lambda: ref_rises(ref, now, w),
        "count": lambda: ref_count(ref, now, w, above_half),
    }[name]()


def moments(rng: random.Random, ref: Reference, last_ts: float) -> list[float]:
    """When to evaluate: at the latest sample, after it, before it (a tick behind the
    data), and at a live sample's own stamp."""
    out = [last_ts, last_ts + rng.choice([0.5, 7.0, 100.0]), last_ts - rng.choice([0.5, 4.0, 60.0])]
    if ref.samples:
        out.append(rng.choice(ref.samples)[0])
    return out


WINDOWS = (0.5, 1, 3, 10, 60, 3600, 10**7)  # the last longer than any history


@pytest.fixture(params=[False, True], ids=["no-compaction", "frequent-compaction"])
def compaction(request, monkeypatch):
    if request.param:  # compact after a handful of trimmed samples, to exercise it often
        monkeypatch.setattr(history_module, "_COMPACT_AT", 3)
    return request.param


@pytest.mark.parametrize("seed", range(12))
def test_windows_equal_the_brute_force_reference_on_random_sequences(seed, compaction) -> None:
    rng = random.Random(seed)
    keep = rng.choice([0.0, 4.0, 20.0, 90.0, 3600.0])
    max_samples = rng.choice([1, 2, 3, 7, 40, 20_000])
    history = History({"p": keep}, max_samples=max_samples)
    ref = Reference(keep, max_samples)
    compiled = {(name, w): compile_expression(text.format(w=w))
                for name, text in EXPRESSIONS.items() for w in WINDOWS}
    rate_last = compile_expression("rate(p)")
    changed = compile_expression("changed(p)")
    age = compile_expression("age(p)")
    last_ts = 0.0
    for step, (ts, value, good) in enumerate(random_samples(rng, 400)):
        history.record("p", ts, value if good else None, Quality.GOOD if good else BAD)
        ref.add(ts, value, good)
        last_ts = max(last_ts, ts)
        series = history.get("p")
        assert [(s.ts, s.value, s.good) for s in series.samples] == list(ref.samples), step
        for now in moments(rng, ref, last_ts):
            # evaluation order is random so lazily built totals start from any state
            for name, w in rng.sample(sorted(compiled), 6):
                got = compiled[name, w].evaluate(Context(history, now))
                want = reference_of(name, ref, now, w)
                assert same(got, want), (step, name, w, now, got, want)
            assert same(rate_last.evaluate(Context(history, now)), ref_rate(ref, now, None))
            previous = rng.choice([None, now - 1.0, now - 30.0])
            assert changed.evaluate(Context(history, now, previous=previous)) is \
                ref_changed(ref, now, previous)
            assert age.evaluate(Context(history, now)) == ref_age(ref, now)


@pytest.mark.parametrize("seed", range(4))
def test_long_runs_of_trimming_and_compaction_keep_every_window_right(seed) -> None:
    # a steady poll with a full window: the head moves every sample, the arrays compact
    rng = random.Random(100 + seed)
    history = History({"p": 60.0})
    ref = Reference(60.0, history_module.MAX_SAMPLES)
    expressions = {name: compile_expression(text.format(w=60)) for name, text in EXPRESSIONS.items()}
    for i in range(3000):
        ts = 1000.0 + i
        good = rng.random() > 0.1
        value = rng.choice([0, 1, 1, 0.5, 0.75, math.nan, True])
        history.record("p", ts, value if good else None, Quality.GOOD if good else BAD)
        ref.add(ts, value, good)
        if i % 7 == 0 or i > 2900:
            for name, expression in expressions.items():
                got = expression.evaluate(Context(history, ts))
                want = reference_of(name, ref, ts, 60)
                assert same(got, want), (i, name, got, want)
    assert len(history.get("p")) == len(ref.samples) == 61


def test_the_sample_cap_drops_the_oldest_and_windows_see_only_what_is_kept() -> None:
    history = History({"p": 3600.0}, max_samples=5)
    for ts in range(10):
        history.record("p", ts, ts)
    assert [s.ts for s in history.get("p").samples] == [5, 6, 7, 8, 9]
    assert compile_expression('avg(p, "1h")').evaluate(Context(history, 9)) == 7.0
    assert compile_expression('delta(p, "1h")').evaluate(Context(history, 9)) == 4
    assert compile_expression('rises(p, "1h")').evaluate(Context(history, 9)) == 0


def test_last_good_outlives_trimming_and_the_cap() -> None:
    history = History(max_samples=2)
    history.record("p", 0, 1.5)
    for ts in range(10, 60, 10):
        history.record("p", ts, None, BAD)
    series = history.get("p")
    assert series.last_good.ts == 0 and series.last_good.value == 1.5
    assert [s.good for s in series.samples] == [False, False]
    assert compile_expression("age(p)").evaluate(Context(history, 60)) == 60.0


def test_a_mean_is_correctly_rounded_and_equals_sum_over_len_when_that_is_exact() -> None:
    history = History({"p": 3600.0})
    for ts, value in enumerate([0.1, 0.2, 0.3, 0.4]):
        history.record("p", ts, value)
    exact = float(sum(map(Fraction, [0.1, 0.2, 0.3, 0.4])) / 4)
    assert compile_expression('avg(p, "1h")').evaluate(Context(history, 3)) == exact
    ints = History({"q": 3600.0})
    for ts, value in enumerate([3, 4, True, 10**20]):
        ints.record("q", ts, value)
    assert compile_expression('avg(q, "1h")').evaluate(Context(ints, 3)) == \
        (3 + 4 + 1 + 10**20) / 4


def test_infinities_in_a_window_make_its_mean_infinite_or_nan() -> None:
    history = History({"p": 3600.0})
    for ts, value in enumerate([1.0, math.inf, 2.0]):
        history.record("p", ts, value)
    avg = compile_expression('avg(p, "1h")')
    assert avg.evaluate(Context(history, 2)) == math.inf
    assert compile_expression('avg(p, "1s")').evaluate(Context(history, 2)) == 2.0  # inf left
    history.record("p", 3, -math.inf)
    assert math.isnan(avg.evaluate(Context(history, 3)))


def test_a_count_condition_that_raises_raises_only_when_its_sample_is_in_the_window() -> None:
    history = History({"p": 3600.0})
    for ts, value in enumerate([1.0, math.inf, 1.2, 0.9, 1.0]):
        history.record("p", ts, value)
    counting = compile_expression('count(round(p) == 1, "2s")')
    assert counting.evaluate(Context(history, 4)) == 2  # 0.9 and 1.0; inf is outside
    with pytest.raises(OverflowError):  # round(inf), as walking the window raised
        counting.evaluate(Context(history, 2))


def test_min_and_max_return_the_first_of_equal_values_as_a_walk_would() -> None:
    history = History({"p": 3600.0})
    for ts, value in enumerate([0, 1, True, 1.0, 0.0, False]):
        history.record("p", ts, value)
    assert same(compile_expression('max_over(p, "1h")').evaluate(Context(history, 5)), 1)
    biggest = compile_expression('max_over(p, "4s")').evaluate(Context(history, 5))
    assert biggest is True  # True, 1.0, 0.0, False
    assert same(compile_expression('min_over(p, "1h")').evaluate(Context(history, 5)), 0)
    smallest = compile_expression('min_over(p, "2s")').evaluate(Context(history, 5))
    assert same(smallest, 0.0)  # 0.0, False


def test_a_mean_asked_twice_at_one_moment_is_the_same_and_follows_new_samples() -> None:
    history = History({"pf": 3600.0})
    for ts, value in enumerate([0.88, 0.89, 0.91]):
        history.record("pf", ts, value)
    low, recovered = compile_expression('avg(pf, "1h") < 0.90'), compile_expression(
        'avg(pf, "1h") >= 0.92')
    assert low.holds(Context(history, 2)) is True and recovered.holds(Context(history, 2)) is False
    history.record("pf", 3, None, BAD)  # no new value, no change
    assert low.holds(Context(history, 3)) is True
    history.record("pf", 4, 0.99)
    assert low.holds(Context(history, 4)) is False  # (0.88 + 0.89 + 0.91 + 0.99) / 4


def test_a_mean_too_large_for_a_float_fails_every_time_it_is_asked() -> None:
    history = History({"p": 3600.0})
    history.record("p", 0, 10**400)
    mean = compile_expression('avg(p, "1h")')
    for _ in range(2):  # as sum()/len() did: the engine counts the rule's failure
        with pytest.raises(OverflowError):
            mean.evaluate(Context(history, 0))


def test_a_sample_a_little_late_is_dropped_but_a_clock_set_back_restarts_the_series():
    series = PointHistory(keep=600.0)
    for ts in (1000.0, 1001.0, 1002.0):
        series.add(ts, ts)
    series.add(990.0, 0)  # ten seconds late: out of order, dropped
    assert [s.ts for s in series.samples] == [1000.0, 1001.0, 1002.0]
    series.add(1002.0 - 3600, 7)  # an hour back: the clock was corrected
    assert [(s.ts, s.value) for s in series.samples] == [(1002.0 - 3600, 7)]
    assert series.last_good.value == 7
    series.add(1003.0 - 3600, 8)  # and the readings after it count again
    assert series.average(1000.0 - 7200, 1003.0 - 3600) == 7.5
