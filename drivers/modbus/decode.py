"""Codecs, compiled once per point at start-up: words or bits to a value, and back for writes.

Every data type a profile may name has one codec class here. The plan packs a request's
registers into a byte buffer once per poll and each codec reads its point straight from
that buffer (`from_buffer`), so decoding is one `unpack_from` plus a little arithmetic.

The four orders, for the bytes A B C D of a big-endian 32-bit value:

    ABCD  registers [AB, CD]   big-endian (the Modbus convention)
    CDAB  registers [CD, AB]   word swap: words low first, bytes in a word big-endian
    BADC  registers [BA, DC]   byte swap: words high first, bytes in a word swapped
    DCBA  registers [DC, BA]   little-endian

Packing the words in the "word" endianness and unpacking the buffer in the "value"
endianness covers all four: CDAB packs words little-endian and reads the buffer
little-endian; BADC packs words little-endian and reads it big-endian. For 64-bit types
CDAB reverses all four words; for 16-bit types CDAB is ABCD and BADC is DCBA.

Strings are a sequence of characters, not a number, so word order does not apply: the
first register always holds the first two characters. Only the byte swap matters:
ABCD and CDAB read "AB" from 0x4142, BADC and DCBA read "BA".
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from gateway.config.models import BIT_TABLES, ByteOrder, DataType, ModbusPoint

# type -> (struct code, registers, smallest raw, largest raw); floats are range-checked by struct
_NUMBERS: dict[str, tuple[str, int, float, float]] = {
    "int16": ("h", 1, -(2**15), 2**15 - 1),
    "uint16": ("H", 1, 0, 2**16 - 1),
    "int32": ("i", 2, -(2**31), 2**31 - 1),
    "uint32": ("I", 2, 0, 2**32 - 1),
    "int64": ("q", 4, -(2**63), 2**63 - 1),
    "uint64": ("Q", 4, 0, 2**64 - 1),
    "float32": ("f", 2, -3.4028234663852886e38, 3.4028234663852886e38),
    "float64": ("d", 4, -math.inf, math.inf),
}
# BCD: the raw word(s) of this unsigned type, read as decimal digits; raw range in digits
_BCD: dict[str, tuple[str, int]] = {"bcd16": ("uint16", 9999), "bcd32": ("uint32", 99_999_999)}

# order -> (endianness the registers are packed with, endianness the value is read with)
_ORDERS: dict[str, tuple[str, str]] = {
    "ABCD": (">", ">"),
    "CDAB": ("<", "<"),
    "BADC": ("<", ">"),
    "DCBA": (">", "<"),
}

DATA_TYPES: tuple[str, ...] = (*_NUMBERS, *_BCD, "bool", "string")
BYTE_ORDERS: tuple[str, ...] = tuple(_ORDERS)


class DecodeError(ValueError):
    """The registers hold no usable value: a NaN float, a bad BCD digit, undecodable text."""


def registers(data_type: str) -> int:
    """How many 16-bit registers a number, BCD or register bit occupies (strings: `length`)."""
    if data_type in _NUMBERS:
        return _NUMBERS[data_type][1]
    if data_type in _BCD:
        return _NUMBERS[_BCD[data_type][0]][1]
    if data_type == "bool":
        return 1
    raise ValueError(f"a {data_type} has no fixed size; its length: says how many registers")


def _decimals(number: float) -> int:
    """Decimal places of a scale or offset as written, e.g. 0.01 -> 2, 1e-05 -> 5."""
    exponent = Decimal(repr(number)).normalize().as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def allowed_range(low: float, high: float) -> str:
    """'0..50', '>= 0' or '<= 50': an engineering range as an error message shows it."""
    if low > -math.inf and high < math.inf:
        return f"{low:g}..{high:g}"
    return f">= {low:g}" if low > -math.inf else f"<= {high:g}"


class Codec:
    """What the plan and the driver need of every codec.

    `count` is the registers (or, in a coil/discrete table, bits) the point occupies;
    `words_little` says which packing of a request's registers `from_buffer` reads;
    `low`/`high` are the engineering range (`bounded` when either is set): a decoded value
    outside it is out of range, a value written outside it is refused.
    """

    __slots__ = ()
    data_type: str
    count: int
    words_little: bool
    bounded: bool
    low: float
    high: float

    def from_buffer(self, buffer: bytes, byte_offset: int) -> Any:
        """The value at `byte_offset` of a request's registers packed per `words_little`."""
        raise NotImplementedError

    def decode(self, words: Sequence[int]) -> Any:
        """The value of this point's own words (exactly `count` of them)."""
        raise NotImplementedError

    def encode(self, value: Any) -> list[int]:
        """Words (or, for a coil, one bit) to write; ValueError names what would be accepted."""
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class NumberCodec(Codec):
    """Integers and floats: struct formats for the order, then scale and offset."""

    data_type: str
    order: str
    scale: float
    offset: float
    count: int  # registers
    words_little: bool
    value: struct.Struct  # reads the raw number from the packed registers
    words: struct.Struct  # packs `count` registers in the word endianness
    is_float: bool
    identity: bool  # scale 1, offset 0: integers stay integers
    decimals: int  # decimal places of scale and offset: scaled values are rounded to them
    low: float = -math.inf
    high: float = math.inf
    bounded: bool = False

    def from_buffer(self, buffer: bytes, byte_offset: int) -> int | float:
        return self.convert(self.value.unpack_from(buffer, byte_offset)[0])

    def convert(self, raw: int | float) -> int | float:
        """Scale and offset a raw number; raise DecodeError for NaN or infinity."""
        if self.is_float:
            if not math.isfinite(raw):
                raise DecodeError(f"{self.data_type} register value is {raw!r}")
            if self.count == 4:  # float64 already prints as its shortest decimal
                value = raw if self.identity else raw * self.scale + self.offset
            else:  # float32: the decimal the device meant, not its binary noise
                raw, places = _shortest_float32(raw)
                value = raw if self.identity else round(raw * self.scale + self.offset, places + self.decimals)
            if not math.isfinite(value):
                raise DecodeError(f"{raw!r} scaled by {self.scale} is not finite")
            return value
        if self.identity:
            return raw
        return round(raw * self.scale + self.offset, self.decimals)

    def decode(self, words: Sequence[int]) -> int | float:
        return self.from_buffer(self.words.pack(*words), 0)

    def encode(self, value: Any) -> list[int]:
        """Register words for an engineering value: range-checked, scale and offset undone."""
        if isinstance(value, bool):
            value = int(value)
        if not isinstance(value, int | float) or (isinstance(value, float) and not math.isfinite(value)):
            raise ValueError(f"{value!r} is not a finite number")
        if self.bounded and not self.low <= value <= self.high:
            allowed = allowed_range(self.low, self.high)
            raise ValueError(f"{value!r} is outside the allowed range {allowed}")
        raw: int | float = (value - self.offset) / self.scale if not self.identity else value
        if not self.is_float and isinstance(raw, float):
            raw = round(raw)
        low, high = self.raw_range
        if not low <= raw <= high or (self.is_float and not math.isfinite(raw)):
            raise ValueError(
                f"{value!r} is out of range for {self.data_type}"
                + ("" if self.identity else f" with scale {self.scale} and offset {self.offset}")
                + f" (raw {raw!r}, allowed {low:g}..{high:g})"
            )
        return list(self.words.unpack(self.value.pack(self.to_raw(raw))))

    def to_raw(self, raw: int | float) -> int | float:
        """The number the registers hold for a raw value (BCD turns 1234 into 0x1234)."""
        return raw

    @property
    def raw_range(self) -> tuple[float, float]:
        """The smallest and largest raw number the type holds."""
        return _NUMBERS[self.data_type][2], _NUMBERS[self.data_type][3]


