"""Payload decoding: each point's JSON path, value map and conversion compiled once at start-up.

A message's payload is parsed at most once, however many points it carries (`Message`);
each point then takes its value from the parsed document, or from the whole payload when
it has no path. Failures are `PayloadError`s with a reason the driver counts; a value
outside min/max is `OutOfRange`, which is a quality, not a malformed payload.

Values keep one type per point on purpose: a `number` is always a float, an `integer`
always an int, because InfluxDB refuses a field that was an integer yesterday and a float
today (a device that sends 21 and then 21.5).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from jsonpath_ng import JSONPath
from jsonpath_ng import parse as parse_path

from gateway.config.models import MqttPoint

# Reasons a payload or one of its points is malformed; the driver counts by these.
OVERSIZED = "oversized"
BAD_JSON = "bad_json"
MISSING_PATH = "missing_path"
WRONG_TYPE = "wrong_type"
UNMAPPED = "unmapped"
BAD_TIMESTAMP = "bad_timestamp"

_TRUE = frozenset({"true", "1", "on", "yes"})
_FALSE = frozenset({"false", "0", "off", "no"})
_MS_FROM = 1e11  # epoch numbers above this are milliseconds (1e11 s is the year 5138)
_US_FROM = 1e14  # and above this microseconds
_SHOWN = 60  # characters of a bad value a log line shows
_UNPARSED = object()


class PayloadError(ValueError):
    """A payload, or one point's value in it, that cannot be decoded; `reason` is counted."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class OutOfRange(ValueError):
    """A decoded value outside the point's min/max (the device sent it; the value is not used)."""


def mask(value: Any) -> str:
    """A sensitive value (a card id) as logs show it: at most its last four characters."""
    text = str(value)
    return "****" + text[-4:] if len(text) >= 8 else "****"


class Message:
    """One payload, decoded lazily and at most once: as text, and as a JSON document."""

    __slots__ = ("raw", "_text", "_document", "_error")

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self._text: str | None = None
        self._document: Any = _UNPARSED
        self._error: PayloadError | None = None

    def text(self) -> str:
        """The payload as UTF-8 text without surrounding white space."""
        if self._text is None:
            try:
                self._text = self.raw.decode("utf-8").strip()
            except UnicodeDecodeError as exc:
                raise PayloadError(WRONG_TYPE, f"payload is not UTF-8 text ({exc.reason})") from None
        return self._text

    def document(self) -> Any:
        """The payload parsed as JSON; the same PayloadError for every point when it is not."""
        if self._error is not None:
            raise self._error
        if self._document is _UNPARSED:
            try:
                self._document = json.loads(self.raw)
            except (ValueError, UnicodeDecodeError, RecursionError) as exc:
                self._error = PayloadError(BAD_JSON, f"payload is not JSON ({exc})")
                raise self._error from None
        return self._document


