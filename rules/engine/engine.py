"""The rule engine: readings in; derived points, alarms, tickets and plans out.

Every poll passes `process`; a timer calls `tick` for what time alone changes (delays,
stale data, SLA clocks, maintenance plans, a maintenance mode running out); operators'
commands and the views are in `commands.py` and `views.py`. All state that matters
after a restart (alarms, tickets, schedule, counters, maintenance modes) is written at
the end of the call that changed it.

The engine is not thread-safe: the daemon calls it from its event loop only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import structlog

from gateway.batch import Batch, Event, Quality
from gateway.config.models import SiteConfig
from rules.alarms import Alarm, AlarmEvent, AlarmState, EventType, Severity
from rules.compile import CompiledRule, compile_rules
from rules.engine import events
from rules.engine.alarm_set import EXTERNAL_ALARM, AlarmSet, ExternalAlarm, SlaWatch
from rules.engine.call import Call
from rules.engine.commands import Commands
from rules.engine.derived import Counter
from rules.engine.evaluator import FAILED, Evaluator
from rules.engine.flood import FloodWatch
from rules.engine.index import Agenda, RuleIndex
from rules.engine.maintenance import MaintenanceModes
from rules.engine.plans import schedule_entry, sla_policy, usage_counters
from rules.engine.state_store import COUNTER, DEBOUNCER, MAINTENANCE, SLA_ALARM
from rules.engine.stores import EngineStores
from rules.engine.tickets import ticket_request
from rules.engine.views import Views
from rules.expression import History
from rules.tickets import Schedule, TicketBook, TicketEvent
from rules.tickets.model import FINAL

log = structlog.get_logger(__name__)

COUNTERS_EVERY = 60.0  # seconds of ticks between two saves of the counters

Output = list[Batch | Event]


class RuleEngine(Commands, Views):
    """The site's rules, compiled once, with their alarms, tickets and plans."""

    def __init__(self, config: SiteConfig, data_dir: Path, *,
                 clock: Callable[[], float] = time.time) -> None:
        site = compile_rules(config)
        if site.issues:
            raise ValueError("the rules do not compile (was the configuration validated?):\n"
                             + "\n".join(f"  {issue}" for issue in site.issues))
        for why in site.replaced:  # a written rule took a generated rule's id
            log.info("generated rule not run", why=why)
        self.config = config
        self.data_dir = Path(data_dir)
        self.clock = clock
        self.index = RuleIndex(site.rules)
        self.history = History(needed_only=True)
        for rule in site.rules:  # what rules read, name in messages, and plans count
            self.history.need(rule.windows)
            self.history.need({f"{rule.device}.{p}": 0.0 for p in rule.template_points})
        self.history.need({f"{p.device}.{p.task.counter}": 0.0 for p in site.plans
                           if p.task.counter is not None})
        self.evaluator = Evaluator(self.history)
        self.alarm_set = AlarmSet(site.rules)
        self.counters = {r.id: Counter(r.rule.accumulate) for r in site.rules
                         if r.derive is not None and r.rule.accumulate is not None}
        self.derived = site.derived_points()
        self.book = TicketBook(sla_policy(config.sla))
        self.schedule = Schedule(schedule_entry(p, config.site.timezone) for p in site.plans)
        self.maintenance = MaintenanceModes()
        self.flood = FloodWatch(config.rules.flood_window, config.rules.flood_threshold)
        self.device_names = {d.id: d.name or d.id for d in config.devices}
        self._stores: EngineStores | None = None
        self._backlog: Output = []  # what a refused command had already caused
        self._every_last: dict[str, float] = {}  # derived rules with every: → last run
        self._counters_saved: float | None = None

    # -- life cycle ----------------------------------------------------------------------

    def open(self) -> Output:
        """Restore everything saved, then tick: what ran out while down happens now."""
        stores = self._stores = EngineStores(self.data_dir)
        state = stores.state
        saved = stores.alarms.load()
        gone = self.alarm_set.restore(saved, state.load(DEBOUNCER), state.load(SLA_ALARM),
                                      state.load(EXTERNAL_ALARM))
        stores.forget(gone)
        stores.tickets.load_into(self.book, self.schedule)
        stores.loaded_schedule(self.schedule)
        for rule_id, body in state.load(COUNTER).items():
            if rule_id in self.counters:
                self.counters[rule_id] = Counter.restore(self.counters[rule_id].of, body)
        self.maintenance.load(state.load(MAINTENANCE))
        # debouncers of rules that are gone go; counters stay (run hours are precious)
        stores.replace(DEBOUNCER, {i: a.snapshot() for i, a in self.alarm_set.debouncers.items()})
        now = self.clock()
        out = Call(now)
        # an alarm whose rule is gone and that was not closed is still retained upstream
        out.events.extend(events.alarm_removed(alarm_id, now) for alarm_id in gone
                          if _shown(saved[alarm_id]))
        for device in self.alarm_set.devices():  # rules added or saved states out of step
            on = device in self.maintenance
            for alarm in self.alarm_set.of_device(device):
                self._step(out, alarm, lambda a=alarm, o=on: a.suppress(now, o))
        return self._finish(out) + self.tick(now)

    def close(self) -> None:
        """Save counters and anything pending; close the stores."""
        if self._stores is None:
            return
        self._stores.rows(COUNTER, {i: c.snapshot() for i, c in self.counters.items()})
        self._stores.flush(self.book, self.schedule)
        self._stores.close()
        self._stores = None

    # -- the hot path ----------------------------------------------------------------------

    def process(self, batch: Batch) -> Output:
        """One poll: the rules reading its points (and the derived points they feed)."""
        self._stores_open()
        out = Call(batch.ts)
        self.history.record_batch(batch)
        self._run(out, self.index.batch_agenda(batch.device, batch.points))
        self._check_flood(out)
        return self._finish(out)

    def tick(self, now: float | None = None) -> Output:
        """Timers: rules over time, alarm delays and shelves, maintenance modes, SLA clocks,
        maintenance plans."""
        self._stores_open()
        now = self.clock() if now is None else now
        out = Call(now)
        for device in self.maintenance.expired(now):
            self._leave_maintenance(out, device, expired=True)
        agenda = self.index.agenda(())
        for rule in self.index.timed:
            if rule.derive is None or self._every_due(rule, now):
                agenda.queue(rule)
        self._run(out, agenda)
        for alarm in list(self.alarm_set.every()):
            self._step(out, alarm, lambda a=alarm: a.tick(now))
        self._ticket_events(out, self.book.tick(now))
        self._refresh_sla(out)
        self._plans(out)
        self._check_flood(out)
        saved = self._counters_saved
        out.save_counters = saved is None or not 0 <= now - saved < COUNTERS_EVERY
        return self._finish(out)

    def plans_due(self, now: float | None = None) -> list[Event]:
        """Preventive tickets due by the calendar or by usage (tick checks them too)."""
        self._stores_open()
        out = Call(self.clock() if now is None else now)
        self._plans(out)
        return [item for item in self._finish(out) if isinstance(item, Event)]

    def next_plan_due(self) -> float | None:
        """The earliest calendar due, for a timer that fires right then."""
        entries = self.schedule.entries
        dues = [state["next"] for key, state in self.schedule.state.items()
                if key in entries and entries[key].counter is None]
        return min(dues, default=None)

    # -- rules ---------------------------------------------------------------------------

    def _run(self, out: Call, agenda: Agenda) -> None:
        for rule in agenda:
            if rule.derive is not None:
                self._derive(out, rule, agenda)
            else:
                self._judge(out, rule)

    def _derive(self, out: Call, rule: CompiledRule, agenda: Agenda) -> None:
        value = self.evaluator.value(rule, out.now)
        if value is FAILED:
            return
        counter = self.counters.get(rule.id)
        if counter is not None:
            value = counter.observe(out.now, None if value is None else bool(value))
        quality = Quality.GOOD if value is not None else Quality.DECODE_ERROR
        self.history.record(rule.id, out.now, value, quality)
        out.derived.add(rule.device, rule.rule.id, out.now, value)
        agenda.add(rule.id)

    def _judge(self, out: Call, rule: CompiledRule) -> None:
        truth = self.evaluator.truth(rule, out.now)
        if truth is FAILED:
            return
        alarm = self.alarm_set.for_rule(rule.id)
        assert alarm is not None
        values = self.evaluator.template_values(rule) if rule.template_points else None
        # `_step` inlined: most evaluations of most rules change nothing
        before = (alarm.last_change, alarm.pending)
        happened = alarm.update(out.now, truth, values)
        if happened or (alarm.last_change, alarm.pending) != before:
            self._stepped(out, alarm, before, happened)

    def _every_due(self, rule: CompiledRule, now: float) -> bool:
        """A derived point is a reading: on the timer only at its `every:` pace."""
        every = rule.rule.every
        if every is None:
            return False
        last = self._every_last.get(rule.id)
        if last is not None and 0 <= now - last < every:
            return False
        self._every_last[rule.id] = now
        return True

    # -- alarms --------------------------------------------------------------------------

    def _step(self, out: Call, alarm: Alarm, step: Callable[[], list[AlarmEvent]]) -> None:
        """Run one alarm operation; note the alarm if it changed, act on its events."""
        before = (alarm.last_change, alarm.pending)
        self._stepped(out, alarm, before, step())

    def _stepped(self, out: Call, alarm: Alarm, before: tuple[Any, ...],
                 happened: list[AlarmEvent]) -> None:
        hidden = self.alarm_set.hidden(alarm)
        # an event changes what must be saved even within the second `last_change` moved in
        # (an ack the same second as the raise)
        if happened or (alarm.last_change, alarm.pending) != before:
            out.changed(alarm, hidden=hidden)
        for event in happened:
            if not hidden:
                out.events.append(events.alarm_event(event, self.alarm_set.names[alarm.id]))
            if event.type is EventType.RAISED:
                self._raised(out, alarm, event, hidden)

    def _raised(self, out: Call, alarm: Alarm, event: AlarmEvent, hidden: bool) -> None:
        # A reading stamped in the past (a night's minimum flow, a day's rollup: stamped at
        # their period's start) raises at its stamp, but people learn of it now: the flood
        # counts it now, and the ticket's SLA clocks start now (else born breached).
        known = max(event.ts, self.clock())
        if not hidden:
            self.flood.raised(known)
        rule = self.alarm_set.rules.get(alarm.id)
        if rule is not None and rule.rule.ticket is not None:
            request = ticket_request(rule, self.device_names.get(rule.device, rule.device),
                                     with_alarm=not hidden)
            self._ticket_events(out, self.book.open(request, known)[1])

    def _check_flood(self, out: Call) -> None:
        # never at a past stamp: an hour's rollup would end a flood still going on
        event = self.flood.check(max(out.now, self.clock()))
        if event is not None:
            out.events.append(event)

    def _leave_maintenance(self, out: Call, device: str, *, by: str | None = None,
                           reason: str | None = None, expired: bool = False) -> None:
        self.maintenance.leave(device)
        out.maintenance = True
        out.events.append(events.maintenance(device, False, None, out.now, by=by,
                                             reason=reason, expired=expired))
        for alarm in list(self.alarm_set.of_device(device)):
            self._step(out, alarm, lambda a=alarm: a.suppress(out.now, False))

    # -- tickets -------------------------------------------------------------------------

    def _ticket_events(self, out: Call, happened: Iterable[TicketEvent]) -> None:
        for event in happened:
            out.events.append(events.ticket_event(event))
            if event.type == "sla_breached":
                ticket = self.book.get(event.ticket)
                watch = SlaWatch(ticket.device, ticket.fault, ticket.id, event.body["clock"])
                alarm = self.alarm_set.sla_alarm(watch)
                out.sla = True
                self._step(out, alarm, lambda a=alarm, ts=event.ts: a.update(ts, True))

    def _refresh_sla(self, out: Call) -> None:
        """SLA alarms return once the late work is done (or the ticket cancelled)."""
        for watch in list(self.alarm_set.sla.values()):
            alarm = self.alarm_set.alarms[watch.alarm_id]
            held = watch.holds(self.book)
            self._step(out, alarm, lambda a=alarm, h=held: a.update(out.now, h))

    def _plans(self, out: Call) -> None:
        usage = usage_counters(self.schedule, self.evaluator.latest_good, self.counters)
        for request in self.schedule.due(out.now, usage, self.book.active_keys()):
            self._ticket_events(out, self.book.open(request, out.now)[1])
        # only `due` moves the schedule: comparing it at the end of every batch was not free
        self._stores_open().schedule(self.schedule)


    # -- alarms other stages decide -----------------------------------------------------------
    #
    # A stage that judges something the rules cannot see (a patrol round, an intact rate)
    # raises its alarm here, so it lives the same life as a rule's: raised, acknowledged,
    # shelved, retained upstream, saved across restarts. Its id is the caller's and must
    # not be a rule's; maintenance mode does not suppress it (it is about the service, not
    # the device). The caller decides when the condition ends (`clear_external`); the
    # operator's ack then closes it, as for any alarm.

    def raise_external(self, alarm_id: str, device: str, severity: str, message: str, *,
                       owner: str, name: str | None = None, context: dict[str, Any] | None = None,
                       now: float | None = None) -> list[Event]:
        """Raise the alarm (or keep it raised with this message, severity and context).

        `owner` names the calling stage; `name` is what people call the alarm (default
        the message); `context` is the owner's JSON-ready data, returned by
        `external_alarms`. ValueError when `alarm_id` is a rule's alarm or another owner's.
        """
        spec = ExternalAlarm(alarm_id, device, str(Severity(severity)), message, owner,
                             name or message, dict(context or {}))
        with self._command(now) as out:
            alarm = self.alarm_set.external_alarm(spec)
            self._stores_open().replace(EXTERNAL_ALARM, self.alarm_set.external_snapshot())
            self._step(out, alarm, lambda: alarm.update(out.now, True))
            if alarm.message != message:  # raised before: the newest raise says why
                alarm.message = message
                out.changed(alarm, hidden=False)
            self._check_flood(out)
        return self._events(out)

    def clear_external(self, alarm_id: str, *, now: float | None = None) -> list[Event]:
        """The condition of an external alarm is over: active → returned (or cleared when
        acknowledged). An unknown or already clear alarm is left alone."""
        alarm = self.alarm_set.alarms.get(alarm_id)
        if alarm_id not in self.alarm_set.external or alarm is None:
            return []
        with self._command(now) as out:
            self._step(out, alarm, lambda: alarm.update(out.now, False))
        return self._events(out)

    def forget_external(self, alarm_id: str, *, now: float | None = None) -> list[Event]:
        """Remove an external alarm its owner no longer has (a plan taken out of the
        configuration); one still shown upstream has its retained state cleared."""
        alarm = self.alarm_set.alarms.get(alarm_id)
        if alarm_id not in self.alarm_set.external or alarm is None:
            return []
        with self._command(now) as out:
            if alarm.state is not AlarmState.NORMAL:
                out.events.append(events.alarm_removed(alarm_id, out.now))
            self.alarm_set.drop_external(alarm_id)
            stores = self._stores_open()
            stores.forget([alarm_id])
            stores.replace(EXTERNAL_ALARM, self.alarm_set.external_snapshot())
        return self._events(out)

    def external_alarms(self, owner: str) -> dict[str, dict[str, Any]]:
        """The external alarms of `owner` by id: device, state, whether the condition
        holds (`active`), when raised, and the owner's `context`."""
        out: dict[str, dict[str, Any]] = {}
        for alarm_id, spec in self.alarm_set.external.items():
            alarm = self.alarm_set.alarms.get(alarm_id)
            if spec.owner != owner or alarm is None:
                continue
            out[alarm_id] = {"device": spec.device, "state": str(alarm.state),
                             "active": alarm.condition, "raised_at": alarm.raised_at,
                             "severity": spec.severity, "message": alarm.message,
                             "context": dict(spec.context)}
        return out

    # -- the end of every call -------------------------------------------------------------

    def _finish(self, out: Call) -> Output:
        """Outputs in order (derived points, events, then the states they left), then save."""
        stores = self._stores_open()
        tickets = self.book.changed()
        if not (tickets or out.events or out.derived or out.alarms or out.debouncers
                or self._backlog or out.sla or out.maintenance or out.save_counters
                or self.alarm_set.sla):  # most polls change nothing
            stores.flush(self.book, self.schedule)  # what failed to save is retried
            return []
        items: Output = [*self._backlog, *out.derived.batches(), *out.events]
        self._backlog = []
        for alarm in out.alarms.values():
            items.append(events.alarm_state(alarm, self.alarm_set.names[alarm.id], out.now))
            stores.alarm(alarm)
        for alarm in out.debouncers.values():
            stores.alarm(alarm, hidden=True)
        items.extend(events.ticket_state(t, out.now) for t in tickets)
        stores.tickets_changed(tickets)
        done = [i for i, w in self.alarm_set.sla.items() if self._sla_done(i, w)]
        for alarm_id in done:
            self.alarm_set.drop_sla(alarm_id)
        stores.forget(done)
        if out.sla or done:
            stores.replace(SLA_ALARM, self.alarm_set.sla_snapshot())
        if out.maintenance:
            stores.replace(MAINTENANCE, self.maintenance.snapshot())
        if out.save_counters:
            stores.rows(COUNTER, {i: c.snapshot() for i, c in self.counters.items()})
            self._counters_saved = out.now
        stores.flush(self.book, self.schedule)
        self.book.forget(t.id for t in tickets if t.status in FINAL)
        return items

    def _sla_done(self, alarm_id: str, watch: SlaWatch) -> bool:
        alarm = self.alarm_set.alarms[alarm_id]
        return alarm.state is AlarmState.NORMAL and not watch.holds(self.book)

    def _stores_open(self) -> EngineStores:
        if self._stores is None:
            raise RuntimeError("the rule engine is not open: call open() first")
        return self._stores


def _shown(snapshot: dict) -> bool:
    """Whether a saved alarm was not normal, so its state is retained upstream."""
    return (snapshot.get("base") != str(AlarmState.NORMAL) or not snapshot.get("in_service", True)
            or snapshot.get("shelved_until") is not None or bool(snapshot.get("suppressed")))