@dataclass(frozen=True, slots=True)
class BcdCodec(NumberCodec):
    """Binary-coded decimal: each nibble one digit, 0x1234 is 1234 (meters, old PLCs)."""

    def from_buffer(self, buffer: bytes, byte_offset: int) -> int | float:
        raw = self.value.unpack_from(buffer, byte_offset)[0]
        digits = f"{raw:x}"  # the hex digits of a valid BCD word are its decimal digits
        if not digits.isdigit():
            raise DecodeError(
                f"{self.data_type} register value 0x{raw:0{self.count * 4}X} has a nibble above 9"
            )
        return self.convert(int(digits))

    def to_raw(self, raw: int | float) -> int | float:
        return int(str(int(raw)), 16)

    @property
    def raw_range(self) -> tuple[float, float]:
        return 0, _BCD[self.data_type][1]


@dataclass(frozen=True, slots=True)
class RegisterBitCodec(Codec):
    """A bool from one bit of a register; bit 0 is the least significant, after byte order."""

    bit: int
    order: str
    words_little: bool
    value: struct.Struct  # reads the register as a uint16 in the value endianness
    data_type: str = "bool"
    count: int = 1
    low: float = -math.inf
    high: float = math.inf
    bounded: bool = False

    def from_buffer(self, buffer: bytes, byte_offset: int) -> bool:
        return (self.value.unpack_from(buffer, byte_offset)[0] >> self.bit) & 1 == 1

    def decode(self, words: Sequence[int]) -> bool:
        packed = _struct("<H" if self.words_little else ">H").pack(words[0])
        return self.from_buffer(packed, 0)

    def encode(self, value: Any) -> list[int]:
        raise ValueError(
            f"bit {self.bit} is one bit of a register; writing it alone would overwrite the "
            "other 15 bits: map the whole register as a uint16 point and write that"
        )


