"""Register codecs, compiled once per point at start-up.

A codec turns the register words of one point into its engineering value (and back,
for writes). Byte and word order are folded into two precompiled `struct.Struct`s, so
decoding at poll time is one `unpack_from` on a buffer packed once per request, then
scale and offset.

The four orders, for the bytes A B C D of a big-endian 32-bit value:

    ABCD  registers [AB, CD]   big-endian (the Modbus convention)
    CDAB  registers [CD, AB]   word swap: words low first, bytes in a word big-endian
    BADC  registers [BA, DC]   byte swap: words high first, bytes in a word swapped
    DCBA  registers [DC, BA]   little-endian

Packing the words in the "word" endianness and unpacking the buffer in the "value"
endianness covers all four: CDAB packs words little-endian and reads the buffer
little-endian; BADC packs words little-endian and reads it big-endian. For 64-bit types
CDAB reverses all four words; for 16-bit types CDAB is ABCD and BADC is DCBA.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from gateway.config.models import ByteOrder, DataType, ModbusPoint

# type -> (struct code, registers, smallest raw, largest raw); floats are range-checked by struct
_TYPES: dict[str, tuple[str, int, float, float]] = {
    "int16": ("h", 1, -(2**15), 2**15 - 1),
    "uint16": ("H", 1, 0, 2**16 - 1),
    "int32": ("i", 2, -(2**31), 2**31 - 1),
    "uint32": ("I", 2, 0, 2**32 - 1),
    "int64": ("q", 4, -(2**63), 2**63 - 1),
    "uint64": ("Q", 4, 0, 2**64 - 1),
    "float32": ("f", 2, -3.4028234663852886e38, 3.4028234663852886e38),
    "float64": ("d", 4, -math.inf, math.inf),
}

# order -> (endianness the registers are packed with, endianness the value is read with)
_ORDERS: dict[str, tuple[str, str]] = {
    "ABCD": (">", ">"),
    "CDAB": ("<", "<"),
    "BADC": ("<", ">"),
    "DCBA": (">", "<"),
}

DATA_TYPES: tuple[str, ...] = tuple(_TYPES)
BYTE_ORDERS: tuple[str, ...] = tuple(_ORDERS)


class DecodeError(ValueError):
    """The registers hold no usable value (a NaN or infinite float)."""


def registers(data_type: str) -> int:
    """How many 16-bit registers a value of `data_type` occupies."""
    return _TYPES[data_type][1]


def _decimals(number: float) -> int:
    """Decimal places of a scale or offset as written, e.g. 0.01 -> 2, 1e-05 -> 5."""
    exponent = Decimal(repr(number)).normalize().as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


@dataclass(frozen=True, slots=True)
class Codec:
    """How one point's registers become a value and a value becomes registers.

    `words_little` says which packing of the request's registers `value` reads from;
    the plan packs each request once per packing its points need.
    """

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

    def from_buffer(self, buffer: bytes, byte_offset: int) -> int | float:
        """The engineering value at `byte_offset` of registers packed per `words_little`."""
        raw = self.value.unpack_from(buffer, byte_offset)[0]
        return self.convert(raw)

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
        """The engineering value of this point's register words (exactly `count` of them)."""
        return self.from_buffer(self.words.pack(*words), 0)

    def encode(self, value: Any) -> list[int]:
        """Register words for an engineering value: scale and offset undone, range-checked.

        Raises ValueError when the value is not a number or does not fit the type.
        """
        if isinstance(value, bool):
            value = int(value)
        if not isinstance(value, int | float) or (isinstance(value, float) and not math.isfinite(value)):
            raise ValueError(f"{value!r} is not a finite number")
        raw: int | float = (value - self.offset) / self.scale if not self.identity else value
        _code, _count, low, high = _TYPES[self.data_type]
        if not self.is_float and isinstance(raw, float):
            raw = round(raw)
        if not low <= raw <= high or (self.is_float and not math.isfinite(raw)):
            raise ValueError(
                f"{value!r} is out of range for {self.data_type}"
                + ("" if self.identity else f" with scale {self.scale} and offset {self.offset}")
                + f" (raw {raw!r}, allowed {low:g}..{high:g})"
            )
        packed = self.value.pack(raw)
        return list(self.words.unpack(packed))

    @property
    def raw_range(self) -> tuple[float, float]:
        """The smallest and largest raw number the type holds."""
        return _TYPES[self.data_type][2], _TYPES[self.data_type][3]


def compile_codec(
    data_type: DataType | str,
    order: ByteOrder | str = "ABCD",
    scale: float = 1.0,
    offset: float = 0.0,
) -> Codec:
    """A codec for one (type, order, scale, offset); raise ValueError for unknown names."""
    if data_type not in _TYPES:
        raise ValueError(f"unknown data type {data_type!r}; expected one of {', '.join(_TYPES)}")
    if order not in _ORDERS:
        raise ValueError(f"unknown byte order {order!r}; expected one of {', '.join(_ORDERS)}")
    if scale == 0:
        raise ValueError("scale must not be 0")
    code, count, _low, _high = _TYPES[data_type]
    word_endian, value_endian = _ORDERS[order]
    is_float = code in "fd"
    identity = scale == 1 and offset == 0
    return Codec(
        data_type=data_type,
        order=order,
        scale=scale,
        offset=offset,
        count=count,
        words_little=word_endian == "<",
        value=_struct(value_endian + code),
        words=_struct(f"{word_endian}{count}H"),
        is_float=is_float,
        identity=identity,
        decimals=max(_decimals(scale), _decimals(offset)),
    )


def codec_for(point: ModbusPoint, default_order: ByteOrder | str) -> Codec:
    """The codec of a profile point; the point's own order wins over the profile's."""
    return compile_codec(point.type, point.order or default_order, point.scale, point.offset)


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
