"""A device's states over time, from its ledger entries and the gateway's sessions.

At any moment a device is in one state, decided in this order:

1. `unknown`: the gateway was not running (no session covers the moment), or it was
   but has had no status for the device yet and nothing below applies;
2. `maintenance`: in maintenance mode (planned work explains everything else);
3. `fault`: an alarm of a fault severity (critical, major by default) is active;
4. `offline`: the gateway cannot reach it;
5. `up`: online, not faulted, not in maintenance.

A failure is a span during which at least one fault-severity alarm is active: two alarms
of one trip (a tripped drive and the low pressure it causes) are one failure. It starts
when the first is raised and ends when the last clears, whether or not the gateway was
running in between (its entries say when).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from gateway.equipment.ledger import (
    ALARM_RAISED,
    MAINTENANCE_OFF,
    MAINTENANCE_ON,
    OFFLINE,
    ONLINE,
)
from gateway.equipment.store import Entry, Session

UP, MAINTENANCE, FAULT, DOWN_OFFLINE, UNKNOWN = "up", "maintenance", "fault", "offline", "unknown"
DOWN_STATES = (MAINTENANCE, FAULT, DOWN_OFFLINE)  # in the order a reason takes precedence
STATES = (UP, *DOWN_STATES, UNKNOWN)


@dataclass(frozen=True, slots=True)
class Segment:
    """[start, end) in one state; `alarms` the names of the fault alarms active then."""

    start: float
    end: float
    state: str
    alarms: tuple[str, ...] = ()


@dataclass(slots=True)
class Failure:
    """One failure: [start, end); end None while it lasts."""

    device: str
    start: float
    end: float | None
    alarms: list[str] = field(default_factory=list)

    @property
    def duration(self) -> float | None:
        return None if self.end is None else self.end - self.start


@dataclass(slots=True)
class Timeline:
    """One device's segments within a window, and the failures that began in it."""

    device: str
    start: float
    end: float
    segments: list[Segment]
    failures: list[Failure]


class _State:
    def __init__(self, fault_severities: Iterable[str]) -> None:
        self.severities = set(fault_severities)
        self.running = False
        self.status: bool | None = None
        self.faults: dict[str, str] = {}  # alarm → name
        self.maintenance = False

    def apply(self, entry: Entry) -> None:
        kind = entry.kind
        if kind == ONLINE:
            self.status = True
        elif kind == OFFLINE:
            self.status = False
        elif kind == ALARM_RAISED:
            if entry.body.get("severity") in self.severities and entry.ref:
                self.faults[entry.ref] = str(entry.body.get("name") or entry.ref)
        elif kind == "alarm_cleared":
            self.faults.pop(entry.ref or "", None)
        elif kind == MAINTENANCE_ON:
            self.maintenance = True
        elif kind == MAINTENANCE_OFF:
            self.maintenance = False

    def state(self) -> str:
        if not self.running:
            return UNKNOWN
        if self.maintenance:
            return MAINTENANCE
        if self.faults:
            return FAULT
        if self.status is False:
            return DOWN_OFFLINE
        return UP if self.status else UNKNOWN


# at one instant: a session ends before the next starts, and entries come after both
_SESSION_END, _SESSION_START, _ENTRY = 0, 1, 2


def build(device: str, entries: Sequence[Entry], sessions: Sequence[Session], start: float,
          end: float, fault_severities: Iterable[str]) -> Timeline:
    """The device's timeline over [start, end).

    `entries` are the device's, oldest first: those that set its state before `start`
    (see `LedgerReader.state_before`) and every one from `start` on. Entries after `end`
    only close failures that began within the window.
    """
    moments: list[tuple[float, int, int, Entry | None]] = []
    for s in sessions:
        if s.seen > s.started:
            moments.append((s.started, _SESSION_START, 0, None))
            moments.append((s.seen, _SESSION_END, 0, None))
    moments += [(e.ts, _ENTRY, i, e) for i, e in enumerate(entries)]
    moments.sort(key=lambda m: (m[0], m[1], m[2]))
    state = _State(fault_severities)
    segments: list[Segment] = []
    failures: list[Failure] = []
    current: Failure | None = None
    previous = float("-inf")
    for ts, what, _, entry in moments:
        if ts > previous:
            _emit(segments, previous, ts, state, start, end)
            previous = ts
        if what == _SESSION_START:
            state.running, state.status = True, None
        elif what == _SESSION_END:
            state.running, state.status = False, None
        else:
            assert entry is not None
            faulted = bool(state.faults)
            state.apply(entry)
            if not faulted and state.faults:
                current = Failure(device, ts, None, list(state.faults.values()))
                if start <= ts < end:
                    failures.append(current)
            elif faulted and not state.faults and current is not None:
                current.end, current = ts, None
            elif current is not None:
                current.alarms += [n for n in state.faults.values() if n not in current.alarms]
    _emit(segments, previous, end, state, start, end)
    return Timeline(device, start, end, _merge(segments), failures)


def _emit(segments: list[Segment], a: float, b: float, state: _State, start: float,
          end: float) -> None:
    a, b = max(a, start), min(b, end)
    if b > a:
        alarms = tuple(state.faults.values()) if state.faults else ()
        segments.append(Segment(a, b, state.state(), alarms))


def _merge(segments: list[Segment]) -> list[Segment]:
    """Adjacent segments in the same state with the same alarms become one."""
    out: list[Segment] = []
    for s in segments:
        if out and out[-1].end == s.start and out[-1].state == s.state and out[-1].alarms == s.alarms:
            out[-1] = Segment(out[-1].start, s.end, s.state, s.alarms)
        else:
            out.append(s)
    return out