@dataclass(frozen=True, slots=True)
class PointDecoder:
    """One point compiled: where its value is in a payload and how it becomes a value."""

    name: str
    kind: str  # number, integer, bool or text
    path: JSONPath | None  # None: the whole payload is the value
    path_text: str | None
    convert: Callable[[Any], Any]  # raw -> value of the point's type; PayloadError(WRONG_TYPE)
    value_map: dict[str, Any] | None  # payload text -> value, converted at compile time
    scale: float
    offset: float
    low: float
    high: float
    sensitive: bool
    numeric: bool  # number or integer: scale, offset and min/max apply

    def decode(self, message: Message) -> Any:
        """This point's value in `message`; PayloadError when it cannot be had, OutOfRange
        when the device sent a value outside min/max."""
        raw = message.text() if self.path is None else self._find(message.document())
        if self.value_map is not None:
            key = map_key(raw)
            if key not in self.value_map:
                known = ", ".join(self.value_map)
                raise PayloadError(UNMAPPED, f"{self.shown(key)} is not in the point's map ({known})")
            value = self.value_map[key]
        else:
            try:
                value = self.convert(raw)
            except PayloadError as exc:
                if self.sensitive:  # the converter's message quotes the value
                    raise PayloadError(exc.reason, f"{mask(raw)} is not a {self.kind}") from None
                raise
            if self.numeric and (self.scale != 1.0 or self.offset != 0.0):
                value = _scaled(value, self.scale, self.offset)
        if self.numeric and not self.low <= value <= self.high:
            raise OutOfRange(f"{self.shown(value)} is outside {_range(self.low, self.high)}")
        return value

    def _find(self, document: Any) -> Any:
        assert self.path is not None
        try:
            found = self.path.find(document)
        except (TypeError, AttributeError, KeyError, IndexError):  # jsonpath-ng on odd shapes
            found = []
        if not found:
            raise PayloadError(MISSING_PATH, f"no {self.path_text} in the payload")
        return found[0].value  # a path matching several values takes the first

    def shown(self, value: Any) -> str:
        """A value as a log line may show it: masked for sensitive points, cut short otherwise."""
        if self.sensitive:
            return mask(value)
        text = repr(value)
        return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def compile_path(path: str, what: str) -> JSONPath:
    """A JSON path compiled once; ValueError naming `what` when it does not parse."""
    try:
        return parse_path(path)
    except Exception as exc:  # jsonpath-ng's lexer and parser raise several types
        raise ValueError(f"{what}: {path!r} is not a JSON path ({exc})") from None


def compile_point(name: str, point: MqttPoint, what: str | None = None) -> PointDecoder:
    """The decoder for one profile point; ValueError for a path or map that cannot work."""
    what = what or f"point {name}"
    convert = _CONVERTERS[point.type]
    value_map = None
    if point.map is not None:
        value_map = {}
        for key, target in point.map.items():
            try:
                value_map[key] = convert(target)
            except PayloadError as exc:
                raise ValueError(
                    f"{what}: map value {target!r} for {key!r} is not a {point.type} ({exc.detail})"
                ) from None
    numeric = point.type in ("number", "integer")
    return PointDecoder(
        name=name,
        kind=point.type,
        path=compile_path(point.path, what) if point.path is not None else None,
        path_text=point.path,
        convert=convert,
        value_map=value_map,
        scale=point.scale,
        offset=point.offset,
        low=-math.inf if point.min is None else point.min,
        high=math.inf if point.max is None else point.max,
        sensitive=point.sensitive,
        numeric=numeric,
    )


def map_key(raw: Any) -> str:
    """The text a value map looks a payload value up by: JSON true is "true", 1.0 is "1"."""
    if isinstance(raw, str):
        return raw
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, float) and raw.is_integer():
        return str(int(raw))
    return str(raw) if isinstance(raw, int | float) else json.dumps(raw, ensure_ascii=False)


# --- conversions: raw JSON value or payload text -> the point's type ----------------


def to_number(raw: Any) -> float:
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        value = float(raw)
    elif isinstance(raw, str):
        try:
            value = float(raw)
        except ValueError:
            raise PayloadError(WRONG_TYPE, f"expected a number, got {_short(raw)}") from None
    else:
        raise PayloadError(WRONG_TYPE, f"expected a number, got {_kind(raw)}")
    if not math.isfinite(value):
        raise PayloadError(WRONG_TYPE, f"expected a finite number, got {_short(raw)}")
    return value


def to_integer(raw: Any) -> int:
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if isinstance(raw, str):
        try:
            return int(raw)
        except ValueError:
            pass
    value = to_number(raw)
    if not value.is_integer():
        raise PayloadError(WRONG_TYPE, f"expected a whole number, got {_short(raw)}")
    return int(value)


def to_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, int | float) and raw in (0, 1):
        return bool(raw)
    if isinstance(raw, str):
        word = raw.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    raise PayloadError(WRONG_TYPE, f"expected true/false, 1/0 or on/off, got {_short(raw)}")


