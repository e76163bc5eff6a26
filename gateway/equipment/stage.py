"""The equipment stage: the ledger written as events happen, intact-rate alarms, the
daily and monthly KPIs, warranty notices.

It listens rather than transforms: `observe(event)` is a pipeline listener (called with
every event after it is stored) and queues ledger entries, written in one transaction
within FLUSH_AFTER (1,000 devices coming online at a start are one commit, not 1,000
on the event loop; at once when no loop runs); `tick(now)`, on a timer, does
what time decides and returns what to emit: the `equipment_event`s of the entries
written since, intact-rate alarm events, a `kpi` event with its readings for each day
(and month) that closed, warranty notices, and the readings the events made for charts
(`status_points.py`: online, equipment state, alarm counts). `open` restores and starts
a session, `close` ends it; `status` is for status.json.

A listener must never fail its caller: an error is counted and logged at most once a
minute, and entries equipment.db refused are kept and retried on the next tick.
Not thread-safe: the daemon calls it from its event loop only.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import structlog

from gateway.batch import Batch, Event
from gateway.config.kpi_models import check_kpi
from gateway.config.models import SiteConfig
from gateway.energy.periods import Calendar
from gateway.equipment.intact import ExternalAlarms, IntactWatch
from gateway.equipment.ledger import (
    COMMISSIONED,
    MAINTENANCE_DONE,
    WARRANTY_ENDED,
    WARRANTY_ENDING,
    Recorder,
)
from gateway.equipment.output import OWN_EVENTS, equipment_event, kpi_batches, kpi_event
from gateway.equipment.service import read_tickets, service_kpis
from gateway.equipment.site_kpis import groups, site_kpis, subjects, timelines
from gateway.equipment.status_points import StatusPoints, alarm_views
from gateway.equipment.store import FILE, Entry, EquipmentStore
from gateway.equipment.timeline import DOWN_OFFLINE, FAULT, MAINTENANCE, UNKNOWN, UP
from gateway.equipment.warranty import warranty_notices

log = structlog.get_logger(__name__)

Output = list[Batch | Event]
SEEN_EVERY = 60.0  # seconds between two saves of "the gateway was running until now"
LOG_EVERY = 60.0
FLUSH_AFTER = 0.2  # seconds an observed entry waits for others to share its transaction
CATCH_UP_DAYS = 7  # days of KPIs sent after a long downtime; older ones are in the report
KPI_DONE = "kpi_next_day"  # meta: the start of the next day whose KPIs are due
SENT = "sent_upto"  # meta: the last entry handed on as an equipment event


class EquipmentStage:
    """The site's equipment ledger and KPIs over one data dir."""

    def __init__(self, config: SiteConfig, data_dir: Path, *, clock: Callable[[], float] = time.time,
                 alarms: Callable[[], ExternalAlarms | None] | None = None) -> None:
        """`alarms` returns the rule engine (it may change on a reload) that raises the
        intact-rate alarms; None: rates are computed, no alarm is raised.

        ValueError when `kpi.groups` name what the site does not have (the loader's
        check_kpi reports it with the file and line; this is the guard behind it)."""
        issues = check_kpi(config, None, config.devices, config.profiles)
        if issues:
            raise ValueError("the kpi groups do not fit the site (was the configuration "
                             "validated?):\n" + "\n".join(f"  {i}" for i in issues))
        self.config = config
        self.data_dir = Path(data_dir)
        self.clock = clock
        self.calendar = Calendar(config.site.timezone)
        self.subjects = subjects(config)
        self.groups = groups(config)
        self.severities = tuple(config.kpi.fault_severities)
        self.names = {d.id: d.name or d.id for d in config.devices}
        self.recorder = Recorder(ignore_types=OWN_EVENTS)
        self.intact = IntactWatch(self.groups, self.names, alarms)
        self._engine = alarms or (lambda: None)
        self.status_points = StatusPoints(config.site.id)  # events as readings, for charts
        self._store: EquipmentStore | None = None
        self._pending: list[Event] = []  # equipment events of entries written since the last tick
        self._unsaved: list[Entry] = []  # entries equipment.db refused; retried
        self._queued: list[Entry] = []  # entries observed, written by `_flush`
        self._flush_at: asyncio.TimerHandle | None = None
        self._seen_at: float | None = None
        self._warranty_day: float | None = None
        self._warranties: set[tuple[str, str, str]] = set()
        self._logged: float | None = None
        self._changed: float | None = None  # when a device's state last changed (entry time)
        self.counts: dict[str, int] = {}

    # -- life cycle ------------------------------------------------------------------------

    def open(self) -> Output:
        """Restore the recorder from the ledger, start a session, notice warranties."""
        store = self._store = EquipmentStore(self.data_dir / FILE)
        self.recorder.restore(store.state_before(float("inf")))
        self.recorder.restore(store.entries(kinds=(COMMISSIONED, MAINTENANCE_DONE)))
        self._warranties = {(e.device, e.kind, e.ref or "") for e in
                            store.entries(kinds=(WARRANTY_ENDING, WARRANTY_ENDED))}
        # entries written but not handed on before the last stop go out first
        sent = int(store.meta(SENT) or 0)
        self._pending = [equipment_event(e) for e in store.entries_after(sent)]
        now = self.clock()
        store.start_session(now)
        self._seen_at = now
        try:  # the charts' first values; never a reason to keep the ledger shut
            self.status_points.seed(alarm_views(self._engine()), self.live_states(), now)
        except Exception as exc:
            self._failed("seed", exc)
        if store.meta(KPI_DONE) is None:  # first start: the first day sent is today
            store.set_meta({KPI_DONE: repr(self.calendar.start(now, "day"))})
        log.info("equipment ledger open", devices=len(self.subjects), groups=len(self.groups),
                 active_faults=len(self.recorder.active), in_maintenance=len(self.recorder.maintenance))
        return self.tick(now)

    def close(self) -> None:
        """End the session here (availability counts nothing after it)."""
        if self._store is None:
            return
        now = self.clock()
        self._flush(now)
        try:
            self._store.seen(now, stopped=True)
        except sqlite3.Error as exc:
            log.error("equipment session end not saved", error=str(exc))
        if self._unsaved:
            log.error("ledger entries not saved at stop", entries=len(self._unsaved))
        self._store.close()
        self._store = None

    # -- events ----------------------------------------------------------------------------

    def observe(self, event: Event) -> None:
        """A pipeline listener: the entries this event makes, queued for `_flush`. Never raises."""
        if self._store is None:
            return
        try:
            entries = self.recorder.entries_for(event)
            if entries:
                self._changed = max(e.ts for e in entries)
                self._queue(entries)
                # an entry is about the one device whose state it changed: only those are looked at
                self.status_points.states(self.live_states(e.device for e in entries), self._changed)
            self.status_points.observe(event)
        except Exception as exc:  # a bug here must cost an entry, never the pipeline
            self._failed("observe", exc, event=event.type, device=event.device)

    def _queue(self, entries: list[Entry]) -> None:
        """Entries for the transaction FLUSH_AFTER from the first queued; without a running
        loop (tests, tools) written at once."""
        self._queued += entries
        if self._flush_at is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._flush()
            return
        self._flush_at = loop.call_later(FLUSH_AFTER, self._flush)

    def _flush(self, now: float | None = None) -> None:
        """Write the queued entries (and those refused before) in one transaction."""
        if self._flush_at is not None:
            self._flush_at.cancel()
            self._flush_at = None
        queued, self._queued = self._queued, []
        if self._store is None or not (queued or self._unsaved):
            return
        try:
            self._save(queued, self.clock() if now is None else now)
        except Exception as exc:  # a timer callback: a bug costs these entries, never the loop
            self._failed("write", exc, entries=len(queued))

    def _save(self, entries: list[Entry], now: float) -> None:
        assert self._store is not None
        batch = self._unsaved + entries
        try:
            self._store.append(batch, now)
        except sqlite3.Error as exc:
            self._unsaved = batch
            self._failed("write", exc, entries=len(batch))
            return
        self._unsaved = []
        self._count("entries", len(batch))
        self._pending += [equipment_event(e) for e in batch]

    # -- time --------------------------------------------------------------------------------

    def tick(self, now: float | None = None) -> Output:
        """What time decides: the session's heartbeat, intact-rate alarms, warranties, the
        KPIs of days that closed; with the equipment events of entries written since."""
        store = self._store_open()
        now = self.clock() if now is None else now
        out: Output = []
        try:
            self._flush(now)
            if self._seen_at is None or not 0 <= now - self._seen_at < SEEN_EVERY:
                store.seen(now)
                self._seen_at = now
            out += self.intact.step(self.live_states(), now, self._changed)
            day = self.calendar.start(now, "day")
            if self._warranty_day != day:
                self._warranty_day = day
                self._warranty(now)
            out += self._closed_days(now)
            out += self.status_points.take(now)
        except Exception as exc:  # a bug or a full disk costs this tick, never the timer
            self._failed("tick", exc)
        pending, self._pending = self._pending, []
        if pending:
            try:
                store.set_meta({SENT: str(pending[-1].body["entry"])})
            except sqlite3.Error as exc:  # sent again after a restart: the entry number tells
                self._failed("tick", exc)
        return [*pending, *out]

    def _warranty(self, now: float) -> None:
        entries = warranty_notices(self.config, self.calendar, now, self._warranties)
        for e in entries:
            self._warranties.add((e.device, e.kind, e.ref or ""))
            log.warning("warranty ended" if e.kind == WARRANTY_ENDED else "warranty ends soon",
                        device=e.device, warranty_end=e.ref, days_left=e.body.get("days_left"))
        if entries:
            self._save(entries, now)

    def _closed_days(self, now: float) -> Output:
        """The KPIs of each day (and month) that ended since the last ones sent."""
        store = self._store_open()
        due = float(store.meta(KPI_DONE) or self.calendar.start(now, "day"))
        today = self.calendar.start(now, "day")
        if due >= today:
            return []
        oldest = today
        for _ in range(CATCH_UP_DAYS):
            oldest = self.calendar.start(oldest - 1, "day")
        if due < oldest:
            log.warning("KPIs of days long past are not sent; the monthly report has them",
                        from_day=self.calendar.iso(due), to_day=self.calendar.iso(oldest))
            due = oldest
        store.seen(now)
        self._seen_at = now
        tickets = read_tickets(self.data_dir)
        out: Output = []
        while due < today:
            end = self.calendar.next(due, "day")
            out += self._period("day", self.calendar.local(due).strftime("%Y-%m-%d"), due, end,
                                tickets, now)
            if self.calendar.start(end, "month") == end:  # the month closed with this day
                month = self.calendar.start(due, "month")
                out += self._period("month", self.calendar.month(month), month, end, tickets, now)
            due = end
            store.set_meta({KPI_DONE: repr(due)})
        return out

    def _period(self, period: str, label: str, start: float, end: float, tickets: list,
                now: float) -> Output:
        store = self._store_open()
        lines = timelines(store, self.subjects, start, end, self.severities)
        kpis = site_kpis(self.subjects, self.groups, lines, start, end, self.config.kpi.worst_devices)
        service = service_kpis(tickets, start, end, now)
        self._count(f"kpi_{period}s")
        log.info("equipment KPIs", period=period, label=label,
                 availability=kpis.site.availability, failures=len(kpis.site.failures),
                 tickets=len(service.corrective))
        return [kpi_event(period, label, self.config.site.timezone, kpis, service, self.names),
                *kpi_batches(self.config.site.id, period, kpis, service)]

    # -- views -------------------------------------------------------------------------------

    def live_states(self, devices: Iterable[str] | None = None) -> dict[str, str]:
        """Each enabled device's state now (None), or of those of `devices` that are enabled:
        maintenance, fault, offline, up or unknown."""
        r = self.recorder
        faulted = {device for device, severity, _ in r.active.values() if severity in self.severities}
        states = {}
        for d in self.subjects if devices is None else (d for d in dict.fromkeys(devices) if d in self.subjects):
            if d in r.maintenance:
                states[d] = MAINTENANCE
            elif d in faulted:
                states[d] = FAULT
            elif r.online.get(d) is False:
                states[d] = DOWN_OFFLINE
            else:
                states[d] = UP if r.online.get(d) else UNKNOWN
        return states

    def status(self) -> dict[str, Any]:
        """For status.json: counts, the intact rates now, the next KPI day."""
        due = self._store.meta(KPI_DONE) if self._store is not None else None
        return {**self.counts, "unsaved": len(self._unsaved),
                "faults_active": sum(1 for _, s, _ in self.recorder.active.values()
                                     if s in self.severities),
                "in_maintenance": sorted(self.recorder.maintenance),
                "intact": self.intact.live,
                "next_kpi_day": None if due is None else self.calendar.iso(float(due))}

    # -- helpers -----------------------------------------------------------------------------

    def _count(self, name: str, n: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + n

    def _failed(self, what: str, exc: BaseException, **context: Any) -> None:
        self._count("errors")
        now = time.monotonic()
        if self._logged is not None and 0 <= now - self._logged < LOG_EVERY:
            return
        self._logged = now
        log.error("equipment ledger failed", call=what, error=f"{type(exc).__name__}: {exc}",
                  errors=self.counts["errors"], exc_info=exc, **context)

    def _store_open(self) -> EquipmentStore:
        if self._store is None:
            raise RuntimeError("the equipment stage is not open: call open() first")
        return self._store