@dataclass(frozen=True, slots=True)
class StringCodec(Codec):
    """Text of `count` registers, two bytes each; cut at the first NUL, trailing spaces dropped."""

    count: int  # registers
    encoding: str
    order: str
    words_little: bool  # byte-swapped orders read each register's low byte first
    words: struct.Struct
    data_type: str = "string"
    low: float = -math.inf
    high: float = math.inf
    bounded: bool = False

    def from_buffer(self, buffer: bytes, byte_offset: int) -> str:
        raw = buffer[byte_offset : byte_offset + 2 * self.count]
        end = raw.find(0)
        if end >= 0:
            raw = raw[:end]
        try:
            return raw.rstrip(b" ").decode(self.encoding)
        except UnicodeDecodeError as exc:
            raise DecodeError(f"registers are not {self.encoding} text: {raw!r}") from exc

    def decode(self, words: Sequence[int]) -> str:
        return self.from_buffer(self.words.pack(*words), 0)

    def encode(self, value: Any) -> list[int]:
        """Words for a text, padded with NULs to `count` registers."""
        if not isinstance(value, str):
            raise ValueError(f"{value!r} is not text")
        try:
            raw = value.encode(self.encoding)
        except UnicodeEncodeError as exc:
            raise ValueError(
                f"{value!r} is not {self.encoding}; the point needs encoding: utf-8"
            ) from exc
        if len(raw) > 2 * self.count:
            raise ValueError(
                f"{value!r} is {len(raw)} bytes; the point holds {2 * self.count} bytes "
                f"({self.count} registers)"
            )
        return list(self.words.unpack(raw.ljust(2 * self.count, b"\x00")))


@dataclass(frozen=True, slots=True)
class CoilCodec(Codec):
    """One bit of the coil or discrete-input table; the plan reads it without a buffer."""

    table: str
    data_type: str = "bool"
    count: int = 1  # bits
    words_little: bool = False
    low: float = -math.inf
    high: float = math.inf
    bounded: bool = False

    def from_buffer(self, buffer: bytes, byte_offset: int) -> bool:
        raise TypeError("coil and discrete points come as bits, not registers")

    def decode(self, words: Sequence[int]) -> bool:
        return bool(words[0])

    def encode(self, value: Any) -> list[int]:
        """[True] or [False] for a coil write (function 5); 0 and 1 are accepted too."""
        if self.table != "coil":
            raise ValueError("discrete inputs are read-only in Modbus")
        if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
            return [bool(value)]
        raise ValueError(f"{value!r} is not a coil state; write true or false (1 or 0)")


