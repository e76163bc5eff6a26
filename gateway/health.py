"""Per-device poll statistics and the online/offline state the status events report, and
the site's health line (OK or DEGRADED with reasons) built from what the daemon gathers.

These count polls (one batch each); a driver may count its requests on top, e.g. the
Modbus driver's `stats()`, which the periodic device status carries alongside.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from gateway.batch import Event, Kind

if TYPE_CHECKING:
    from gateway.outbox import Outbox
    from gateway.sinks.runner import SinkRunner

log = structlog.get_logger(__name__)

OFFLINE_AFTER = 3  # consecutive failed polls before a device is reported offline


@dataclass(slots=True)
class DeviceHealth:
    device: str
    offline_after: int = OFFLINE_AFTER  # consecutive failed polls before offline
    online: bool | None = None  # None until the first poll settles it
    polls: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    errors: dict[str, int] = field(default_factory=dict)  # failure kind -> count
    last_good: float | None = None
    last_error: str | None = None
    last_latency: float | None = None
    mean_latency: float | None = None  # of good polls
    maintenance_until: float | None = None  # in maintenance mode until then (alarms suppressed)

    def good(self, latency: float, now: float | None = None) -> Event | None:
        """Record a successful poll; returns a status event when the device came (back) online."""
        self.polls += 1
        self.consecutive_failures = 0
        self.last_latency = latency
        good = self.polls - self.failures
        mean = self.mean_latency or 0.0
        self.mean_latency = mean + (latency - mean) / good
        self.last_good = now or time.time()
        if self.online is not True:
            self.online = True
            return self.status_event(self.last_good)
        return None

    def failed(self, kind: str, error: str, now: float | None = None) -> Event | None:
        """Record a failed poll; returns a status event when the device just went offline."""
        self.polls += 1
        self.failures += 1
        self.consecutive_failures += 1
        self.errors[kind] = self.errors.get(kind, 0) + 1
        self.last_error = error
        if self.online is not False and self.consecutive_failures >= self.offline_after:
            self.online = False
            return self.status_event(now)
        return None

    @property
    def failures_while_offline(self) -> int:
        """Failed polls since the device went offline, counting the one that took it there."""
        if self.online is not False:
            return 0
        return self.consecutive_failures - self.offline_after + 1

    def status_event(self, ts: float | None = None, **extra: object) -> Event:
        """A device_status event with the snapshot and `extra` fields (e.g. driver stats)."""
        return Event("device_status", ts or time.time(), self.device, {**self.snapshot(), **extra})

    def snapshot(self) -> dict[str, object]:
        return {
            "online": self.online,
            "polls": self.polls,
            "failures": self.failures,
            "errors": dict(self.errors),
            "last_good": self.last_good,
            "last_error": self.last_error,
            "latency_ms": _ms(self.last_latency),
            "mean_latency_ms": _ms(self.mean_latency),
            "maintenance_until": self.maintenance_until,
        }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


# --- the site's health: one line for `gateway status`, systemd and the metrics ----------

WATCH_EVERY = 1.0  # seconds between two looks at the outbox and the sinks
SINK_DOWN_AFTER = 300.0  # seconds a sink may fail before the gateway is degraded
BACKLOG_AGE_MAX = 900.0  # seconds the oldest record a sink has not confirmed may wait
DISK_FREE_MIN = 0.05  # of the data dir's file system; below it the disk is nearly full
OUTBOX_FULL = 0.9  # of outbox.max_size; past it the oldest readings are about to go
OK, DEGRADED = "OK", "DEGRADED"


class CommitClock:
    """When outbox records were committed, coarsely: the age of the oldest record a sink
    has not confirmed, without reading the outbox at every look.

    Marks are (seq, ts): record `seq` was committed by `ts`. The daemon marks the
    committed sequence number every second, and at start the first unconfirmed record of
    each sink with that record's own time (what was committed before the start is known
    no better). Ages are therefore at most a second short. Marks every sink has passed
    are forgotten; a long outage keeps at most `max_marks`, thinning the oldest.
    """

    def __init__(self, max_marks: int = 4096) -> None:
        self.max_marks = max_marks
        self._marks: list[tuple[int, float]] = []

    def mark(self, seq: int, ts: float) -> None:
        marks = self._marks
        if marks and seq <= marks[-1][0]:
            return
        if marks and ts < marks[-1][1]:
            ts = marks[-1][1]  # a clock step back must not make later records look older
        marks.append((seq, ts))
        if len(marks) > self.max_marks:  # keep every other of the older half
            half = len(marks) // 2
            self._marks = marks[:half:2] + marks[half:]

    def committed_at(self, after: int) -> float | None:
        """When the first record after `after` was committed; None when none is known."""
        for seq, ts in self._marks:  # oldest first; only unconfirmed marks are kept
            if seq > after:
                return ts
        return None

    def forget(self, upto: int) -> None:
        """Every sink has confirmed up to `upto`: marks at or below it are not needed."""
        keep = next((i for i, (seq, _ts) in enumerate(self._marks) if seq > upto), len(self._marks))
        if keep:
            del self._marks[:keep]


class Outages:
    """Since when each sink has been failing, from the daemon's look every second."""

    def __init__(self) -> None:
        self.since: dict[str, float] = {}

    def look(self, sink: str, failing: bool, now: float) -> None:
        if failing:
            self.since.setdefault(sink, now)
        else:
            self.since.pop(sink, None)

    def down_for(self, sink: str, now: float) -> float:
        """Seconds the sink has been failing; 0 while it delivers (or has nothing to)."""
        since = self.since.get(sink)
        return 0.0 if since is None else max(0.0, now - since)


