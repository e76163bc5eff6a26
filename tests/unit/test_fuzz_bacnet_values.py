"""Fuzzed BACnet answers: whatever a controller puts in a property, the reading is a value the
point's range allows, or no value with a bad quality — never an exception, never NaN."""

from __future__ import annotations

import math

from bacpypes3.basetypes import ErrorType
from bacpypes3.primitivedata import (
    BitString,
    Boolean,
    CharacterString,
    Double,
    Enumerated,
    Integer,
    Null,
    Real,
    Unsigned,
)
from hypothesis import event, given, settings
from hypothesis import strategies as st

from drivers.bacnet.values import engineering_value, status_quality
from gateway.batch import Quality
from gateway.config.models import BacnetPoint

FLOATS = st.floats(width=32)  # REAL on the wire is 32-bit, NaN and infinities included
RAW = st.one_of(
    FLOATS.map(Real),
    st.floats().map(Double),
    st.integers(0, 2**32 - 1).map(Unsigned),
    st.integers(-(2**31), 2**31 - 1).map(Integer),
    st.integers(0, 255).map(Enumerated),
    st.booleans().map(Boolean),
    st.text(max_size=20).map(CharacterString),
    st.just(Null(())),
    st.lists(st.integers(0, 1), max_size=8).map(BitString),
    st.just(ErrorType(errorClass="property", errorCode="unknown-property")),
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10)),
)


@st.composite
def points(draw: st.DrawFn) -> BacnetPoint:
    low = draw(st.one_of(st.none(), st.floats(-1e6, 1e6)))
    high = draw(st.one_of(st.none(), st.floats(-1e6, 1e6)))
    if low is not None and high is not None and low > high:
        low, high = high, low
    enum = draw(st.one_of(st.none(), st.just({1: "off", 2: "on", 3: "auto"})))
    return BacnetPoint(
        object=draw(st.sampled_from(["analog-input,1", "binary-input,2", "multi-state-value,3"])),
        scale=draw(st.sampled_from([1.0, 0.1, 10.0, -1.0, 1e30])),
        offset=draw(st.sampled_from([0.0, -273.15, 1e30])),
        min=low, max=high, enum=enum,
    )


@settings(max_examples=800, deadline=None)
@given(point=points(), raw=RAW)
def test_any_property_value_is_a_checked_reading_or_marked_bad(point: BacnetPoint, raw) -> None:
    value, problem = engineering_value(point, raw)
    if problem is not None:
        event(problem)
        assert problem in (Quality.OUT_OF_RANGE, Quality.DECODE_ERROR)
        assert value is None
        return
    event(type(value).__name__)
    if isinstance(value, float):
        assert math.isfinite(value), f"{raw!r} became {value!r} with good quality"
    if isinstance(value, int | float) and not isinstance(value, bool):
        assert point.min is None or value >= point.min
        assert point.max is None or value <= point.max


@settings(max_examples=300, deadline=None)
@given(flags=st.one_of(st.none(), st.lists(st.integers(0, 1), max_size=6).map(BitString),
                       st.lists(st.booleans(), max_size=6), st.text(max_size=4)),
       reliability=st.one_of(st.none(), st.integers(0, 300).map(Enumerated), st.text(max_size=4),
                             st.just(ErrorType(errorClass="property", errorCode="unknown-property"))))
def test_any_status_flags_and_reliability_give_a_known_quality(flags, reliability) -> None:
    assert status_quality(flags, reliability) in (None, Quality.DEVICE_EXCEPTION)
