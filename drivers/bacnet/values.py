"""BACnet values into readings: the Python type, the point's scaling, and its quality.

bacpypes3 decodes an answer into its own types (Real, BinaryPV, Unsigned, ...); a batch
holds plain Python values, so this is the one place they are converted. A reading's
quality comes from the value itself (a property error, a range check) and from its
object's status-flags and reliability, which say whether the controller trusts it.
"""

from __future__ import annotations

import math
from typing import Any

from bacpypes3.basetypes import BinaryPV, ErrorType
from bacpypes3.primitivedata import (
    Atomic,
    BitString,
    Boolean,
    CharacterString,
    Double,
    Enumerated,
    Integer,
    Null,
    ObjectIdentifier,
    Real,
    Unsigned,
)

from gateway.batch import Quality
from gateway.config.models import BacnetPoint

FAULT, OUT_OF_SERVICE = 1, 3  # status-flags bits: in-alarm, fault, overridden, out-of-service
NO_FAULT_DETECTED = 0
BINARY_KINDS = ("binary-input", "binary-output", "binary-value", "binary-lighting-output")
MULTISTATE_KINDS = ("multi-state-input", "multi-state-output", "multi-state-value")


def python_value(value: Any) -> Any:
    """A plain Python value from a decoded BACnet one.

    REAL/Double -> float, binary present-value (active/inactive) -> bool, other
    enumerations and (un)signed integers -> int, strings -> str, NULL -> None.
    """
    if isinstance(value, BinaryPV):
        return int(value) == 1
    if isinstance(value, Boolean | bool):
        return bool(value)
    if isinstance(value, Real | Double | float):
        return float(value)
    if isinstance(value, Enumerated | Unsigned | Integer | int):
        return int(value)
    if isinstance(value, CharacterString | str):
        return str(value)
    if isinstance(value, Null) or value is None:
        return None
    if isinstance(value, BitString):
        return [int(bit) for bit in value]
    if isinstance(value, ObjectIdentifier):
        return f"{value[0]},{value[1]}"
    if isinstance(value, Atomic):
        return value.value if hasattr(value, "value") else str(value)
    return str(value)


def is_error(value: Any) -> bool:
    """True for a per-property error in a ReadPropertyMultiple answer."""
    return isinstance(value, ErrorType)


def error_text(value: Any) -> str:
    """'object: unknown-object' for a property error or an Error PDU."""
    error_class = getattr(value, "errorClass", None)
    error_code = getattr(value, "errorCode", None)
    if error_class is None and error_code is None:
        return str(value)
    return f"{_attr(error_class)}: {_attr(error_code)}"


def status_quality(status_flags: Any, reliability: Any) -> str | None:
    """DEVICE_EXCEPTION when the controller itself distrusts the value, else None.

    Status-flags FAULT or OUT_OF_SERVICE (the value is not the live reading), or a
    reliability other than no-fault-detected. A missing or unreadable flag says nothing.
    """
    if isinstance(status_flags, BitString | list) and not is_error(status_flags):
        bits = list(status_flags)
        if any(len(bits) > bit and bits[bit] for bit in (FAULT, OUT_OF_SERVICE)):
            return Quality.DEVICE_EXCEPTION
    if reliability is not None and not is_error(reliability):
        try:
            if int(reliability) != NO_FAULT_DETECTED:
                return Quality.DEVICE_EXCEPTION
        except (TypeError, ValueError):
            pass
    return None


def engineering_value(point: BacnetPoint, raw: Any) -> tuple[Any, str | None]:
    """(value, problem) for one point: scale and offset numbers, check min/max.

    Booleans, strings and enum points (multi-state codes) keep their value unscaled;
    a value outside min/max is (None, OUT_OF_RANGE).
    """
    value = python_value(raw)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value, None
    if point.enum is None and (point.scale != 1.0 or point.offset != 0.0):
        value = value * point.scale + point.offset
    if isinstance(value, float) and not math.isfinite(value):
        return None, Quality.DECODE_ERROR
    if (point.min is not None and value < point.min) or (point.max is not None and value > point.max):
        return None, Quality.OUT_OF_RANGE
    return value, None


def value_to_write(point: BacnetPoint, kind: str, value: Any) -> Any:
    """The BACnet value for writing `value` to `point`: unscaled, range-checked.

    Raises ValueError with a message for the operator when the value does not fit.
    """
    if point.property == "present-value" and kind in BINARY_KINDS:
        if isinstance(value, str) and value.lower() in ("active", "inactive"):
            return value.lower()
        if isinstance(value, bool | int) and int(value) in (0, 1):
            return "active" if value else "inactive"
        raise ValueError(f"{kind} present-value is active/inactive (true/false or 1/0), not {value!r}")
    if isinstance(value, str):
        if point.property == "present-value" and kind not in ("characterstring-value",):
            raise ValueError(f"{kind} present-value is a number, not {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a number, not {value!r}")
    if (point.min is not None and value < point.min) or (point.max is not None and value > point.max):
        raise ValueError(f"{value} is outside the point's range {_range(point)}")
    if kind in MULTISTATE_KINDS or point.enum is not None:
        if value != int(value) or value < 1:
            raise ValueError(f"{kind} states are whole numbers from 1, not {value}")
        if point.enum is not None and int(value) not in point.enum:
            known = ", ".join(f"{code} ({text})" for code, text in point.enum.items())
            raise ValueError(f"{int(value)} is not one of the point's states: {known}")
        return int(value)
    raw = (value - point.offset) / point.scale if point.scale else value
    return float(raw)


def same_value(written: Any, read_back: Any) -> bool:
    """Whether a read-back matches what was written (REAL is 32-bit: compare loosely)."""
    back = python_value(read_back)
    if isinstance(written, str) and written in ("active", "inactive"):
        return back == (written == "active")
    if isinstance(written, float) and isinstance(back, int | float) and not isinstance(back, bool):
        return math.isclose(written, back, rel_tol=1e-6, abs_tol=1e-6)
    return back == written


def _range(point: BacnetPoint) -> str:
    low = "-inf" if point.min is None else f"{point.min:g}"
    high = "+inf" if point.max is None else f"{point.max:g}"
    return f"[{low}, {high}]"


def _attr(value: Any) -> str:
    return str(value)  # bacpypes3 enumerations print hyphenated: unknown-object