def compile_codec(
    data_type: DataType | str,
    order: ByteOrder | str = "ABCD",
    scale: float = 1.0,
    offset: float = 0.0,
    *,
    table: str = "holding",
    bit: int | None = None,
    length: int | None = None,
    encoding: str = "ascii",
    minimum: float | None = None,
    maximum: float | None = None,
) -> Codec:
    """A codec for one point's type and order; raise ValueError for what cannot be read."""
    if order not in _ORDERS:
        raise ValueError(f"unknown byte order {order!r}; expected one of {', '.join(_ORDERS)}")
    numeric = data_type in _NUMBERS or data_type in _BCD
    if not numeric and (minimum is not None or maximum is not None):
        raise ValueError(f"min: and max: bound numbers; a {data_type} has no range")
    word_endian, value_endian = _ORDERS[order]
    if table in BIT_TABLES:
        if data_type != "bool":
            raise ValueError(f"{table} points are single bits: type bool")
        return CoilCodec(table)
    if data_type == "bool":
        if bit is None or not 0 <= bit <= 15:
            raise ValueError("a bool from a register needs bit: (0-15)")
        return RegisterBitCodec(bit, order, word_endian == "<", _struct(value_endian + "H"))
    if data_type == "string":
        if length is None or length < 1:
            raise ValueError("a string needs length: (in registers, two bytes each)")
        swapped = order in ("BADC", "DCBA")
        endian = "<" if swapped else ">"
        return StringCodec(length, encoding, order, swapped, _struct(f"{endian}{length}H"))
    if not numeric:
        expected = ", ".join(DATA_TYPES)
        raise ValueError(f"unknown data type {data_type!r}; expected one of {expected}")
    if scale == 0:
        raise ValueError("scale must not be 0")
    holder = _BCD[data_type][0] if data_type in _BCD else data_type
    code, count, _low, _high = _NUMBERS[holder]
    low = -math.inf if minimum is None else minimum
    high = math.inf if maximum is None else maximum
    if low > high:
        raise ValueError(f"min: {low:g} is above max: {high:g}")
    return (BcdCodec if data_type in _BCD else NumberCodec)(
        data_type=data_type,
        order=order,
        scale=scale,
        offset=offset,
        count=count,
        words_little=word_endian == "<",
        value=_struct(value_endian + code),
        words=_struct(f"{word_endian}{count}H"),
        is_float=code in "fd",
        identity=scale == 1 and offset == 0,
        decimals=max(_decimals(scale), _decimals(offset)),
        low=low,
        high=high,
        bounded=minimum is not None or maximum is not None,
    )


def codec_for(point: ModbusPoint, default_order: ByteOrder | str) -> Codec:
    """The codec of a profile point; the point's own order wins over `default_order`.

    Codecs are immutable and hold nothing of the point but how to read it, so points
    read alike share one: a site of 10,000 uint16 registers holds one codec, not 10,000.
    """
    order = point.order or default_order
    # repr keeps apart what == would merge: an offset of -0.0 is not one of 0.0 to a sum
    key = (point.type, order, repr(point.scale), repr(point.offset), point.table, point.bit,
           point.length, point.encoding, repr(point.min), repr(point.max))
    codec = _CODECS.get(key)
    if codec is None:
        codec = _CODECS[key] = compile_codec(
            point.type,
            order,
            point.scale,
            point.offset,
            table=point.table,
            bit=point.bit,
            length=point.length,
            encoding=point.encoding,
            minimum=point.min,
            maximum=point.max,
        )
    return codec


# (type, order, scale, offset, table, bit, length, encoding, min, max) -> its codec; as
# many entries as distinct ways of reading a point in the profiles, so it stays small
_CODECS: dict[tuple[object, ...], Codec] = {}


_FLOAT32 = struct.Struct("<f")


def _shortest_float32(raw: float) -> tuple[float, int]:
    """The shortest decimal that reads back as the same float32, and its decimal places.

    A float32 register holding 123.456 unpacks as 123.45600128173828; both are the same
    float32, and the short one is what the device's display shows.
    """
    packed = _FLOAT32.pack(raw)
    for digits in (6, 7, 8, 9):  # 9 significant digits always round-trip a float32
        candidate = float(f"{raw:.{digits}g}")
        if digits == 9 or _FLOAT32.pack(candidate) == packed:
            break
    if candidate == 0:
        return candidate, 0
    return candidate, max(0, digits - 1 - math.floor(math.log10(abs(candidate))))


_STRUCTS: dict[str, struct.Struct] = {}


def _struct(fmt: str) -> struct.Struct:
    """Share one Struct per format across all codecs."""
    compiled = _STRUCTS.get(fmt)
    if compiled is None:
        compiled = _STRUCTS[fmt] = struct.Struct(fmt)
    return compiled