def to_text(raw: Any) -> str:
    if isinstance(raw, str):
        return raw
    if isinstance(raw, bool | int | float):
        return map_key(raw)
    raise PayloadError(WRONG_TYPE, f"expected text, got {_kind(raw)}")


_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "number": to_number, "integer": to_integer, "bool": to_bool, "text": to_text,
}


def _scaled(value: float | int, scale: float, offset: float) -> float | int:
    # 12 significant digits drop binary noise (0.1 * 3) without cutting a device's decimals
    try:
        result = float(f"{value * scale + offset:.12g}")
    except OverflowError:  # a whole number too big for a float (1e400 written out)
        raise PayloadError(WRONG_TYPE, f"{_short(value)} is too large to scale") from None
    if not math.isfinite(result):
        raise PayloadError(WRONG_TYPE, f"{_short(value)} is too large to scale")
    return round(result) if isinstance(value, int) else result


def _short(raw: Any) -> str:
    text = repr(raw)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def _kind(raw: Any) -> str:
    return {dict: "an object", list: "a list", type(None): "null", bool: "true/false"}.get(
        type(raw), type(raw).__name__
    )


def _range(low: float, high: float) -> str:
    if low > -math.inf and high < math.inf:
        return f"{low:g}..{high:g}"
    return f">= {low:g}" if low > -math.inf else f"<= {high:g}"


# --- timestamps ---------------------------------------------------------------------


class Timestamp:
    """Where a device puts its own time: a JSON path compiled once, or nothing (arrival time)."""

    __slots__ = ("path", "path_text")

    def __init__(self, path: str | None, what: str = "timestamp_path") -> None:
        self.path_text = path
        self.path = compile_path(path, what) if path is not None else None

    def of(self, message: Message) -> float | None:
        """Epoch seconds from the message, or None when it carries none (arrival time then).

        A payload that is not JSON or has no value at the path carries none; a value that
        is there but is not a time raises PayloadError(BAD_TIMESTAMP).
        """
        if self.path is None:
            return None
        try:
            document = message.document()
        except PayloadError:
            return None
        try:
            found = self.path.find(document)
        except (TypeError, AttributeError, KeyError, IndexError):
            found = []
        if not found:
            return None
        return parse_timestamp(found[0].value)


def parse_timestamp(raw: Any) -> float:
    """Epoch seconds from ISO 8601 text or an epoch number in seconds, ms or µs.

    ISO text without a UTC offset is taken as the gateway's local time, which on site is
    the devices' time too.
    """
    if isinstance(raw, str):
        text = raw.strip()
        try:
            return _epoch(float(text))
        except ValueError:
            pass
        try:
            return _plausible(datetime.fromisoformat(text).timestamp())
        except (ValueError, OverflowError, OSError):
            raise PayloadError(BAD_TIMESTAMP, f"{_short(raw)} is not ISO 8601 or epoch time") from None
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        return _epoch(float(raw))
    raise PayloadError(BAD_TIMESTAMP, f"expected a time, got {_kind(raw)}")


EARLIEST = 946_684_800.0  # 2000-01-01: a device clock before this was never set
LATEST_AHEAD = 86_400.0  # a device clock more than a day fast is wrong, not early


def _epoch(number: float) -> float:
    if not math.isfinite(number) or number <= 0:
        raise PayloadError(BAD_TIMESTAMP, f"{number!r} is not an epoch time")
    if number >= _US_FROM:
        number /= 1e6
    elif number >= _MS_FROM:
        number /= 1e3
    return _plausible(number)


def _plausible(epoch: float) -> float:
    """A device time a sink can store: one absurd clock must never stall delivery."""
    if not EARLIEST <= epoch <= time.time() + LATEST_AHEAD:
        raise PayloadError(BAD_TIMESTAMP, f"{epoch!r} s is not a plausible time (2000 .. now + 1 day)")
    return epoch
