"""The patrol stage: visits out of checkpoint devices' readings; rounds judged at their end.

It has the shape of the energy stage: `open` restores and judges the rounds that ended
while the gateway was down, `process` takes every poll (a batch of a device that is no
checkpoint costs one dict lookup), `tick` judges each round as its window ends, `close`
saves. A missed checkpoint raises `patrol.<plan>.<checkpoint>` through the rule engine
(`alarms`, a `RuleEngine`), so the monitoring centre acknowledges and shelves it like any
alarm; a later visit to the checkpoint clears it (docs/patrols.md).

Not thread-safe: the daemon calls it from its event loop only.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import structlog

from gateway.batch import Batch, Event
from gateway.config.models import SiteConfig
from gateway.config.patrol_models import PatrolPlan
from gateway.patrol import events
from gateway.patrol.judge import CountedVisit, RoundResult, judge
from gateway.patrol.plan import PlanSchedule, Round
from gateway.patrol.store import FILE, INPUT, PLAN, PatrolStore
from gateway.patrol.visits import Visit, VisitReader

log = structlog.get_logger(__name__)

Output = list[Batch | Event]
PRUNE_EVERY = 86400.0
LOG_EVERY = 60.0  # seconds between two log lines about patrol.db refusing a write
LOG_ROUNDS = 7  # more rounds judged at once (after a downtime) are logged as one line


class ExternalAlarms(Protocol):
    """What the stage needs of the rule engine (rules/engine/engine.py)."""

    def raise_external(self, alarm_id: str, device: str, severity: str, message: str, *,
                       owner: str, name: str | None = None, context: dict[str, Any] | None = None,
                       now: float | None = None) -> list[Event]: ...

    def clear_external(self, alarm_id: str, *, now: float | None = None) -> list[Event]: ...

    def forget_external(self, alarm_id: str, *, now: float | None = None) -> list[Event]: ...

    def external_alarms(self, owner: str) -> dict[str, dict[str, Any]]: ...


class PatrolStage:
    """The site's checkpoints and patrol plans, their visits and rounds."""

    def __init__(self, config: SiteConfig, data_dir: Path, *, clock: Callable[[], float] = time.time,
                 alarms: ExternalAlarms | None = None) -> None:
        patrols = config.patrols
        self.config = config
        self.data_dir = Path(data_dir)
        self.clock = clock
        self.alarms = alarms
        self.zone = ZoneInfo(config.site.timezone)
        self.checkpoints = {c.id: c for c in patrols.checkpoints}
        self.plans = {p.id: p for p in patrols.plans}
        self.schedules = {p.id: PlanSchedule(p, config.site.timezone) for p in patrols.plans}
        self.reader = VisitReader(patrols.checkpoints)
        self.guard_of = {card: g.id for g in patrols.guards for card in g.cards}
        self.allowed: dict[str, set[str] | None] = {
            p.id: ({card for g in patrols.guards if g.id in p.guards for card in g.cards}
                   if p.guards else None)
            for p in patrols.plans}
        self.plans_of: dict[str, list[PatrolPlan]] = {}
        for plan in patrols.plans:
            for checkpoint in plan.checkpoints:
                self.plans_of.setdefault(checkpoint, []).append(plan)
        self._store: PatrolStore | None = None
        self._state: dict[str, dict[str, float]] = {}  # plan → since, judged_upto
        self._pending: list[Visit] = []  # visits a failed write left in memory
        self._next_end: float | None = None
        self._pruned: float | None = None
        self._logged: float | None = None
        self.counts: dict[str, int] = {}

    # -- life cycle ----------------------------------------------------------------------

    def open(self) -> Output:
        """Restore; forget the alarms of plans and checkpoints no longer configured; judge
        the rounds that ended while the gateway was down."""
        store = self._store = PatrolStore(self.data_dir / FILE)
        self.reader.inputs.update({k: bool(v) for k, v in store.states(INPUT).items()})
        saved = store.states(PLAN)
        now = self.clock()
        for plan_id in self.plans:
            state = saved.get(plan_id) or {"since": now, "judged_upto": now}
            self._state[plan_id] = {"since": float(state["since"]),
                                    "judged_upto": float(state["judged_upto"])}
        store.save_states(PLAN, {p: s for p, s in self._state.items() if p not in saved})
        out: Output = []
        if self.alarms is not None:
            wanted = {events.alarm_id(p.id, c) for p in self.plans.values() for c in p.checkpoints}
            for alarm_id in self.alarms.external_alarms(events.OWNER):
                if alarm_id not in wanted:
                    out += self.alarms.forget_external(alarm_id, now=now)
        log.info("patrol stage open", plans=len(self.plans), checkpoints=len(self.checkpoints))
        return out + self.tick(now)

    def close(self) -> None:
        if self._store is None:
            return
        self._flush()
        self._store.close()
        self._store = None

    # -- the hot path ----------------------------------------------------------------------

    def process(self, batch: Batch) -> Output:
        """One poll: a checkpoint device's batch may hold visits; any other passes."""
        if batch.device not in self.reader.by_device:
            return []
        visits = self.reader.read(batch)
        if not visits and not self.reader.changed_inputs:
            return []
        self._pending += visits
        new = self._flush() or []
        out: Output = []
        for visit in new:
            out += self._visited(visit)
        return out

    def tick(self, now: float | None = None) -> Output:
        """Judge every round that has ended; prune old records once a day."""
        self._store_open()
        now = self.clock() if now is None else now
        self._prune(now)
        if self._next_end is not None and now < self._next_end:
            return []
        if self._pending and self._flush() is None:
            return []  # a visit not yet stored would be judged missing: wait for the disk
        out = self._judge(now)
        if out is None:
            self._next_end = None  # patrol.db refused: try again at the next tick
            return []
        ends = [s.next_end(now) for s in self.schedules.values()]
        self._next_end = min(ends) if ends else float("inf")
        return out

    # -- rounds ----------------------------------------------------------------------------

    def _judge(self, now: float) -> Output | None:
        """Judge the rounds that ended by `now` (after a downtime, many at once, written in
        one transaction); None when patrol.db refused the write.

        Alarms are raised before the rounds are written: a crash in between judges the
        rounds again at the next start, and raising a raised alarm changes nothing. A
        checkpoint missed in several of these rounds raises its alarm once, at the first,
        then takes the newest round's message."""
        judged: list[tuple[PatrolPlan, RoundResult]] = []
        states: dict[str, dict[str, float]] = {}
        for plan_id, plan in self.plans.items():
            state = self._state[plan_id]
            for round_ in self.schedules[plan_id].ending(state["judged_upto"], now):
                if round_.start >= state["since"]:  # else begun before the plan ran here
                    judged.append((plan, self._result(plan, round_)))
                states[plan_id] = {**state, "judged_upto": round_.end}
        if not states:
            return []
        misses: dict[tuple[str, str], list[RoundResult]] = {}
        for plan, result in judged:
            for checkpoint in result.missed:
                misses.setdefault((plan.id, checkpoint), []).append(result)
        out: Output = []
        for (plan_id, checkpoint), results in misses.items():
            for result in {id(r): r for r in (results[0], results[-1])}.values():
                out += self._raise(self.plans[plan_id], checkpoint, result)
        try:
            self._store_open().save_rounds([r for _, r in judged], now, plan_states=states)
        except sqlite3.Error as exc:
            self._store_failed(exc)
            return None
        for plan_id, state in states.items():
            self._state[plan_id].update(state)
        for plan, result in judged:
            self._judged(plan, result, quiet=len(judged) > LOG_ROUNDS)
            out += self._outputs(plan, result)
        if len(judged) > LOG_ROUNDS:
            log.warning("patrol rounds judged at once (the gateway was down)", rounds=len(judged),
                        missed=sum(not r.done for _, r in judged),
                        checkpoints_missed=sum(len(r.missed) for _, r in judged))
        return out

    def _judged(self, plan: PatrolPlan, result: RoundResult, *, quiet: bool) -> None:
        self._count("rounds_judged")
        if not result.missed:
            return
        self._count("rounds_missed")
        self._count("checkpoints_missed", len(result.missed))
        if not quiet:
            r = result.round
            log.warning("patrol round missed checkpoints", plan=plan.id, window=r.window,
                        round=r.number, missed=list(result.missed))

    def _result(self, plan: PatrolPlan, round_: Round) -> RoundResult:
        allowed = self.allowed[plan.id]
        counted = [CountedVisit(c, ts, self.guard_of.get(card) if card else None)
                   for c, ts, card in self._store_open().visits(plan.checkpoints, round_.start, round_.end)
                   if allowed is None or card in allowed]
        return judge(round_, plan.checkpoints, counted, listed=plan.order == "listed")

    def _outputs(self, plan: PatrolPlan, result: RoundResult, *, amended: bool = False) -> Output:
        end = result.round.end
        rate = self._store_open().rate(plan.id, end - events.COMPLIANCE_DAYS * 86400.0, end)
        return [events.round_event(result, plan.name, amended=amended), events.kpi_batch(result, rate)]

    def _raise(self, plan: PatrolPlan, checkpoint: str, result: RoundResult) -> list[Event]:
        if self.alarms is None:
            return []
        spot = self.checkpoints[checkpoint]
        name = spot.name or checkpoint
        r = result.round
        try:
            return self.alarms.raise_external(
                events.alarm_id(plan.id, checkpoint), spot.device,
                plan.severity or self.config.patrols.severity,
                events.missed_message(result, checkpoint, name, plan.name or plan.id, self.zone),
                owner=events.OWNER, name=f"巡更漏检 {name}",
                context={"plan": plan.id, "checkpoint": checkpoint, "round_start": r.start,
                         "round_end": r.end}, now=r.end)
        except Exception as exc:  # the round is still judged and reported
            self._count("alarm_errors")
            log.exception("patrol alarm not raised", plan=plan.id, checkpoint=checkpoint,
                          device=spot.device, error=repr(exc))
            return []

    # -- visits ----------------------------------------------------------------------------

    def _visited(self, visit: Visit) -> Output:
        """A new visit: clear the alarms it answers, amend a judged round it belongs to."""
        self._count("visits")
        log.info("patrol checkpoint visited", checkpoint=visit.checkpoint, device=visit.device,
                 card=_masked(visit.card))
        out: Output = []
        alarms = self.alarms.external_alarms(events.OWNER) if self.alarms is not None else {}
        for plan in self.plans_of.get(visit.checkpoint, []):
            allowed = self.allowed[plan.id]
            if allowed is not None and visit.card not in allowed:
                self._count("visits_refused")
                log.warning("patrol visit by a card not on the plan", plan=plan.id,
                            checkpoint=visit.checkpoint, device=visit.device, card=_masked(visit.card))
                continue
            out += self._amend(plan, visit)
            alarm = alarms.get(events.alarm_id(plan.id, visit.checkpoint))
            if self.alarms is not None and alarm is not None and alarm["active"]:
                since = float(alarm["context"].get("round_start", 0.0))
                if visit.ts >= since:
                    at = max(visit.ts, float(alarm["context"].get("round_end", visit.ts)))
                    out += self.alarms.clear_external(events.alarm_id(plan.id, visit.checkpoint), now=at)
        return out

    def _amend(self, plan: PatrolPlan, visit: Visit) -> Output:
        """A visit stamped inside a round already judged (a reader that uploads what it
        stored while offline): judge the round again, say so if it changed."""
        state = self._state[plan.id]
        round_ = self.schedules[plan.id].at(visit.ts)
        if round_ is None or round_.end > state["judged_upto"] or round_.start < state["since"]:
            return []
        store = self._store_open()
        missed = store.round_missed(plan.id, round_.start)
        if not missed or visit.checkpoint not in missed:
            return []
        result = self._result(plan, round_)
        if list(result.missed) == missed:
            return []
        try:
            store.save_rounds([result], self.clock(), amended=True)
        except sqlite3.Error as exc:
            self._store_failed(exc)
            return []
        self._count("rounds_amended")
        log.info("patrol round amended by a late visit", plan=plan.id, window=round_.window,
                 round=round_.number, checkpoint=visit.checkpoint)
        return self._outputs(plan, result, amended=True)

    # -- the store -------------------------------------------------------------------------

    def _flush(self) -> list[Visit] | None:
        """Store pending visits and changed inputs; the visits that were new, or None when
        patrol.db refused (they stay pending)."""
        inputs = self.reader.take_changed()
        if not self._pending and not inputs:
            return []
        try:
            new = self._store_open().add_visits(self._pending, inputs)
        except sqlite3.Error as exc:
            self.reader.changed_inputs = {**inputs, **self.reader.changed_inputs}
            self._store_failed(exc)
            return None
        if len(new) < len(self._pending):  # delivered twice (a retained or resent message)
            self._count("duplicate_visits", len(self._pending) - len(new))
        self._pending = []
        return new

    def _prune(self, now: float) -> None:
        if self._pruned is not None and 0 <= now - self._pruned < PRUNE_EVERY:
            return
        self._pruned = now
        try:
            gone = self._store_open().prune(now - self.config.patrols.keep_days * 86400.0)
        except sqlite3.Error as exc:
            self._store_failed(exc)
            return
        if gone:
            log.info("old patrol records removed", rows=gone, keep_days=self.config.patrols.keep_days)

    def _store_failed(self, exc: sqlite3.Error) -> None:
        self._count("store_errors")
        now = time.monotonic()
        if self._logged is None or not 0 <= now - self._logged < LOG_EVERY:
            self._logged = now
            log.error("patrol.db not written; will retry", error=str(exc),
                      pending_visits=len(self._pending), failures=self.counts["store_errors"])

    def _store_open(self) -> PatrolStore:
        if self._store is None:
            raise RuntimeError("the patrol stage is not open: call open() first")
        return self._store

    def _count(self, name: str, n: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + n

    # -- views -----------------------------------------------------------------------------

    def compliance(self, start: float, end: float) -> list[dict[str, Any]]:
        """Per plan, compliance of the judged rounds that started in [start, end)
        (`gateway.patrol.store.read_compliance` has the keys)."""
        return self._store_open().compliance(start, end)

    def stats(self) -> dict[str, Any]:
        """Counts since start, for status.json."""
        return {"plans": len(self.plans), "checkpoints": len(self.checkpoints),
                "next_round_end": self._next_end if self._next_end != float("inf") else None,
                "pending_visits": len(self._pending), **self.counts}


def _masked(card: str | None) -> str | None:
    """A card number as logs show it: its last four characters."""
    if card is None:
        return None
    return "…" + card[-4:] if len(card) > 4 else card
