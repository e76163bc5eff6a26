"""The engine's timers: a tick on the event loop, and APScheduler 3's asyncio scheduler for
the calendar.

`tick` runs every `rules.tick` seconds (delays, stale data, SLA clocks, maintenance modes
running out) from an asyncio loop, which sleeps on the monotonic clock: a wall clock set
back an hour must not stop the timers for an hour (APScheduler's interval jobs are timed
by the wall clock). One APScheduler date job fires at the next calendar maintenance due,
which checks the plans and sets itself again for the due after. The due is the schedule's
state in tickets.db, so after a restart the date job is made again from it; a job that
runs late (a busy loop, a suspended machine) still runs, once.

Both jobs are coroutines so they run on the event loop, the only thread that touches
the engine (a plain function would run in APScheduler's thread pool). A failure is
logged and the next run comes as planned.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from gateway.batch import Batch, Event
from rules.engine.engine import RuleEngine

log = structlog.get_logger(__name__)

TICK_JOB = "rules_tick"
PLANS_JOB = "rules_plans"


class RuleRunner:
    """Runs an open engine's timers and hands every output to `emit`."""

    def __init__(self, engine: RuleEngine, emit: Callable[[Batch | Event], None],
                 tick: float) -> None:
        self.engine = engine
        self.emit = emit
        self.tick = tick
        self._scheduler: AsyncIOScheduler | None = None
        self._ticking: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the jobs; call from the running event loop."""
        scheduler = self._scheduler = AsyncIOScheduler(timezone=UTC)
        scheduler.start()
        self._plan_next()
        self._ticking = asyncio.create_task(self._tick_forever(), name=TICK_JOB)

    async def stop(self) -> None:
        if self._ticking is not None:
            self._ticking.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticking
            self._ticking = None
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None

    async def _tick_forever(self) -> None:
        """Every `tick` seconds of monotonic time, late ticks coalesced into one."""
        loop = asyncio.get_running_loop()
        due = loop.time() + self.tick
        while True:
            await asyncio.sleep(max(0.0, due - loop.time()))
            self._run("tick", self.engine.tick)
            due += self.tick
            if due <= loop.time():  # fell behind (a busy loop): one tick now was enough
                due = loop.time() + self.tick

    async def _plans(self) -> None:
        self._run("plans", self.engine.plans_due)
        self._plan_next()

    def _run(self, what: str, job: Callable[[], list]) -> None:
        try:
            outputs = job()
        except Exception:  # a bug must not stop the timers
            log.exception("rule engine job failed", job=what)
            return
        for item in outputs:
            try:
                self.emit(item)
            except Exception:
                log.exception("rule output not emitted", job=what, type=type(item).__name__)

    def _plan_next(self) -> None:
        """(Re)make the date job at the next calendar due, if there is one."""
        scheduler = self._scheduler
        if scheduler is None:
            return
        try:
            due = self.engine.next_plan_due()
        except Exception:
            log.exception("next maintenance due unknown", job=PLANS_JOB)
            due = None
        if due is None:
            if scheduler.get_job(PLANS_JOB) is not None:
                scheduler.remove_job(PLANS_JOB)
            return
        # never in the past: a due that is already here runs at once (and late still runs)
        when = datetime.fromtimestamp(max(due, self.engine.clock()), UTC)
        scheduler.add_job(self._plans, "date", run_date=when, id=PLANS_JOB,
                          replace_existing=True, coalesce=True, misfire_grace_time=None)
        log.debug("next maintenance plan check", at=when.isoformat())
