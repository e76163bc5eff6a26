"""Compile a device's register map into read plans: the fewest requests, decoders ready.

Planning happens once at start-up; every poll then runs the same requests and decodes
their answers straight into one batch's values list. A device gets one plan per poll
group, since each group is polled on its own timer. Within a plan, points close together
in the same table share a request: a gap of unused registers is cheaper to read than
another round trip, up to the device's limits (125 registers or 2000 bits a request,
`max_gap`, ranges the device refuses to answer, one request per point).
"""

from __future__ import annotations

import dataclasses
import struct
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from drivers.base import DEFAULT_GROUP
from drivers.modbus.decode import Codec, DecodeError, RegisterBitCodec, codec_for
from gateway.batch import Quality
from gateway.config.models import BIT_TABLES, Device, ModbusPoint, Profile, ReadLimits

MAX_REGISTERS = 125  # the most a read holding/input registers request may ask for
BITS_PER_GAP_REGISTER = 16  # a gap of max_gap registers costs as many answer bytes as 16x bits
TABLES = ("holding", "input", "coil", "discrete")

# batch index -> why the point has no value: Quality.DECODE_ERROR or Quality.OUT_OF_RANGE
Problems = dict[int, str]


@dataclass(frozen=True, slots=True)
class PointRef:
    """Where one point lives and how to read or write it; `index` is its place in the batch."""

    name: str
    index: int
    table: str
    address: int
    codec: Codec
    writable: bool


@dataclass(frozen=True, slots=True)
class Request:
    """One read of holding or input registers and the points its answer holds.

    `reads` are (point index, offset in registers from `start`, codec) triples.
    """

    table: str
    start: int
    count: int
    reads: tuple[tuple[int, int, Codec], ...]
    big: struct.Struct | None  # packs the answer for codecs reading big-endian words
    little: struct.Struct | None  # ... and for those reading little-endian words

    unit = "registers"

    @property
    def end(self) -> int:
        """One past the last register read."""
        return self.start + self.count

    def decode_into(self, registers: Sequence[int], values: list[Any]) -> Problems | None:
        """Put this request's point values into `values`; return the points that are not good.

        `registers` must be exactly `count` words (the driver checks the answer's length).
        A point that does not decode or lies outside its min/max gets None in `values` and
        its quality in the returned {index: quality}; None means every point is good.
        """
        big = self.big.pack(*registers) if self.big is not None else b""
        little = self.little.pack(*registers) if self.little is not None else b""
        problems: Problems | None = None
        for index, offset, codec in self.reads:
            try:
                value = codec.from_buffer(little if codec.words_little else big, offset * 2)
            except DecodeError:
                value, quality = None, Quality.DECODE_ERROR
            else:
                if not codec.bounded or codec.low <= value <= codec.high:
                    values[index] = value
                    continue
                value, quality = None, Quality.OUT_OF_RANGE
            values[index] = value
            if problems is None:
                problems = {}
            problems[index] = quality
        return problems


@dataclass(frozen=True, slots=True)
class BitRequest:
    """One read of coils or discrete inputs; `reads` as in `Request`, offsets in bits."""

    table: str
    start: int
    count: int
    reads: tuple[tuple[int, int, Codec], ...]

    unit = "bits"

    @property
    def end(self) -> int:
        return self.start + self.count

    def decode_into(self, bits: Sequence[bool | int], values: list[Any]) -> Problems | None:
        """Put the bits into `values` as bools; a bit always decodes, so this returns None.

        `bits` may be longer than `count` (pymodbus pads the answer to whole bytes).
        """
        for index, offset, _codec in self.reads:
            values[index] = bool(bits[offset])
        return None


@dataclass(frozen=True, slots=True)
class ReadPlan:
    """One poll group of a device: the requests of one poll, and every point's place."""

    device: str
    points: tuple[str, ...]  # batch order (profile order)
    requests: tuple[Request | BitRequest, ...]
    refs: dict[str, PointRef]  # this plan's points only; indices are into its batch
    interval: float = 5.0  # seconds between polls
    group: str = DEFAULT_GROUP

    def describe(self) -> list[str]:
        """One line per request, e.g. `holding 0-20 (21 registers, 11 unused): a@0, b@1`."""
        lines = []
        for request in self.requests:
            used = set()
            for _index, offset, codec in request.reads:
                used.update(range(offset, offset + codec.count))
            unused = request.count - len(used)
            what = ", ".join(
                f"{self.points[i]}@{request.start + offset}"
                + (f".{codec.bit}" if isinstance(codec, RegisterBitCodec) else "")
                for i, offset, codec in request.reads
            )
            lines.append(
                f"{request.table} {_span(request.start, request.count)} "
                f"({_count(request.count, request.unit)}"
                + (f", {unused} unused" if unused else "")
                + f"): {what}"
            )
        return lines


