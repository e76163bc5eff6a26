"""Groups of meters: a building's master meter against the sum of its sub-meters.

A group's period is computed from its meters' rollups of that period, so it is as right
as they are (boundary totals, outages interpolated). It closes when every meter has
closed the period, or, at a tick, `grace` seconds after the period ended (twice the
slowest meter's poll interval): a meter that has not reported by then is missing and
the group period is estimated.

- `consumption`: the master's; without a master, the members' sum.
- with both: `members` (their sum), `loss` = master - members, `loss_rate` = loss / master.
  Loss and loss rate are left out when a meter is missing (a partial sum would read
  as a loss and raise a false theft alarm) and the rate when the master read 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import structlog

from gateway.batch import Batch
from gateway.config.energy_models import MeterGroup
from gateway.energy.points import group_point

log = structlog.get_logger(__name__)

Key = tuple[str, str]  # (device, point)


def key_name(key: Key) -> str:
    return f"{key[0]}.{key[1]}"


@dataclass(frozen=True, slots=True)
class GroupMeters:
    """A configured group with its meters resolved to counters."""

    id: str
    commodity: str
    master: Key | None
    members: tuple[Key, ...]
    grace: float = 0.0

    @property
    def meters(self) -> tuple[Key, ...]:
        return ((self.master,) if self.master else ()) + self.members


def resolve_group(group: MeterGroup, counters: Mapping[str, Mapping[str, str | None]],
                  grace: Mapping[Key, float] | None = None) -> GroupMeters | None:
    """Resolve `device` or `device.point` references; `counters` maps each meter to its
    counters' commodities. A reference that resolves to nothing is skipped and logged
    (config validation catches it; a running gateway must not crash on it)."""

    def one(ref: str) -> Key | None:
        device, _, point = ref.partition(".")
        points = counters.get(device)
        if points is None:
            log.warning("group meter is not a meter; skipped", group=group.id, device=device)
            return None
        if point:
            if point in points:
                return device, point
            log.warning("group meter point is not a counter; skipped", group=group.id,
                        device=device, point=point)
            return None
        matching = [p for p, commodity in points.items() if commodity == group.commodity]
        if not matching:
            log.warning("group meter has no counter of the group's commodity; skipped",
                        group=group.id, device=device, commodity=group.commodity)
            return None
        if len(matching) > 1:
            log.warning("group meter has several counters of the commodity; using the first",
                        group=group.id, device=device, point=matching[0])
        return device, matching[0]

    master = one(group.master) if group.master else None
    members = tuple(k for k in (one(m) for m in group.members) if k is not None)
    if master is None and not members:
        log.warning("group has no meter that resolves; not analysed", group=group.id)
        return None
    keys = ((master,) if master else ()) + members
    slowest = max(((grace or {}).get(k, 0.0) for k in keys), default=0.0)
    return GroupMeters(group.id, group.commodity, master, members, slowest)


@dataclass(slots=True)
class GroupRollup:
    """One closed period of one group."""

    group: str
    period: str
    start: float
    end: float
    consumption: float | None
    members: float | None
    loss: float | None
    loss_rate: float | None
    estimated: bool
    missing: list[str]

    def batch(self) -> Batch:
        """The group's readings for the period, at the period's start; a field that could
        not be computed is left out rather than sent as a made-up number."""
        names: list[str] = []
        values: list[float | int] = []
        for name, value in (("consumption", self.consumption), ("members", self.members),
                            ("loss", self.loss), ("loss_rate", self.loss_rate)):
            if value is not None:
                names.append(group_point(name, self.period))
                values.append(value)
        names.append(group_point("estimated", self.period))
        values.append(int(self.estimated))
        return Batch(self.group, self.start, tuple(names), values)


@dataclass(slots=True)
class _Pending:
    end: float
    got: dict[Key, tuple[float, bool]] = field(default_factory=dict)


class Groups:
    """The groups' periods waiting for their meters."""

    def __init__(self, groups: Iterable[GroupMeters]) -> None:
        self.groups = {g.id: g for g in groups}
        self.by_meter: dict[Key, list[str]] = {}
        for g in self.groups.values():
            for key in g.meters:
                self.by_meter.setdefault(key, []).append(g.id)
        self.pending: dict[tuple[str, str, float], _Pending] = {}
        self.closed_upto: dict[tuple[str, str], float] = {}  # (group, period) → latest start

    def closed(self, key: Key, period: str, start: float, end: float, consumption: float,
               estimated: bool) -> list[GroupRollup]:
        """A meter closed a period; returns the group periods that are now complete."""
        out: list[GroupRollup] = []
        for gid in self.by_meter.get(key, ()):
            upto = self.closed_upto.get((gid, period))
            if upto is not None and start <= upto:
                log.info("meter period arrived after its group's closed; group not revised",
                         group=gid, device=key[0], point=key[1], period=period, start=start)
                continue
            pending = self.pending.setdefault((gid, period, start), _Pending(end))
            pending.got[key] = (consumption, estimated)
            if all(k in pending.got for k in self.groups[gid].meters):
                out.append(self._close(gid, period, start))
        return out

    def restore(self, gid: str, period: str, upto: float | None,
                rows: Iterable[tuple[str, str, float, float, float, bool]]) -> None:
        """After a restart: the group's latest stored period, and its meters' rollups of
        later periods (device, point, start, end, consumption, estimated) to wait on."""
        if upto is not None:
            self.closed_upto[(gid, period)] = upto
        meters = self.groups[gid].meters
        for device, point, start, end, consumption, estimated in rows:
            if (device, point) in meters:
                pending = self.pending.setdefault((gid, period, start), _Pending(end))
                pending.got[(device, point)] = (consumption, estimated)

    def due(self, now: float) -> list[GroupRollup]:
        """Group periods whose grace has run out, closed with what arrived."""
        late = [(gid, period, start) for (gid, period, start), p in self.pending.items()
                if now >= p.end + self.groups[gid].grace]
        return [self._close(*k) for k in sorted(late, key=lambda k: k[2])]

    def _close(self, gid: str, period: str, start: float) -> GroupRollup:
        pending = self.pending.pop((gid, period, start))
        group = self.groups[gid]
        got = pending.got
        missing = [key_name(k) for k in group.meters if k not in got]
        estimated = bool(missing) or any(e for _, e in got.values())
        present = [got[k][0] for k in group.members if k in got]
        members = round(sum(present), 9) if present else None
        master = got[group.master][0] if group.master in got else None
        consumption, loss, rate = members, None, None
        if group.master is not None:
            consumption = master
            if group.members and master is not None and not missing and members is not None:
                loss = round(master - members, 9)
                rate = round(loss / master, 9) if master else None
        self.closed_upto[(gid, period)] = max(start, self.closed_upto.get((gid, period), start))
        return GroupRollup(gid, period, start, pending.end, consumption,
                           members if group.master is not None and group.members else None,
                           loss, rate, estimated, missing)
