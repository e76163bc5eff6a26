"""The energy stage: counter readings in; rollups, group losses, night flow and meter
events out.

It sits in the pipeline beside the rule engine and has its shape: `open` restores,
`process` takes every poll (a batch of a device that is not a meter costs one dict
lookup), `tick` does what time alone decides (group periods whose grace ran out, night
windows that ended, daily retention), `close` saves. Operators' entries (manual
readings, replacements, handover snapshots) are in `entries.py`.

Outputs are readings like any device's, so they reach InfluxDB and upstream and rules
can read them (names in `points.py`):
- per meter and closed period, one Batch at the period's start: `<counter>_<period>`
  and `<counter>_<period>_estimated` of each counter that closed it;
- per group and closed period, one Batch (device = group id): `consumption_<period>`,
  `members_…`, `loss_…`, `loss_rate_…` where computable, `estimated_…`;
- per water counter and night, one Batch at the window's start: `<counter>_night_flow`;
- Event `meter_event` for a reset, a jump, a replacement (a rollover is only logged).

A meter's periods close on its first reading past their end, which after an outage or a
restart closes every period that ended meanwhile (interpolated, estimated when the gap
was long): a boundary total needs a reading on each side of it.

Not thread-safe: the daemon calls it from its event loop only.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import structlog

from gateway.batch import Batch, Quality
from gateway.config.models import SiteConfig
from gateway.energy.call import Call, Output
from gateway.energy.counters import JUMP, RESET, RESUMED, ROLLOVER, Step, as_reading
from gateway.energy.entries import Entries
from gateway.energy.groups import Groups, resolve_group
from gateway.energy.meters import Counter, build_counters
from gateway.energy.night import NightResult
from gateway.energy.periods import NOMINAL, Calendar
from gateway.energy.points import PERIODS, estimated_point, night_flow_point, rollup_point
from gateway.energy.store import FILE, KEEP_EVERY, EnergyStore, Writes

log = structlog.get_logger(__name__)

PRUNE_EVERY = 86400.0
LOG_EVERY = 60.0  # seconds between two log lines about energy.db refusing a write
_MESSAGES = {
    RESET: "counter went back from {previous} to {raw}: meter reset or replaced; "
           "not counted (record the replacement to keep the totals)",
    JUMP: "counter jumped from {previous} to {raw} ({rate:.4g}/h, above {max_rate:.4g}/h): "
          "implausible; not counted",
}


class EnergyStage(Entries):
    """The site's meters and groups, their trackers and periods."""

    def __init__(self, config: SiteConfig, data_dir: Path, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.data_dir = Path(data_dir)
        self.clock = clock
        self.calendar = Calendar(config.site.timezone)
        self.counters = build_counters(config, self.calendar)
        self.all = [c for points in self.counters.values() for c in points.values()]
        self._water = [c for c in self.all if c.night is not None]
        commodities = {d: {p: c.commodity for p, c in points.items()}
                       for d, points in self.counters.items()}
        grace = {c.key: 2 * c.poll_interval for c in self.all}
        resolved = (resolve_group(g, commodities, grace) for g in config.energy.groups)
        self.groups = Groups(g for g in resolved if g is not None)
        self._store: EnergyStore | None = None
        self._backlog: Output = []  # what a replacement closed, sent with the next call
        self._pruned: float | None = None
        self._unsaved: Writes | None = None  # a commit that failed, retried with the next
        self._store_logged: float | None = None
        self.counts: dict[str, int] = {}

    # -- life cycle ----------------------------------------------------------------------

    def open(self) -> Output:
        """Restore the counters' totals and periods and the groups' pending periods, then
        tick (group periods and night windows that ended while down)."""
        store = self._store = EnergyStore(self.data_dir / FILE)
        for key, body in store.states().items():
            counter = self.counters.get(key[0], {}).get(key[1])
            if counter is not None:
                counter.restore(body)
        now = self.clock()
        for gid, group in self.groups.groups.items():
            for period in PERIODS:
                upto = store.group_closed_upto(gid, period)
                after = upto if upto is not None else now - 2 * NOMINAL[period]
                self.groups.restore(gid, period, upto,
                                    store.meter_rollups_after(group.meters, period, after))
        log.info("energy stage open", counters=len(self.all), groups=len(self.groups.groups),
                 restored=sum(c.tracker.last_ts is not None for c in self.all))
        return self.tick(now)

    def close(self) -> None:
        """Save every counter's state with its last reading."""
        if self._store is None:
            return
        call = Call(self.clock(), self.calendar)
        for c in self.all:
            t = c.tracker
            if t.last_ts is None:
                continue
            if not c.last_kept:
                call.writes.reading(c.device, c.point, t.last_ts, t.last_raw, t.total)
                c.last_kept = True
            call.writes.states[c.key] = c.snapshot()
        self._commit(call.writes)
        if self._unsaved is not None:
            log.error("energy state not saved at stop; the next start counts from the last "
                      "state saved", readings=len(self._unsaved.readings),
                      rollups=len(self._unsaved.rollups))
            self._unsaved = None
        self._store.close()
        self._store = None

    # -- the hot path ----------------------------------------------------------------------

    def process(self, batch: Batch) -> Output:
        """One poll: the counter points of a meter are tracked; anything else passes."""
        points = self.counters.get(batch.device)
        if points is None:
            return self._drain() if self._backlog else []
        self._store_open()
        call: Call | None = None
        quality = batch.quality
        for i, name in enumerate(batch.points):
            counter = points.get(name)
            if counter is None:
                continue
            raw = as_reading(batch.values[i])
            if raw is None or (quality is not None and quality[i] != Quality.GOOD):
                self._count("ignored")
                continue
            call = call or Call(batch.ts, self.calendar)
            previous = self._last(counter)
            step = counter.tracker.feed(batch.ts, raw)
            if step is None:
                self._count("stale")
                continue
            self._stepped(call, counter, step, previous)
        if call is None:
            return self._drain() if self._backlog else []
        return self._finish(call)

    def tick(self, now: float | None = None) -> Output:
        """Group periods past their grace, night windows that ended, retention (daily)."""
        self._store_open()
        now = self.clock() if now is None else now
        call = Call(now, self.calendar)
        call.groups.extend(self.groups.due(now))
        for c in self._water:
            assert c.night is not None
            ended = c.night.end is not None and now >= c.night.end
            result = c.night.finish(now)
            if result is not None:
                self._night(call, c, result)
            elif ended:  # nothing measured: remember the night is over all the same
                call.writes.states[c.key] = c.snapshot()
        if self._pruned is None or not 0 <= now - self._pruned < PRUNE_EVERY:
            call.writes.prune_before = now - self.config.energy.keep_days * 86400.0
            self._pruned = now
        return self._finish(call)

    # -- one reading -----------------------------------------------------------------------

    @staticmethod
    def _last(c: Counter) -> tuple[float, float, float] | None:
        t = c.tracker
        if t.last_ts is None or t.last_raw is None:
            return None
        return t.last_ts, t.total, t.last_raw

    def _stepped(self, call: Call, c: Counter, step: Step, previous: tuple | None, *,
                 source: str = "poll", by: str | None = None) -> None:
        """A step the tracker took: flags, periods closed, night flow, what to keep."""
        t = c.tracker
        flag = step.flag
        self._count("readings")
        if flag is not None:
            self._count(flag)
        if flag == ROLLOVER:
            log.info("counter rolled over", device=c.device, point=c.point, raw=step.raw,
                     previous=step.previous)
        elif flag in (RESET, JUMP):
            body = {"point": c.point, "kind": flag, "raw": step.raw, "previous": step.previous,
                    "ts": step.ts, "total": t.total, "unit": c.unit}
            if flag == JUMP:
                body.update(rate=step.rate, max_rate=t.max_rate)
            body["message"] = _MESSAGES[flag].format(**body)
            log.warning("meter " + flag, device=c.device, point=c.point, raw=step.raw,
                        previous=step.previous)
            call.event(step.ts, c.device, body)
        elif flag == RESUMED:
            log.info("an implausible reading was one bad read; counting resumed",
                     device=c.device, point=c.point, raw=step.raw)
        if flag in (RESET, JUMP, RESUMED):
            c.last_flag, c.last_flag_ts = flag, step.ts
        reading = (t.last_ts, t.total, t.last_raw)
        closed = []
        if previous is None:
            c.rollups.begin(reading)
        else:
            closed = c.rollups.advance(previous, reading)
        for cl in closed:
            call.writes.rollup(c.device, c.point, cl)
            key = (c.device, cl.period, cl.start)
            batch = call.rollups.get(key) or call.rollups.setdefault(
                key, Batch(c.device, cl.start, (), []))
            batch.points += (rollup_point(c.point, cl.period), estimated_point(c.point, cl.period))
            batch.values.extend((cl.consumption, int(cl.estimated)))
            call.groups.extend(self.groups.closed(c.key, cl.period, cl.start, cl.end,
                                                  cl.consumption, cl.estimated))
        night = c.night.feed(step.ts, t.total) if c.night is not None else None
        if night is not None:
            self._night(call, c, night)
        keep = (source != "poll" or flag is not None or closed or night is not None
                or c.kept_ts is None or step.ts - c.kept_ts >= KEEP_EVERY)
        if not keep:
            c.last_kept = False
            return
        if closed and not c.last_kept and previous is not None:
            call.writes.reading(c.device, c.point, previous[0], previous[2], previous[1])
        call.writes.reading(c.device, c.point, step.ts, step.raw, t.total, source=source, by=by,
                            flags=(flag,) if flag else ())
        c.kept_ts, c.last_kept = step.ts, True
        call.writes.states[c.key] = c.snapshot()

    def _night(self, call: Call, c: Counter, result: NightResult) -> None:
        self._count("night_flows")
        call.night.append(Batch(c.device, result.window_start, (night_flow_point(c.point),),
                                [result.min_flow]))
        call.writes.states[c.key] = c.snapshot()
        log.info("night minimum flow", device=c.device, point=c.point, flow=result.min_flow,
                 intervals=result.intervals)

    # -- the end of every call -------------------------------------------------------------

    def _finish(self, call: Call, *, backlog: bool = True) -> Output:
        """Write the call's changes in one transaction; outputs in order."""
        for r in call.groups:
            call.writes.group_rollup(r)
        pruned = self._commit(call.writes)
        if pruned:
            log.info("old counter readings removed", readings=pruned,
                     keep_days=self.config.energy.keep_days)
        self._count("rollups", sum(len(b.points) // 2 for b in call.rollups.values()))
        self._count("group_rollups", len(call.groups))
        items: Output = [*call.readings, *call.rollups.values(),
                         *(g.batch() for g in call.groups), *call.night, *call.events]
        if backlog and self._backlog:
            items = [*self._drain(), *items]
        return items

    def _commit(self, writes: Writes) -> int:
        """Commit `writes` after any that failed before; a failure (a full disk, a locked
        file) is counted, logged at most once a minute and kept for the next call, so the
        stage carries on in memory and the ledger gets its rows once the disk takes them."""
        store = self._store_open()
        if self._unsaved is not None:
            writes = self._unsaved.then(writes)
        try:
            pruned = store.commit(writes)
        except sqlite3.Error as exc:
            self._unsaved = writes
            self._count("store_errors")
            now = time.monotonic()
            if self._store_logged is None or not 0 <= now - self._store_logged < LOG_EVERY:
                self._store_logged = now
                log.error("energy.db not written; will retry", error=str(exc),
                          readings=len(writes.readings), rollups=len(writes.rollups),
                          failures=self.counts["store_errors"])
            return 0
        self._unsaved = None
        return pruned

    def _drain(self) -> Output:
        items, self._backlog = self._backlog, []
        return items

    def _count(self, name: str, n: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + n

    def _store_open(self) -> EnergyStore:
        if self._store is None:
            raise RuntimeError("the energy stage is not open: call open() first")
        return self._store

    def stats(self) -> dict:
        """Counts since start, for status.json."""
        return {"meters": len(self.counters), "counters": len(self.all),
                "groups": len(self.groups.groups),
                "pending_group_periods": len(self.groups.pending), **self.counts}