def compile_plans(device: Device, profile: Profile) -> dict[str, ReadPlan]:
    """One plan per poll group that has points: "default" (every `poll_interval`) first,
    then the device's `poll_groups` in the order it lists them.

    Raises ValueError for a map the device cannot be polled with: a poll group the
    device does not define, a point in an avoided range or wider than a request.
    """
    groups = _groups(device, profile)
    intervals = {DEFAULT_GROUP: device.poll_interval, **device.poll_groups}
    limits = device.limits or profile.limits
    return {
        group: _plan(device, profile, names, limits, intervals[group], group)
        for group, names in groups.items()
        if names
    }


def shared_plans(device: Device, profile: Profile) -> dict[str, ReadPlan]:
    """What `compile_plans(device, profile)` returns, compiled once and shared by every
    device that polls alike.

    Devices of one profile with the same order, limits, poll interval and poll groups
    get the same requests, codecs and point places; only the device name differs. A
    thousand meters of one model then hold one plan, not a thousand, and start-up
    compiles it once. Plans are kept for as long as their profile object lives: a
    reloaded configuration's profiles get plans of their own.
    """
    key = _polling_key(device, profile)
    entry = _SHARED.get(id(profile))
    if entry is None or entry[0]() is not profile:
        pid = id(profile)
        entry = _SHARED[pid] = (weakref.ref(profile, lambda _ref: _SHARED.pop(pid, None)), {})
    by_key = entry[1]
    plans = by_key.get(key)
    if plans is None:
        plans = by_key[key] = compile_plans(device, profile)
        return plans
    return {group: dataclasses.replace(plan, device=device.id) for group, plan in plans.items()}


# id(profile) -> (the profile, weakly; its plans by polling key)
_SHARED: dict[int, tuple[weakref.ref[Profile], dict[tuple[object, ...], dict[str, ReadPlan]]]] = {}


def _polling_key(device: Device, profile: Profile) -> tuple[object, ...]:
    """Everything of a device that `compile_plans` reads but its name (the profile aside)."""
    limits = device.limits.model_dump_json() if device.limits is not None else None
    return (device.order, limits, device.poll_interval, tuple(device.poll_groups.items()))


def compile_plan(
    device: Device,
    profile: Profile,
    *,
    max_gap: int | None = None,
    max_registers: int | None = None,
) -> ReadPlan:
    """All of a device's points in one plan, whatever their poll group (for the CLI and
    drivers that poll everything at once); `max_gap` and `max_registers` override the
    device's or profile's limits."""
    _groups(device, profile)  # the same errors as compile_plans
    update: dict[str, int] = {}
    if max_gap is not None:
        if max_gap < 0:
            raise ValueError("max_gap must be 0 or more")
        update["max_gap"] = max_gap
    if max_registers is not None:
        if not 1 <= max_registers <= MAX_REGISTERS:
            raise ValueError(f"max_registers must be between 1 and {MAX_REGISTERS}")
        update["max_registers"] = max_registers
    limits = (device.limits or profile.limits).model_copy(update=update)
    return _plan(device, profile, list(profile.points), limits, device.poll_interval, DEFAULT_GROUP)


def describe_plans(plans: dict[str, ReadPlan]) -> list[str]:
    """A header per poll group and its request lines, for `gateway points --plan`."""
    lines = []
    for group, plan in plans.items():
        lines.append(
            f"{group} every {plan.interval:g}s: {_count(len(plan.points), 'points')} in "
            f"{_count(len(plan.requests), 'requests')}"
        )
        lines.extend(f"  {line}" for line in plan.describe())
    return lines


def _groups(device: Device, profile: Profile) -> dict[str, list[str]]:
    """Point names by poll group, checked against the groups the device defines."""
    if DEFAULT_GROUP in device.poll_groups:
        raise ValueError(
            f"device {device.id}: poll_groups may not define {DEFAULT_GROUP!r}; it is the group "
            "of points without poll_group:, polled every poll_interval:"
        )
    groups: dict[str, list[str]] = {DEFAULT_GROUP: [], **{g: [] for g in device.poll_groups}}
    for name, point in profile.points.items():
        group = point.poll_group or DEFAULT_GROUP
        if group not in groups:
            defined = ", ".join(device.poll_groups) or "none"
            raise ValueError(
                f"profile {profile.id}: point {name} has poll_group: {group}, but device "
                f"{device.id} does not define it (its poll_groups: {defined}); add "
                f"`poll_groups: {{{group}: 60s}}` to the device or drop poll_group: from the point"
            )
        groups[group].append(name)
    return groups


