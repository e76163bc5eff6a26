"""Compile a device's register map into a read plan: the fewest requests, decoders ready.

Planning happens once at start-up; every poll then runs the same requests and decodes
their answers straight into one batch's values list. Points close together in the same
table share a request: a gap of up to `max_gap` unused registers is cheaper to read than
another round trip, and a request never exceeds the 125 registers Modbus allows.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from drivers.modbus.decode import Codec, DecodeError, codec_for
from gateway.config.models import Device, Profile

MAX_REGISTERS = 125  # the most a read holding/input registers request may ask for
DEFAULT_MAX_GAP = 16
TABLES = ("holding", "input")


@dataclass(frozen=True, slots=True)
class PointRef:
    """Where one point lives and how to read or write it."""

    name: str
    index: int  # position in the batch
    table: str
    address: int
    codec: Codec
    writable: bool


@dataclass(frozen=True, slots=True)
class Request:
    """One read request and the points its answer holds.

    `reads` are (point index, offset in registers from `start`, codec) triples.
    """

    table: str
    start: int
    count: int
    reads: tuple[tuple[int, int, Codec], ...]
    big: struct.Struct | None  # packs the answer for codecs reading big-endian words
    little: struct.Struct | None  # ... and for those reading little-endian words

    @property
    def end(self) -> int:
        """One past the last register read."""
        return self.start + self.count

    def decode_into(self, registers: Sequence[int], values: list[Any]) -> list[int] | None:
        """Put this request's point values into `values`; return the indices that did not decode.

        `registers` must be exactly `count` words (the driver checks the answer's length).
        """
        big = self.big.pack(*registers) if self.big is not None else b""
        little = self.little.pack(*registers) if self.little is not None else b""
        failed: list[int] | None = None
        for index, offset, codec in self.reads:
            try:
                values[index] = codec.from_buffer(little if codec.words_little else big, offset * 2)
            except DecodeError:
                values[index] = None
                if failed is None:
                    failed = []
                failed.append(index)
        return failed


@dataclass(frozen=True, slots=True)
class ReadPlan:
    """A device's compiled register map: the requests of one poll, and every point's place."""

    device: str
    points: tuple[str, ...]  # batch order
    requests: tuple[Request, ...]
    refs: dict[str, PointRef]

    def describe(self) -> list[str]:
        """One human-readable line per request, e.g. for `gateway points --plan`."""
        lines = []
        names = self.points
        for request in self.requests:
            used = set()
            for _index, offset, codec in request.reads:
                used.update(range(offset, offset + codec.count))
            unused = request.count - len(used)
            last = request.end - 1
            what = ", ".join(f"{names[i]}@{request.start + off}" for i, off, _c in request.reads)
            lines.append(
                f"{request.table} {request.start}-{last} ({request.count} registers"
                + (f", {unused} unused" if unused else "")
                + f"): {what}"
            )
        return lines


def compile_plan(
    device: Device,
    profile: Profile,
    *,
    max_gap: int = DEFAULT_MAX_GAP,
    max_registers: int = MAX_REGISTERS,
) -> ReadPlan:
    """Plan the reads of one device; raise ValueError when a point cannot be planned."""
    if max_gap < 0:
        raise ValueError("max_gap must be 0 or more")
    if not 1 <= max_registers <= MAX_REGISTERS:
        raise ValueError(f"max_registers must be between 1 and {MAX_REGISTERS}")
    refs: dict[str, PointRef] = {}
    for index, (name, point) in enumerate(profile.points.items()):
        codec = codec_for(point, profile.order)
        if point.address + codec.count > 65536:
            raise ValueError(
                f"profile {profile.id}: point {name} at {point.table} {point.address} "
                f"runs past register 65535 ({point.type} needs {codec.count} registers)"
            )
        refs[name] = PointRef(name, index, point.table, point.address, codec, point.writable)
    requests: list[Request] = []
    for table in TABLES:
        in_table = sorted(
            (ref for ref in refs.values() if ref.table == table),
            key=lambda ref: (ref.address, -ref.codec.count, ref.index),
        )
        requests.extend(_merge(table, in_table, max_gap, max_registers))
    return ReadPlan(device.id, tuple(refs), tuple(requests), refs)


def _merge(table: str, refs: list[PointRef], max_gap: int, max_registers: int) -> list[Request]:
    """Greedy left-to-right merge over points sorted by address.

    Extending the current request as far as the gap and size limits allow is optimal:
    any plan's first request can be stretched to the greedy one without adding requests.
    """
    groups: list[list[PointRef]] = []
    start = end = 0
    for ref in refs:
        ref_end = ref.address + ref.codec.count
        if groups and ref.address - end <= max_gap and max(end, ref_end) - start <= max_registers:
            groups[-1].append(ref)
            end = max(end, ref_end)
        else:
            groups.append([ref])
            start, end = ref.address, ref_end
    return [_request(table, group) for group in groups]


def _request(table: str, group: list[PointRef]) -> Request:
    start = group[0].address
    count = max(ref.address + ref.codec.count for ref in group) - start
    reads = tuple((ref.index, ref.address - start, ref.codec) for ref in group)
    needs_little = any(ref.codec.words_little for ref in group)
    needs_big = not all(ref.codec.words_little for ref in group)
    return Request(
        table=table,
        start=start,
        count=count,
        reads=reads,
        big=struct.Struct(f">{count}H") if needs_big else None,
        little=struct.Struct(f"<{count}H") if needs_little else None,
    )
