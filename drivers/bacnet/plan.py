"""Compile a BACnet device's points into read plans, and pack their reads into requests.

Planning happens once at start-up: every poll group gets the list of distinct
(object, property, index) reads its points need, plus status-flags and reliability of
each object whose present-value is read, since those say whether the value is trusted.
At poll time `pack()` cuts that list into ReadPropertyMultiple requests whose answers
fit the device's APDU budget, estimated from the encoded size of each property.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bacpypes3.basetypes import PropertyIdentifier, PropertyReference
from bacpypes3.primitivedata import ObjectIdentifier

from gateway.config.models import BacnetPoint, Device, Profile, parse_object_id

DEFAULT_GROUP = "default"
COMPLEX_ACK_HEADER = 3  # PDU type, invoke id, service choice
OBJECT_OVERHEAD = 7  # object identifier (5) and the list's opening and closing tags
PROPERTY_OVERHEAD = 4  # property identifier tag (2) and the result's opening/closing tags
INDEX_OVERHEAD = 3
ERROR_SIZE = 6  # an error in place of a value: class and code
MIN_BUDGET = 50  # the smallest APDU BACnet allows
# encoded value sizes worth knowing; anything else is guessed generously
_VALUE_SIZE = {
    "status-flags": 3, "reliability": 2, "out-of-service": 1, "event-state": 2,
    "units": 3, "cov-increment": 5, "relinquish-default": 5, "priority-array": 16 * 5 + 2,
    "object-name": 40, "description": 64, "state-text": 160,
}
_PRESENT_VALUE_SIZE = {"analog": 5, "binary": 2, "multi-state": 5, "characterstring": 64}

Key = tuple[str, str, int | None]  # (object id text, property, array index)


@dataclass(frozen=True, slots=True)
class PropertyRead:
    """One property of one object as a request asks for it; `size` is its answer's guess."""

    key: Key
    object_id: ObjectIdentifier
    reference: PropertyReference
    size: int


@dataclass(frozen=True, slots=True)
class PointRead:
    """Where a point's value comes from; `status` names its object's flags when it has them."""

    name: str
    index: int
    point: BacnetPoint
    kind: str  # object type, e.g. analog-input
    key: Key
    status: tuple[Key, Key] | None  # (status-flags, reliability) of its object


@dataclass(frozen=True, slots=True)
class ReadPlan:
    """One poll group: its interval, points (batch order) and the distinct reads they need."""

    group: str
    interval: float
    points: tuple[str, ...]
    point_reads: tuple[PointRead, ...]
    reads: tuple[PropertyRead, ...]


def object_text(point: BacnetPoint) -> str:
    kind, instance = parse_object_id(point.object)
    return f"{kind},{instance}"


def property_read(object_id: str, prop: str, index: int | None = None) -> PropertyRead:
    """A read of `prop` of `object_id` ('analog-input,1'), with its size estimate."""
    reference = PropertyReference(propertyIdentifier=PropertyIdentifier(prop))
    if index is not None:
        reference.propertyArrayIndex = index
    return PropertyRead((object_id, prop, index), ObjectIdentifier(object_id), reference,
                        estimate_size(object_id, prop, index))


def estimate_size(object_id: str, prop: str, index: int | None) -> int:
    """Bytes this property adds to a ReadPropertyMultiple answer (value or error)."""
    if prop == "present-value":
        family = object_id.split(",")[0].rsplit("-", 1)[0]
        value = _PRESENT_VALUE_SIZE.get(family, 8)
    elif prop == "priority-array" and index is not None:
        value = 5
    else:
        value = _VALUE_SIZE.get(prop, 16)
    return PROPERTY_OVERHEAD + (INDEX_OVERHEAD if index is not None else 0) + max(value, ERROR_SIZE)


def compile_plans(device: Device, profile: Profile) -> dict[str, ReadPlan]:
    """One plan per poll group, points in profile order within each."""
    members: dict[str, list[tuple[str, BacnetPoint]]] = {}
    for name, point in profile.points.items():
        if isinstance(point, BacnetPoint):
            members.setdefault(point.poll_group or DEFAULT_GROUP, []).append((name, point))
    plans: dict[str, ReadPlan] = {}
    for group, named in members.items():
        if group == DEFAULT_GROUP:
            interval = device.poll_interval
        elif group in device.poll_groups:
            interval = device.poll_groups[group]
        else:
            raise ValueError(
                f"device {device.id}: points use poll_group {group!r}, but the device's "
                f"poll_groups does not give it an interval (it has: {', '.join(device.poll_groups) or 'none'})"
            )
        plans[group] = _compile(group, interval, named)
    return plans


def _compile(group: str, interval: float, named: list[tuple[str, BacnetPoint]]) -> ReadPlan:
    reads: dict[Key, PropertyRead] = {}

    def need(object_id: str, prop: str, index: int | None = None) -> Key:
        read = property_read(object_id, prop, index)
        reads.setdefault(read.key, read)
        return read.key

    point_reads = []
    for index, (name, point) in enumerate(named):
        object_id = object_text(point)
        key = need(object_id, point.property, point.array_index)
        status = None
        if point.property == "present-value" and not object_id.startswith("device,"):
            status = (need(object_id, "status-flags"), need(object_id, "reliability"))
        point_reads.append(PointRead(name, index, point, object_id.split(",")[0], key, status))
    # an object's reads side by side: its identifier is then sent (and answered) once
    first_seen: dict[str, int] = {}
    for key in reads:
        first_seen.setdefault(key[0], len(first_seen))
    ordered = sorted(reads.values(), key=lambda read: first_seen[read.key[0]])
    return ReadPlan(
        group, interval, tuple(name for name, _ in named), tuple(point_reads), tuple(ordered)
    )


def answer_size(reads: Sequence[PropertyRead]) -> int:
    """The estimated ReadPropertyMultiple answer for `reads`, in bytes."""
    size, current = COMPLEX_ACK_HEADER, None
    for read in reads:
        if read.key[0] != current:
            size += OBJECT_OVERHEAD
            current = read.key[0]
        size += read.size
    return size


def pack(reads: Sequence[PropertyRead], budget: int) -> list[tuple[PropertyRead, ...]]:
    """Cut `reads` (in order) into requests whose estimated answers fit `budget` bytes.

    Reads of one object stay adjacent, so each request names an object once per run.
    A single read larger than the budget still gets a request of its own.
    """
    budget = max(budget, MIN_BUDGET)
    requests: list[tuple[PropertyRead, ...]] = []
    current: list[PropertyRead] = []
    size, current_object = COMPLEX_ACK_HEADER, None
    for read in reads:
        extra = read.size + (OBJECT_OVERHEAD if read.key[0] != current_object else 0)
        if current and size + extra > budget:
            requests.append(tuple(current))
            current, size, current_object = [], COMPLEX_ACK_HEADER, None
            extra = read.size + OBJECT_OVERHEAD
        current.append(read)
        size += extra
        current_object = read.key[0]
    if current:
        requests.append(tuple(current))
    return requests


def rpm_parameters(request: Sequence[PropertyRead]) -> list:
    """bacpypes3's read_property_multiple parameter list: object, [references], ..."""
    parameters: list = []
    for read in request:
        if parameters and parameters[-2] == read.object_id:
            parameters[-1].append(read.reference)
        else:
            parameters.extend([read.object_id, [read.reference]])
    return parameters