def _plan(
    device: Device,
    profile: Profile,
    names: list[str],
    limits: ReadLimits,
    interval: float,
    group: str,
) -> ReadPlan:
    order = device.order or profile.order
    refs: dict[str, PointRef] = {}
    for index, name in enumerate(names):
        point = profile.points[name]
        try:
            codec = codec_for(point, order)
        except ValueError as exc:
            raise ValueError(f"profile {profile.id}: point {name}: {exc}") from exc
        _check_fits(device, profile, name, point, codec, limits)
        refs[name] = PointRef(name, index, point.table, point.address, codec, point.writable)
    requests: list[Request | BitRequest] = []
    for table in TABLES:
        in_table = sorted(
            (ref for ref in refs.values() if ref.table == table),
            key=lambda ref: (ref.address, -ref.codec.count, ref.index),
        )
        avoid = [(a.start, a.end) for a in limits.avoid if a.table == table]
        for members in _merge(in_table, table in BIT_TABLES, limits, avoid):
            requests.append(_request(table, members))
    return ReadPlan(device.id, tuple(refs), tuple(requests), refs, interval, group)


def _check_fits(
    device: Device,
    profile: Profile,
    name: str,
    point: ModbusPoint,
    codec: Codec,
    limits: ReadLimits,
) -> None:
    """A point must lie inside the table, outside avoided ranges and within one request."""
    bits = point.table in BIT_TABLES
    what = f"profile {profile.id}: point {name} ({point.table} {_span(point.address, codec.count)})"
    if point.address + codec.count > 65536:
        raise ValueError(f"{what} runs past address 65535")
    largest = limits.max_bits if bits else limits.max_registers
    if codec.count > largest:
        raise ValueError(
            f"{what} needs {codec.count} registers, but device {device.id} reads at most "
            f"{largest} per request (limits: max_registers)"
        )
    for avoided in limits.avoid:
        overlaps = avoided.start < point.address + codec.count and point.address <= avoided.end
        if avoided.table == point.table and overlaps:
            raise ValueError(
                f"{what} lies in the avoided range {avoided.table} "
                f"{_span(avoided.start, avoided.end - avoided.start + 1)} of device {device.id}'s "
                "limits; the device refuses reads there: remove the point or narrow limits: avoid:"
            )


def _span(start: int, count: int) -> str:
    return str(start) if count == 1 else f"{start}-{start + count - 1}"


def _count(number: int, plural: str) -> str:
    return f"{number} {plural[:-1] if number == 1 else plural}"


def _merge(
    refs: list[PointRef], bits: bool, limits: ReadLimits, avoid: list[tuple[int, int]]
) -> Iterable[list[PointRef]]:
    """Greedy left-to-right merge over points sorted by address.

    Extending the current request as far as the limits allow is optimal: every limit holds
    for any part of a request that satisfies it, so any plan's first request can be
    stretched to the greedy one without adding requests. Points at the same span (bits of
    one register) always share, even with one_request_per_point.
    """
    largest = limits.max_bits if bits else limits.max_registers
    max_gap = limits.max_gap * BITS_PER_GAP_REGISTER if bits else limits.max_gap
    group: list[PointRef] = []
    start = end = 0
    for ref in refs:
        ref_end = ref.address + ref.codec.count
        if group and (
            (ref.address, ref_end) == (start, end)
            if limits.one_request_per_point
            else (
                ref.address - end <= max_gap
                and max(end, ref_end) - start <= largest
                and not any(low < ref.address and high >= end for low, high in avoid)
            )
        ):
            group.append(ref)
            end = max(end, ref_end)
            continue
        if group:
            yield group
        group, start, end = [ref], ref.address, ref_end
    if group:
        yield group


def _request(table: str, group: list[PointRef]) -> Request | BitRequest:
    start = group[0].address
    count = max(ref.address + ref.codec.count for ref in group) - start
    reads = tuple((ref.index, ref.address - start, ref.codec) for ref in group)
    if table in BIT_TABLES:
        return BitRequest(table, start, count, reads)
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
