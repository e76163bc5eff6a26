"""A device's register image: the model's values laid out as the profile's map says.

Values are encoded with the gateway's own codecs (`codec_for`), so the gateway decodes
exactly what a real device of that map would send. The image holds all four tables:
words for holding and input registers (contiguous from the first point to the last, so
merged reads across unused registers succeed, as on most devices) and bits for coils
and discrete inputs. Several bool points may share one register: their bits are OR-ed.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from drivers.modbus.decode import Codec, codec_for
from gateway.config.models import BIT_TABLES, Profile

REGISTER_TABLES = ("holding", "input")


@dataclass(frozen=True, slots=True)
class ImagePoint:
    """One point's place in the image; `bit` is set for a bool from a register bit."""

    name: str
    table: str
    address: int
    count: int  # registers (bits in a coil/discrete table)
    codec: Codec
    bit: int | None
    writable: bool

    @property
    def end(self) -> int:
        return self.address + self.count


class RegisterImage:
    """The four tables of one simulated device, refreshed from its model's values."""

    def __init__(self, profile: Profile) -> None:
        self.points: list[ImagePoint] = []
        for name, point in profile.points.items():
            # a device sends what it measures; min/max are the gateway's check, not the device's
            unbounded = point.model_copy(update={"min": None, "max": None})
            codec = codec_for(unbounded, profile.order)
            self.points.append(
                ImagePoint(name, point.table, point.address, codec.count, codec, point.bit, point.writable)
            )
        self.words: dict[str, tuple[int, list[int]]] = {}  # table -> (first address, words)
        self.bits: dict[str, list[bool]] = {}  # table -> bits from address 0, whole registers
        for table in (*REGISTER_TABLES, *BIT_TABLES):
            in_table = [p for p in self.points if p.table == table]
            if not in_table:
                continue
            end = max(p.end for p in in_table)
            if table in BIT_TABLES:
                self.bits[table] = [False] * (-(-end // 16) * 16)
            else:
                start = min(p.address for p in in_table)
                self.words[table] = (start, [0] * (end - start))
        self._bit_registers = {(p.table, p.address) for p in self.points if p.bit is not None}

    def encode(self, values: dict[str, Any]) -> dict[str, Any]:
        """Write `values` into the tables; return what each point now reads as."""
        for table, address in self._bit_registers:
            self._set_word(table, address, 0)
        logical: dict[tuple[str, int], tuple[int, Codec]] = {}
        for point in self.points:
            value = values.get(point.name, 0)
            if point.table in BIT_TABLES:
                self.bits[point.table][point.address] = bool(value)
            elif point.bit is not None:
                key = (point.table, point.address)
                word = logical.get(key, (0, point.codec))[0]
                logical[key] = (word | (1 << point.bit) if value else word, point.codec)
            else:
                start, words = self.words[point.table]
                words[point.address - start : point.end - start] = encode_clamped(point.codec, value)
        for (table, address), (word, codec) in logical.items():
            self._set_word(table, address, _wire_word(codec, word))
        return {point.name: self.read(point) for point in self.points}

    def read(self, point: ImagePoint) -> Any:
        """The value the gateway decodes from the point's registers or bit."""
        if point.table in BIT_TABLES:
            return self.bits[point.table][point.address]
        start, words = self.words[point.table]
        return point.codec.decode(words[point.address - start : point.end - start])

    def covering(self, table: str, address: int, count: int) -> list[ImagePoint]:
        """The points a write of `count` registers or bits at `address` lands on."""
        end = address + count
        return [p for p in self.points if p.table == table and p.address < end and p.end > address]

    def _set_word(self, table: str, address: int, word: int) -> None:
        start, words = self.words[table]
        words[address - start] = word


_WORD = {False: struct.Struct(">H"), True: struct.Struct("<H")}


def _wire_word(codec: Codec, logical: int) -> int:
    """The register word whose bit n reads as bit n of `logical` once the byte order is
    applied (BADC and DCBA swap the bytes of a register)."""
    value_struct: struct.Struct = codec.value  # type: ignore[attr-defined]
    return _WORD[codec.words_little].unpack(value_struct.pack(logical))[0]


def encode_clamped(codec: Codec, value: Any) -> list[int]:
    """Registers for `value`, pinned to what the type holds rather than failing the tick."""
    if isinstance(value, str):
        raw = value.encode(getattr(codec, "encoding", "ascii"), errors="replace")[: 2 * codec.count]
        return codec.encode(raw.decode(getattr(codec, "encoding", "ascii"), errors="ignore"))
    try:
        return codec.encode(value)
    except ValueError:
        scale = getattr(codec, "scale", 1.0)
        offset = getattr(codec, "offset", 0.0)
        low, high = codec.raw_range  # type: ignore[attr-defined]
        raw = high if (value - offset) / scale > 0 else low
        return codec.encode(raw * scale + offset)