class SinkWatch:
    """Looks at the outbox and the sinks every second: when records were committed and
    since when a sink has been failing, for the sinks' lag in status, health and metrics."""

    def __init__(self, outbox: Outbox, runners: list[SinkRunner]) -> None:
        self.outbox = outbox
        self.runners = runners  # the daemon's list: sinks added later are seen too
        self.commits = CommitClock()
        self.outages = Outages()

    async def start(self) -> None:
        """Mark each sink's oldest unconfirmed record with its own time: what was
        committed before this start is known no better."""
        now = time.time()
        for cursor in sorted({self.outbox.cursor(r.name) for r in self.runners}):
            if cursor >= self.outbox.stats.committed_seq:
                continue
            try:
                records, _upto = await self.outbox.read(cursor, 1, tuple(Kind))
            except Exception as exc:  # the ages then count from this start
                log.warning("could not read the oldest unconfirmed record", error=repr(exc))
                continue
            if records:
                self.commits.mark(records[0].seq, min(records[0].item.ts, now))
        self.look(now)

    def look(self, now: float) -> None:
        self.commits.mark(self.outbox.stats.committed_seq, now)
        for runner in self.runners:
            self.outages.look(runner.name, runner.last_error is not None, now)
        if self.runners:
            self.commits.forget(min(self.outbox.cursor(r.name) for r in self.runners))

    async def watch_forever(self, every: float = WATCH_EVERY) -> None:
        while True:
            await asyncio.sleep(every)
            self.look(time.time())

    def sinks(self, now: float) -> list[dict[str, object]]:
        """Each runner's status with `down_for` (seconds failing) and
        `oldest_unconfirmed_age` (seconds; 0 when the sink is up to date)."""
        views = []
        for runner in self.runners:
            view = runner.status()
            cursor = self.outbox.cursor(runner.name)
            committed = self.commits.committed_at(cursor)
            pending = self.outbox.stats.committed_seq > cursor
            view["oldest_unconfirmed_age"] = (
                round(max(0.0, now - committed), 1) if pending and committed is not None else 0.0)
            view["down_for"] = round(self.outages.down_for(runner.name, now), 1)
            views.append(view)
        return views


@dataclass(slots=True)
class SiteFacts:
    """What the health line is judged on, gathered by the daemon at one moment."""

    offline: list[str] = field(default_factory=list)  # devices offline, not in maintenance
    sinks_down: dict[str, float] = field(default_factory=dict)  # sink -> seconds failing
    backlog: dict[str, tuple[int, float]] = field(default_factory=dict)  # sink -> (records, age)
    disk_free: float | None = None  # fraction of the data dir's file system free
    outbox_fill: float | None = None  # live outbox bytes over max_size
    reload_failed_at: float | None = None  # the last reload failed then (and none since worked)

    def add_sink(self, view: Mapping[str, Any]) -> None:
        """A sink as `SinkWatch.sinks` shows it."""
        name = str(view["sink"])
        self.sinks_down[name] = float(view.get("down_for") or 0.0)
        self.backlog[name] = (int(view.get("behind") or 0),
                              float(view.get("oldest_unconfirmed_age") or 0.0))


def judge(facts: SiteFacts) -> dict[str, object]:
    """{"state": "OK"|"DEGRADED", "reasons": [...]}, the reasons written for people."""
    reasons: list[str] = []
    if facts.offline:
        shown = ", ".join(facts.offline[:5]) + (f" and {len(facts.offline) - 5} more"
                                                if len(facts.offline) > 5 else "")
        count = len(facts.offline)
        reasons.append(f"{count} device{'s' if count != 1 else ''} offline: {shown}")
    for sink, seconds in sorted(facts.sinks_down.items()):
        if seconds > SINK_DOWN_AFTER:
            reasons.append(f"sink {sink} down for {_duration(seconds)}")
    for sink, (records, age) in sorted(facts.backlog.items()):
        if age > BACKLOG_AGE_MAX:
            reasons.append(f"sink {sink}: {records} records waiting, the oldest {_duration(age)}")
    if facts.disk_free is not None and facts.disk_free < DISK_FREE_MIN:
        reasons.append(f"disk nearly full: {facts.disk_free:.0%} free for the data dir")
    if facts.outbox_fill is not None and facts.outbox_fill > OUTBOX_FULL:
        reasons.append(f"outbox at {facts.outbox_fill:.0%} of max_size: the oldest readings "
                       "are dropped next")
    if facts.reload_failed_at is not None:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(facts.reload_failed_at))
        reasons.append(f"reload failed at {when}; the previous configuration runs")
    return {"state": DEGRADED if reasons else OK, "reasons": reasons}


def health_line(health: dict[str, object]) -> str:
    """"OK", or "DEGRADED: reason; reason" — `gateway status` and systemd's STATUS=."""
    reasons = health.get("reasons") or []
    return str(health.get("state")) + (": " + "; ".join(map(str, reasons)) if reasons else "")


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"
